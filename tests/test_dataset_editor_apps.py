"""The Database Editor's apps (``tidzam_ctl dataset edit``) on real recordings.

Sample folders moved by the logic and by the app, the apps driven headless with
Textual's pilot, and the command line that opens them; what they leave on disk is
read back without the editor: the ``.npz`` arrays, the WAV files,
``learning.datasets.samples.sample_items``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import wave
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable

from audio.decode import decode_file
from inference.features import FeatureParams
from learning.datasets.format import CompiledDataset
from learning.datasets.operations import load
from learning.datasets.samples import parse_sample_name, sample_items
from tests import test_dataset_editor as logic_tests
from tests.audio_files import write_pcm
from tests.test_dataset_editor import HOP, OWL, RAIN, arrays, loud_pieces, real
from tests.waiting import wait_until
from tidzam_ctl.commands import dataset as dataset_commands
from tidzam_ctl.editor.app import BrowserApp, ExtractorApp
from tidzam_ctl.editor.browsers import DatasetBrowser, FolderBrowser
from tidzam_ctl.editor.dataset_edits import DatasetEdits
from tidzam_ctl.editor.errors import EditorError
from tidzam_ctl.editor.player import Player
from tidzam_ctl.editor.sample_folder import SampleFolder, renamed_sample, sample_file_name
from tidzam_ctl.editor.screens import ConfirmScreen, PromptScreen
from tidzam_ctl.editor.stream_stepper import StreamStepper
from tidzam_ctl.editor.window_audio import window_audio
from tidzam_ctl.errors import CliError
from tidzam_ctl.settings import CtlSettings

# The logic tests' dataset fixtures, shared (this module builds its own copy once).
built, dataset = logic_tests.built, logic_tests.dataset


def tree(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``root``."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


async def until(pilot: Pilot[None], done: Callable[[], bool], what: str) -> None:
    """Let the app run until ``done()`` (a worker, a thread); fail after 10 s."""
    await wait_until(done, 10, what, poll_s=0.02, pause=pilot.pause)


# ---------------------------------------------------------------- fixtures


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
