"""The Database Editor (``tidzam_ctl dataset edit``) on real recordings (Debian packages).

The logic is tested directly (spectrogram text, dataset edits with undo, sample
folder moves, stream windows, players); the apps are driven headless with
Textual's pilot, and what they leave on disk is read back without the editor:
the ``.npz`` arrays, the WAV files, ``learning.datasets.operations.sample_items``.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import wave
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import DataTable

from audio.decode import decode_file
from inference.features import FeatureParams, window_features
from learning.datasets.compile import CompiledDataset, rms_db
from learning.datasets.operations import (
    AudioItem,
    ClassNameError,
    add_audio,
    add_class,
    create,
    load,
    parse_sample_name,
    sample_items,
    save,
)
from tests.audio_files import expected_windows, write_pcm
from tests.real_audio import CACHE, MEGAGLEST, real_file
from tidzam_ctl.commands import dataset as dataset_commands
from tidzam_ctl.editor.app import (
    LEVELS,
    PLAYERS,
    BrowserApp,
    ConfirmScreen,
    DatasetBrowser,
    DatasetEdits,
    EditorError,
    ExtractorApp,
    FolderBrowser,
    Player,
    PromptScreen,
    SampleFolder,
    StreamOrigin,
    StreamStepper,
    audio_spectrogram,
    find_player,
    ramp_colour,
    renamed_sample,
    render_spectrogram,
    sample_file_name,
    source_file,
    spectrogram_levels,
    stream_origin,
    window_audio,
)
from tidzam_ctl.errors import CliError
from tidzam_ctl.settings import CtlSettings

TILES = "usr/share/games/megaglest/tilesets/"
RAIN = TILES + "autumn/sounds/rain.ogg"  # 16 s, stereo
OWL = TILES + "autumn/sounds/owl.ogg"  # about 2 s, mono
HOP = 18_000  # the classifier's hop at the default 25 % overlap


def real(path: str) -> Path:
    return real_file(MEGAGLEST, path)


def arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of a dataset file, read without the library."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def window_keys(a: dict[str, np.ndarray]) -> list[tuple[str, int, float, float]]:
    """What names a window whatever its row: file, channel, offset, gain."""
    return [(str(a["files"][f]), int(c), round(float(o), 4), round(float(g), 3))
            for f, c, o, g in zip(a["file_index"], a["channel"], a["offset_s"], a["gain_db"],
                                  strict=True)]


def by_key(a: dict[str, np.ndarray]) -> dict[tuple[str, int, float, float], int]:
    keys = window_keys(a)
    assert len(set(keys)) == len(keys)
    return {k: i for i, k in enumerate(keys)}


def tree(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``root``."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


async def until(pilot: Pilot[None], done: Callable[[], bool], what: str) -> None:
    """Let the app run until ``done()`` (a worker, a thread); fail after 10 s."""
    for _ in range(500):
        if done():
            return
        await pilot.pause(0.02)
    raise AssertionError(f"timed out waiting for {what}")


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """quiet, rain (one stereo recording) and birds (an owl), windowed by add_audio."""
    ds = add_class(create(), "quiet")
    ds, report = add_audio(ds, [AudioItem(real(RAIN), "rain"), AudioItem(real(OWL), "birds")])
    assert report.files == 2 and not report.skipped
    path = tmp_path_factory.mktemp("built") / "d.npz"
    save(ds, path)
    return path


@pytest.fixture
def dataset(built: Path, tmp_path: Path) -> Path:
    path = tmp_path / "d.npz"
    shutil.copy(built, path)
    return path


def loud_pieces(path: str, n: int) -> list[np.ndarray]:
    """The ``n`` loudest 0.5 s pieces of a recording's first channel, (1, 24000)."""
    audio = decode_file(real(path))[0][0]
    pieces = audio[: audio.shape[0] // 24_000 * 24_000].reshape(-1, 24_000)
    return [pieces[i][None, :] for i in np.argsort(rms_db(pieces))[::-1][:n]]


@pytest.fixture
def samples(tmp_path: Path) -> Path:
    """A sample folder as the extractor and a person left it."""
    root = tmp_path / "samples"
    for sub in ("birds", "unchecked/birds"):
        (root / sub).mkdir(parents=True)
    pieces = iter(loud_pieces(RAIN, 5))
    for name in ("birds/['birds'](mic-1)_2017-06-01T12:00:00.000Z.wav",
                 "unchecked/+['rain'](mic-2)_2017-06-01T13:00:00.000Z.wav",
                 "unchecked/birds/+['insects'](mic-3)_2017-06-01T14:00:00Z.wav",
                 "unchecked/+['birds', 'rain'](mic-4)_2017-06-01T15:00:00Z.wav",
                 "recording.wav"):
        write_pcm(root / name, next(pieces))
    (root / "birds" / "notes.txt").write_text("heard near the pond\n")
    return root


# ---------------------------------------------------------------- spectrogram


def test_spectrogram_text_has_the_asked_size_and_follows_the_energy() -> None:
    low = np.full((45, 64), -20.0, np.float32)
    low[:, :8] = 5.0  # energy in the lowest mel bands only
    high = low[:, ::-1].copy()  # the same, in the highest bands
    text = render_spectrogram(low, width=30, height=12)
    lines = text.plain.split("\n")
    assert len(lines) == 12 and {len(line) for line in lines} == {30}
    assert set(text.plain) == {"▀", "\n"}
    default = render_spectrogram(low).plain.split("\n")
    assert len(default) == 32 and {len(line) for line in default} == {45}  # frames x mels/2

    def colours(t: Text, line: int) -> set[tuple[str | None, str | None]]:
        start = line * 31  # 30 cells and a newline per line
        return {(str(s.style.color.name), str(s.style.bgcolor.name))  # type: ignore[union-attr]
                for s in t.spans if start <= s.start < start + 30}

    peak, floor = ramp_colour(LEVELS - 1).name, ramp_colour(0).name
    assert colours(text, 11) == {(peak, peak)}  # bottom line: low bands, loud
    assert colours(text, 0) == {(floor, floor)}
    flipped = render_spectrogram(high, width=30, height=12)
    assert colours(flipped, 0) == {(peak, peak)} and colours(flipped, 11) == {(floor, floor)}
    levels = spectrogram_levels(low, 30, 24)
    assert levels.shape == (24, 30) and levels[-1].min() == LEVELS - 1 and levels[0].max() == 0
    silent = render_spectrogram(np.full((45, 64), -13.8, np.float32), width=10, height=4)
    assert len(silent.plain.split("\n")) == 4
    assert {(s.style.color.name, s.style.bgcolor.name)  # type: ignore[union-attr]
            for s in silent.spans} == {(floor, floor)}  # digital silence is dark


def test_spectrogram_of_audio_is_the_dataset_feature(built: Path) -> None:
    ds = load(built)
    owl = decode_file(real(OWL))[0][0]
    feats = audio_spectrogram(owl, ds.params)
    windows = -(-owl.shape[0] // ds.params.window_samples)
    assert feats.shape == (windows * ds.params.n_frames, ds.params.n_mels)
    first = window_features(owl[None, : ds.params.window_samples], ds.params)[0]
    np.testing.assert_allclose(feats[: ds.params.n_frames], first, rtol=1e-5, atol=1e-5)
    a = render_spectrogram(ds.windows.features[0], 40, 10)
    b = render_spectrogram(feats[: ds.params.n_frames], 40, 10)
    assert [s.style for s in a.spans] != [s.style for s in b.spans]  # rain is not an owl


# ---------------------------------------------------------------- dataset windows


def test_play_decodes_the_window_that_made_the_features(built: Path) -> None:
    ds = load(built)
    birds = np.flatnonzero(ds.windows.labels == ds.label_names.index("birds"))
    rain = np.flatnonzero((ds.windows.labels == ds.label_names.index("rain"))
                          & (ds.windows.channel == 1))
    for rows in (birds[:4], rain[10:14]):
        for i, r in enumerate(rows):
            audio = window_audio(ds, int(r))
            assert audio.shape == (ds.params.window_samples,) and audio.dtype == np.float32
            feats = window_features(audio[None, :], ds.params)[0]
            right = np.corrcoef(feats.ravel(), ds.windows.features[r].ravel())[0, 1]
            other = ds.windows.features[rows[(i + 2) % len(rows)]]
            wrong = np.corrcoef(feats.ravel(), other.ravel())[0, 1]
            assert right > 0.99 and wrong < 0.97, (r, right, wrong)


def test_a_source_not_on_this_machine_is_said_not_crashed(built: Path) -> None:
    ds = load(built)
    owl = ds.provenance[1]
    packaged = replace(owl, path=OWL, package=MEGAGLEST)
    assert source_file(packaged, [CACHE]) == real(OWL)
    assert source_file(packaged, [CACHE.parent / "elsewhere"]) is None
    gone = replace(ds, provenance=(ds.provenance[0], replace(owl, path="/nowhere/owl.ogg")))
    row = int(np.flatnonzero(ds.file_index == 1)[0])
    with pytest.raises(EditorError, match=r"/nowhere/owl.ogg\) is not on this machine"):
        window_audio(gone, row)
    np.testing.assert_array_equal(
        window_audio(replace(ds, provenance=(ds.provenance[0], packaged)), row, [CACHE]),
        window_audio(ds, row))


# ---------------------------------------------------------------- dataset edits


def test_relabel_delete_undo_save_round_trip(dataset: Path) -> None:
    before = arrays(dataset)
    edits = DatasetEdits.open(dataset)
    rain = edits.rows("rain")
    r1, r2, r3 = (int(r) for r in rain[:3])
    counts = dict(edits.class_counts())
    assert edits.relabel(np.array([r1]), "birds") == "relabel 1 window(s) rain -> birds"
    edits.relabel(np.array([r2]), "birds-owl")  # a new class, hierarchical
    edits.delete(np.array([r3]))
    edits.delete(np.array([r1]))
    assert edits.undo() == "undone: delete 1 window(s) of birds"
    with pytest.raises(ClassNameError):
        edits.relabel(np.array([r1]), "not a name")
    assert dict(edits.class_counts()) == {**counts, "rain": counts["rain"] - 3,
                                          "birds": counts["birds"] + 1, "birds-owl": 1}
    assert r3 not in edits.rows("rain") and edits.rows("birds-owl").tolist() == [r2]
    assert edits.dirty and edits.save().startswith(f"saved {dataset} (3 edit(s)")
    assert not edits.dirty
    with pytest.raises(EditorError, match="nothing to undo"):
        edits.undo()

    after = arrays(dataset)
    assert list(after["label_names"]) == [*before["label_names"], "birds-owl"]
    old, new = by_key(before), by_key(after)
    keys = window_keys(before)
    assert set(old) - set(new) == {keys[r3]} and set(new) <= set(old)
    names_before, names_after = list(before["label_names"]), list(after["label_names"])
    for key, i in new.items():
        j = old[key]
        want = {keys[r1]: "birds", keys[r2]: "birds-owl"}.get(key, names_before[
            before["labels"][j]])
        assert names_after[after["labels"][i]] == want
        assert after["split"][i] == before["split"][j]
        np.testing.assert_array_equal(after["features"][i], before["features"][j])
    assert list(after["files"]) == list(before["files"])
    assert list(after["file_label"]) == list(before["file_label"])  # rain is still mostly rain
    assert after["history"][-1].endswith(
        "edit relabel 1 window(s) rain -> birds; relabel 1 window(s) rain -> birds-owl; "
        "delete 1 window(s) of rain")
    assert list(after["history"][:-1]) == list(before["history"])


def test_relabel_a_whole_file_and_delete_one(dataset: Path) -> None:
    edits = DatasetEdits.open(dataset)
    ds = edits.ds
    owl_row = int(edits.rows("birds")[0])
    whole = edits.file_rows(owl_row)
    assert whole.tolist() == edits.rows("birds").tolist()  # the owl's quiet copies stay quiet
    edits.relabel(whole, "birds-owl")
    edits.save()
    a = arrays(dataset)
    assert list(a["file_label"]) == ["rain", "birds-owl"]
    edits.delete(np.flatnonzero(edits.ds.file_index == 0).astype(np.intp))  # all of rain
    edits.save()
    a = arrays(dataset)
    assert list(a["files"]) == [ds.files[1]] and list(a["file_path"]) == [ds.provenance[1].path]
    assert int(a["labels"].shape[0]) == int(np.count_nonzero(ds.file_index == 1))


# ---------------------------------------------------------------- players


def test_the_player_is_found_or_a_wav_is_written(tmp_path: Path) -> None:
    assert find_player(lambda name: None) is None
    assert find_player(lambda name: f"/usr/bin/{name}" if name != "ffplay" else None) == (
        "aplay", "-q")
    assert find_player(lambda name: f"/usr/bin/{name}") == PLAYERS[0]  # ffplay first
    sound = np.sin(np.arange(24_000, dtype=np.float32) / 10.0) * 0.5
    quiet = Player(None, tmp_path / "sounds")
    said = quiet.play(sound, 48_000)
    path = Path(said.rsplit("wrote ", 1)[1])
    with wave.open(str(path)) as w:
        assert (w.getnframes(), w.getframerate(), w.getnchannels()) == (24_000, 48_000, 1)
        pcm = np.frombuffer(w.readframes(24_000), "<i2")
    np.testing.assert_allclose(pcm / 32767.0, sound, atol=1e-4)
    quiet.close()
    assert path.exists() and path.parent == tmp_path / "sounds"  # kept for the user
    marker = tmp_path / "played.wav"
    copier = Player([sys.executable, "-c",
                     f"import shutil, sys; shutil.copy(sys.argv[-1], {str(marker)!r})"])
    assert copier.play(sound, 48_000, wait=True).startswith("playing with")
    assert marker.read_bytes() == next(copier.folder.glob("*.wav")).read_bytes()
    played = copier.folder
    copier.close()
    assert not played.exists()  # a temporary folder whose sounds were played
    broken = Player(["/nowhere/player"])
    assert broken.play(sound, 48_000).startswith("cannot start /nowhere/player")
    broken.close()


# ---------------------------------------------------------------- sample folders


def test_sample_names_round_trip() -> None:
    at = datetime(2017, 6, 1, 12, 34, 56, 500_000, tzinfo=UTC)
    name = sample_file_name("birds-american_robin", "mic-a", 3, at)
    assert name == "['birds-american_robin'](mic-a-3)_2017-06-01T12:34:56.500Z.wav"
    parsed = parse_sample_name(name)
    assert parsed is not None and parsed.labels == ("birds-american_robin",)
    assert (parsed.source, parsed.channel, parsed.time) == ("mic-a", 3, at)
    assert renamed_sample("+['rain'](roof-2)_2017-06-01T12:10:00Z.wav", "birds") == \
        "['birds'](roof-2)_2017-06-01T12:10:00Z.wav"
    assert renamed_sample("recording.wav", "birds") == "recording.wav"


def test_sample_folder_moves_keep_every_file(samples: Path, tmp_path: Path) -> None:
    start = tree(samples)
    folder = SampleFolder(samples)
    assert {k: len(v) for k, v in folder.groups().items()} == {
        "(no label)": 1, "birds": 1, "unchecked": 3}
    robin = samples / "birds/['birds'](mic-1)_2017-06-01T12:00:00.000Z.wav"
    moved = folder.relabel(robin, "birds-american_robin")
    assert moved == samples / "birds/american_robin" / \
        "['birds-american_robin'](mic-1)_2017-06-01T12:00:00.000Z.wav"
    accepted = folder.accept(samples / "unchecked/+['rain'](mic-2)_2017-06-01T13:00:00.000Z.wav")
    assert accepted == samples / "rain/['rain'](mic-2)_2017-06-01T13:00:00.000Z.wav"
    insects = folder.accept(
        samples / "unchecked/birds/+['insects'](mic-3)_2017-06-01T14:00:00Z.wav")
    assert insects.parent == samples / "birds"  # a person filed it under birds/
    with pytest.raises(EditorError, match="names no single label"):
        folder.accept(samples / "unchecked/+['birds', 'rain'](mic-4)_2017-06-01T15:00:00Z.wav")
    with pytest.raises(EditorError, match="not an unchecked sample"):
        folder.accept(samples / "recording.wav")
    assert folder.delete(samples / "recording.wav") == samples / "deleted/recording.wav"
    again = samples / "unchecked/+['rain'](mic-2)_2017-06-01T13:00:00.000Z.wav"
    again.write_bytes(b"a second sample of the same name")
    with pytest.raises(EditorError, match="already exists: nothing moved"):
        folder.accept(again)
    again.unlink()
    assert sorted(tree(samples).values()) == sorted(start.values())  # nothing lost
    assert "deleted" not in folder.groups()

    items, _ = sample_items(samples)
    labels = {i.path.name: i.label for i in items}
    assert labels[moved.name] == "birds-american_robin" and labels[accepted.name] == "rain"
    out = tmp_path / "from.npz"
    args = _parse("from-samples", str(samples), "--out", str(out))
    assert dataset_commands.dataset(CtlSettings(), args) == 3  # some skipped: deleted, unchecked
    built = arrays(out)
    assert sorted(built["file_label"]) == ["birds", "birds-american_robin", "rain"]
    assert not any("deleted" in p for p in built["file_path"])

    for _ in range(4):
        folder.undo()
    assert tree(samples) == start
    with pytest.raises(EditorError, match="nothing to undo"):
        folder.undo()


# ---------------------------------------------------------------- streams


def test_stream_windows_follow_the_classifier_grid(tmp_path: Path) -> None:
    params = FeatureParams()
    audio = decode_file(real(RAIN), params.sample_rate)[0]
    stepper = StreamStepper(str(real(RAIN)), params, HOP, keep=4)
    got = []
    while (win := stepper.next()) is not None:
        got.append(win)
    stepper.close()
    assert len(got) == expected_windows(audio.shape[1], params.window_samples, HOP)
    for win in (got[0], got[7], got[-1]):
        start = win.index * HOP
        np.testing.assert_allclose(win.audio, audio[:, start:start + params.window_samples],
                                   atol=1e-6)
        assert win.start_s == start / params.sample_rate
        assert win.time == stepper.origin.start + timedelta(seconds=win.start_s)
    backs = [stepper.back() for _ in range(4)]
    assert [w.index if w else None for w in backs] == [got[-2].index, got[-3].index,
                                                        got[-4].index, None]  # 4 kept
    assert stepper.next() is got[-3]
    short = write_pcm(tmp_path / "short.wav", loud_pieces(OWL, 1)[0][:, :9_600])
    one = StreamStepper(str(short), params, HOP)
    first = one.next()
    assert first is not None and one.next() is None
    np.testing.assert_array_equal(first.audio[:, 9_600:], 0.0)
    one.close()


def test_stream_origin_names_and_times(tmp_path: Path) -> None:
    archive = stream_origin("/data/impoundment-2017-06-01-12-00-00.opus")
    assert archive.source == "impoundment"
    assert archive.start == datetime(2017, 6, 1, 12, tzinfo=UTC)
    now = datetime(2020, 1, 1, tzinfo=UTC)
    assert stream_origin("http://host:8000/live/roof mic.ogg?x=1", now) == \
        StreamOrigin("roof_mic", now)
    path = tmp_path / "dawn chorus.wav"
    path.write_bytes(b"")
    local = stream_origin(str(path))
    assert local.source == "dawn_chorus"
    assert local.start == datetime.fromtimestamp(path.stat().st_mtime, UTC)


# ---------------------------------------------------------------- the apps, headless


async def test_app_relabel_a_row_and_save(dataset: Path, tmp_path: Path) -> None:
    before = arrays(dataset)
    edits = DatasetEdits.open(dataset)
    app = BrowserApp(DatasetBrowser(edits), Player(None, tmp_path / "sounds"))
    async with app.run_test(size=(160, 45)) as pilot:
        assert app.label == "quiet"
        await pilot.press("down")  # the class list has the focus: select rain
        assert app.label == "rain"
        table = app.query_one("#rows", DataTable)
        assert table.row_count == len(edits.rows("rain"))
        await pilot.press("tab", "down", "down")  # the third window of rain
        row = int(edits.rows("rain")[2])
        assert app.key == str(row)
        await pilot.press("r")
        assert isinstance(app.screen, PromptScreen)
        await pilot.press(*"birds", "enter")
        assert app.last_status == "relabel 1 window(s) rain -> birds"
        assert table.row_count == len(edits.rows("rain")) == len(before["labels"][
            before["labels"] == list(before["label_names"]).index("rain")]) - 1
        await pilot.press("s")
        assert app.last_status.startswith(f"saved {dataset}")
        await pilot.press("q")  # nothing unsaved: no question
        await pilot.pause()
        assert not app.is_running
    after = arrays(dataset)
    assert list(after["label_names"]) == list(before["label_names"])
    changed = np.flatnonzero(after["labels"] != before["labels"])
    assert changed.tolist() == [row]
    assert after["label_names"][after["labels"][row]] == "birds"
    for key in ("features", "split", "file_index", "offset_s", "channel", "files"):
        np.testing.assert_array_equal(after[key], before[key])
    assert "edit relabel 1 window(s) rain -> birds" in after["history"][-1]


async def test_app_delete_confirm_undo_filter_play_quit(dataset: Path, tmp_path: Path) -> None:
    edits = DatasetEdits.open(dataset)
    app = BrowserApp(DatasetBrowser(edits), Player(None, tmp_path / "sounds"),
                     start_class="rain")
    n_rain = len(edits.rows("rain"))
    async with app.run_test(size=(160, 45)) as pilot:
        assert app.label == "rain"
        await pilot.press("tab", "d")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("d", "n")  # a letter under the dialog does nothing
        assert len(edits.rows("rain")) == n_rain and app.last_status == "not deleted"
        await pilot.press("d", "y")
        assert len(edits.rows("rain")) == n_rain - 1
        await pilot.press("q")
        assert isinstance(app.screen, ConfirmScreen)  # unsaved: asks
        await pilot.press("n", "u")
        assert app.last_status.startswith("undone: delete") and not edits.dirty
        await pilot.press("slash", *"ch1", "enter")
        table = app.query_one("#rows", DataTable)
        channels = {str(table.get_row_at(i)[3]) for i in range(table.row_count)}
        rain = edits.rows("rain")
        assert channels == {"1"}
        assert table.row_count == np.count_nonzero(edits.ds.windows.channel[rain] == 1) > 0
        await pilot.press("p")
        await until(pilot, lambda: "wrote" in app.last_status, "the WAV")
        with wave.open(app.last_status.rsplit("wrote ", 1)[1]) as w:
            assert w.getnframes() == edits.ds.params.window_samples
        await pilot.press("q")
        await pilot.pause()
        assert not app.is_running
    assert arrays(dataset)["labels"].shape[0] == len(edits.ds.windows)  # never saved


async def test_app_on_a_sample_folder_moves_files(samples: Path, tmp_path: Path) -> None:
    start = sorted(tree(samples).values())
    app = BrowserApp(FolderBrowser(SampleFolder(samples)), Player(None, tmp_path / "sounds"),
                     start_class="unchecked")
    async with app.run_test(size=(160, 45)) as pilot:
        assert app.key is not None and "+['birds', 'rain']" in app.key
        await pilot.press("tab", "down", "a")  # the rain sample
        assert app.last_status == "accepted: rain/['rain'](mic-2)_2017-06-01T13:00:00.000Z.wav"
        await pilot.press("shift+tab", "up", "up", "tab")  # unchecked -> rain -> birds
        assert app.label == "birds"
        await pilot.press("r", *"birds-owl", "enter")
        assert app.last_status.startswith("moved to birds/owl/['birds-owl'](mic-1)")
        await pilot.press("d", "y")
        assert app.last_status.startswith("moved to deleted/")
        await pilot.press("s")
        assert app.last_status.startswith("nothing to save")
        await pilot.press("q")
        await pilot.pause()
        assert not app.is_running
    assert sorted(tree(samples).values()) == start
    assert (samples / "rain/['rain'](mic-2)_2017-06-01T13:00:00.000Z.wav").is_file()
    assert len(list((samples / "deleted").rglob("*.wav"))) == 1


async def test_app_extracts_labelled_windows_from_a_stream(tmp_path: Path) -> None:
    params = FeatureParams()
    audio = decode_file(real(RAIN), params.sample_rate)[0]
    stepper = StreamStepper(str(real(RAIN)), params, HOP)
    folder = SampleFolder(tmp_path / "samples")
    app = ExtractorApp(stepper, folder, ["rain", "birds"], Player(None, tmp_path / "sounds"))
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: stepper.current is not None, "the first window")
        await pilot.press("1")  # window 0, channel 0: rain
        await until(pilot, lambda: stepper.current.index == 1, "window 1")  # type: ignore[union-attr]
        await pilot.press("n", "c", "l", *"birds-owl", "enter")  # window 2, channel 1
        await until(pilot, lambda: stepper.current.index == 3, "window 3")  # type: ignore[union-attr]
        await pilot.press("b", "2")  # window 2 again, channel 1: birds
        await until(pilot, lambda: len(folder.samples()) == 3, "three samples")
        await pilot.press("b", "1", "u")  # saved and taken back
        await until(pilot, lambda: app.last_status.startswith("removed"), "the undo")
        await pilot.press("q")
        await pilot.pause()
    saved = {s.path.relative_to(folder.root).parent.as_posix(): s for s in folder.samples()}
    assert sorted(saved) == ["birds", "birds/owl", "rain"]
    expect = {"rain": ("rain", 0, 0), "birds/owl": ("birds-owl", 1, 2), "birds": ("birds", 1, 2)}
    for where, (label, channel, index) in expect.items():
        name = saved[where].name
        assert name is not None and name.labels == (label,)
        assert (name.source, name.channel) == ("rain", channel)
        at = stepper.origin.start + timedelta(seconds=index * HOP / params.sample_rate)
        assert name.time is not None and abs(name.time - at) < timedelta(milliseconds=1)
        with wave.open(str(saved[where].path)) as w:
            assert (w.getframerate(), w.getnchannels()) == (params.sample_rate, 1)
            pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2") / 32767.0
        start = index * HOP
        np.testing.assert_allclose(pcm, audio[channel, start:start + params.window_samples],
                                   atol=1e-4)
    items, skipped = sample_items(folder.root)
    assert sorted(i.label for i in items) == ["birds", "birds-owl", "rain"] and not skipped


# ---------------------------------------------------------------- the command line


def _parse(*argv: str) -> argparse.Namespace:
    from tidzam_ctl.__main__ import build_parser

    return build_parser().parse_args(["dataset", *argv])


def test_the_command_line_opens_the_right_app(dataset: Path, samples: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[object] = []
    monkeypatch.setattr(BrowserApp, "run", lambda self: opened.append(self.browser))
    monkeypatch.setattr(ExtractorApp, "run", lambda self: opened.append(self))
    settings = CtlSettings()
    assert dataset_commands.dataset(settings, _parse("edit", str(dataset))) == 0
    assert dataset_commands.dataset(settings, _parse("edit", str(samples))) == 0
    assert isinstance(opened[0], DatasetBrowser) and opened[0].edits.path == dataset
    assert isinstance(opened[1], FolderBrowser) and opened[1].folder.root == samples
    monkeypatch.chdir(tmp_path)
    args = _parse("--dataset", str(dataset), "--stream", str(real(OWL)))
    assert dataset_commands.dataset(settings, args) == 0
    extractor = opened[2]
    assert isinstance(extractor, ExtractorApp)
    assert extractor.labels[:3] == ["quiet", "rain", "birds"]
    assert extractor.stepper.hop == HOP and extractor.folder.root == Path("samples")
    extractor.stepper.close()


def test_play_flags_play_a_class_one_window_after_the_other(
        dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    bin_dir, heard = tmp_path / "bin", tmp_path / "heard"
    bin_dir.mkdir()
    heard.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))  # no ffplay, aplay or paplay
    args = _parse("--dataset", str(dataset), "--play", "--play-id", "2")  # birds
    with pytest.raises(CliError, match="no audio player found"):
        dataset_commands.dataset(CtlSettings(), args)
    aplay = bin_dir / "aplay"  # keeps what it is asked to play
    aplay.write_text(f"#!{sys.executable}\nimport pathlib, shutil, sys\n"
                     f"out = pathlib.Path({str(heard)!r})\n"
                     "shutil.copy(sys.argv[-1], out / f'{len(list(out.iterdir())):04d}.wav')\n")
    aplay.chmod(0o755)
    assert dataset_commands.dataset(CtlSettings(), args) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("window")]
    ds: CompiledDataset = load(dataset)
    birds = np.flatnonzero(ds.windows.labels == 2)
    assert len(lines) == birds.size and all("birds: " in line for line in lines)
    played = sorted(heard.iterdir())
    assert len(played) == birds.size  # one after the other: each waited for
    with wave.open(str(played[3])) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2") / 32767.0
    np.testing.assert_allclose(pcm, window_audio(ds, int(birds[3])), atol=1e-4)
