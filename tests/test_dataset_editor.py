"""The Database Editor (``tidzam_ctl dataset edit``) on real recordings (Debian packages).

The logic is tested directly (spectrogram text, window audio, dataset edits with
undo, players, stream windows); ``test_dataset_editor_apps`` tests sample folders,
the apps and the command line. What the logic leaves on disk is read back without
the editor: the ``.npz`` arrays, the WAV files.
"""

from __future__ import annotations

import shutil
import sys
import wave
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from rich.text import Text

from audio.decode import decode_file
from inference.features import FeatureParams, window_features
from learning.datasets.add import add_audio
from learning.datasets.compile import rms_db
from learning.datasets.errors import ClassNameError
from learning.datasets.operations import add_class, create, load, save
from learning.datasets.samples import AudioItem
from tests.audio_files import expected_windows, write_pcm
from tests.real_audio import CACHE, MEGAGLEST, real_file
from tidzam_ctl.editor.dataset_edits import DatasetEdits
from tidzam_ctl.editor.errors import EditorError
from tidzam_ctl.editor.player import PLAYERS, Player, find_player
from tidzam_ctl.editor.spectrogram import (
    LEVELS,
    audio_spectrogram,
    ramp_colour,
    render_spectrogram,
    spectrogram_levels,
)
from tidzam_ctl.editor.stream_stepper import StreamOrigin, StreamStepper, stream_origin
from tidzam_ctl.editor.window_audio import source_file, window_audio

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


@pytest.mark.parametrize("path", [
    "usr/share/games/openttd/data/opensfx.cat#07",  # OpenTTD: NN.wav
    "usr/share/games/nexuiz/data/sounds.pk3#sound/ambient/owl.ogg",  # a zip's member
    "usr/share/games/openclonk/Sound.ocg/Animals.ocg#Owl.ogg",  # an OpenClonk group's
    TILES + "autumn/sounds/owl.ogg",  # a plain file of the package
])
def test_every_kind_of_corpus_member_is_played(built: Path, tmp_path: Path, path: str) -> None:
    """Each archive kind the corpus unpacks is found where fetch.member_path put it."""
    from learning.corpus.fetch import member_path

    root = tmp_path / "pkgs" / "somegame-data_1.0-1"
    local = member_path(root, path)
    local.parent.mkdir(parents=True)
    shutil.copy(real(OWL), local)
    ds = load(built)
    packaged = replace(ds.provenance[1], path=path, package="somegame-data")
    assert source_file(packaged, [tmp_path]) == local
    row = int(np.flatnonzero(ds.file_index == 1)[0])
    np.testing.assert_array_equal(
        window_audio(replace(ds, provenance=(ds.provenance[0], packaged)), row, [tmp_path]),
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
