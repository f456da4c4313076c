"""``tidzam_ctl samples review``: the review browser on FLAC samples written here, the
app driven headless with Textual's pilot, and the command on a real NATS + PostgreSQL
with the real projector, read back from the ``samples`` table."""

from __future__ import annotations

import asyncio
import time
import wave
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from textual.pilot import Pilot
from textual.widgets import OptionList

from audio.encode import write_flac
from bus.connect import connect
from bus.publisher import Publisher
from bus_schemas import SampleExtracted, SampleLabelled, pcm
from bus_schemas.control import DISCARDED
from inference.features import FeatureParams
from projections.service import ProjectorSettings
from projections.service import run as run_projector
from tests.waiting import wait_until
from tidzam_ctl.commands.samples import BusPublisher, samples
from tidzam_ctl.editor.errors import EditorError
from tidzam_ctl.editor.player import Player
from tidzam_ctl.editor.review import REVIEWED, ReviewApp, ReviewBrowser, ReviewRow
from tidzam_ctl.editor.screens import PromptScreen
from tidzam_ctl.errors import CliError
from tidzam_ctl.settings import CtlSettings
from tidzam_ctl.stack.nats import NatsServer
from tidzam_ctl.stack.ports import free_port

RATE = 48_000
T0 = datetime(2025, 6, 15, 4, 0, tzinfo=UTC)
LABELS = ("birds", "rain", "wind", "insects", "frog", "quiet")
FILE_S, BEFORE_S, WINDOW_S = 3.0, 0.5, 2.0  # a sample: its context, the window scored


def write_sample(root: Path, rel: str, tone_hz: float) -> None:
    """A 3 s mono FLAC: silence, then a tone over the scored window, then silence."""
    t = np.arange(round(WINDOW_S * RATE)) / RATE
    audio = np.zeros(round(FILE_S * RATE), np.float32)
    a = round(BEFORE_S * RATE)
    audio[a:a + t.size] = 0.5 * np.sin(2 * np.pi * tone_hz * t)
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    write_flac(root / rel, pcm.to_int16(audio)[None, :], RATE)


def sample_row(n: int, label: str, scores: tuple[float, ...], reason: str, source: str = "pond",
               channel: int = 0, reviewed: str | None = None) -> ReviewRow:
    start = T0 + timedelta(seconds=10 * n)
    sid = f"{source}-{channel}-{n}"
    return ReviewRow(
        sample_id=sid, time=start, end_time=start + timedelta(seconds=FILE_S),
        window_start=start + timedelta(seconds=BEFORE_S),
        window_end=start + timedelta(seconds=BEFORE_S + WINDOW_S), source=source,
        channel=channel, label=label, confidence=max(scores), reason=reason,
        path=f"samples/{label}/{sid}.flac", labels=LABELS, scores=scores, sample_rate=RATE,
        model_id="selector", model_version="1.0.0", reviewed_label=reviewed,
        reviewed_by="ann" if reviewed else None)


@pytest.fixture
def rows(tmp_path: Path) -> list[ReviewRow]:
    """Four unchecked samples and one that ann reviewed as wind, their files written."""
    found = [
        sample_row(1, "birds", (0.81, 0.1, 0.04, 0.03, 0.01, 0.01), "auto"),
        sample_row(2, "birds", (0.55, 0.45, 0.0, 0.0, 0.0, 0.0), "hesitant", channel=1),
        sample_row(3, "rain", (0.1, 0.7, 0.1, 0.05, 0.05, 0.0), "rate"),
        sample_row(4, "unknown", (0.3, 0.3, 0.2, 0.1, 0.1, 0.0), "unknown"),
        sample_row(5, "rain", (0.2, 0.6, 0.2, 0.0, 0.0, 0.0), "rate", channel=1,
                   reviewed="wind")]
    for row in found:
        write_sample(tmp_path / "samples", row.path, 500.0 if row.label == "rain" else 3000.0)
    return found


class Bus:
    """The events published, in order; ``down``: every publish fails as NATS would."""

    def __init__(self) -> None:
        self.events: list[SampleLabelled] = []
        self.down = False

    def __call__(self, event: SampleLabelled) -> None:
        if self.down:
            raise EditorError(f"NATS did not answer within 3 s: the review of "
                              f"{event.sample_id} is not recorded")
        self.events.append(event)

    def said(self) -> list[tuple[str, str, str]]:
        return [(e.sample_id, e.label, e.previous_label) for e in self.events]


def browser_of(rows: list[ReviewRow], root: Path, bus: Bus) -> ReviewBrowser:
    return ReviewBrowser(lambda: rows, bus, root / "samples", "eve")


# ---------------------------------------------------------------- the browser


def test_classes_rows_details_spectrogram_and_sound(rows: list[ReviewRow], tmp_path: Path
                                                    ) -> None:
    b = browser_of(rows, tmp_path, Bus())
    assert b.classes() == [("birds", 2), ("rain", 1), ("unknown", 1), (REVIEWED + "wind", 1)]
    items = b.items("birds", "")
    assert [i.key for i in items] == ["pond-0-1", "pond-1-2"]
    assert items[1].cells == ("06-15 04:00:20", "pond.1", "birds", "0.55", "hesitant", "-")
    assert [i.key for i in b.items("birds", "POND-1")] == ["pond-1-2"]
    assert b.items(REVIEWED + "wind", "")[0].cells[-1] == "wind"
    details = b.details("pond-0-1").splitlines()
    assert details[1] == "top 5   birds 0.81  rain 0.10  wind 0.04  insects 0.03  frog 0.01"
    assert details[0] == "pond-0-1: proposed birds 0.81 (taken for its rarity)"
    assert details[2] == "file    samples/birds/pond-0-1.flac, 3.0 s, 48000 Hz"
    assert "0.50-2.50 s" in details[3] and "a accepts birds" in details[-1]
    assert b.details("pond-1-5").splitlines()[-1] == "review  wind, by ann"
    assert "no class proposed" in b.details("pond-0-4")

    params = FeatureParams()
    high, low = b.features("pond-0-1"), b.features("pond-0-3")
    # the scored window only (2 s: four 0.5 s windows), never the silent context
    assert high.shape == (4 * params.n_frames, params.n_mels) == low.shape
    assert float(high.max(axis=1).min()) > float(high.min()) + 10  # every frame hears the tone
    band_high, band_low = np.argmax(high, axis=1), np.argmax(low, axis=1)
    assert len(set(band_high)) == 1 and len(set(band_low)) == 1
    assert band_high[0] > band_low[0]  # 3 kHz above 500 Hz
    sound, rate = b.audio("pond-0-1")
    assert rate == RATE and sound.shape == (round(FILE_S * RATE),)  # the context played too
    assert b.label_choices()[:6] == list(LABELS) and "unknown" not in b.label_choices()
    (tmp_path / "samples" / rows[2].path).unlink()
    with pytest.raises(EditorError, match="cannot read sample pond-0-3"):
        b.features("pond-0-3")


def test_accept_relabel_discard_publish_and_move_on(rows: list[ReviewRow], tmp_path: Path
                                                    ) -> None:
    bus = Bus()
    b = browser_of(rows, tmp_path, bus)
    b.items("birds", "")  # what the app lists: the cursor's next sample comes from it
    assert b.accept("pond-0-1") == "accepted pond-0-1 as birds"
    assert b.take_focus() == ("birds", "pond-1-2") and b.take_focus() is None
    assert b.relabel("pond-1-2", " insects ", whole_file=False) == \
        "relabelled pond-1-2 as insects"
    assert b.take_focus() is None  # it was the last of its class
    assert b.delete("pond-0-3") == "discarded pond-0-3"
    assert bus.said() == [("pond-0-1", "birds", "birds"), ("pond-1-2", "insects", "birds"),
                          ("pond-0-3", DISCARDED, "rain")]
    assert {e.by for e in bus.events} == {"eve"}
    stamps = [e.at_ns for e in bus.events]
    assert stamps == sorted(set(stamps)) and abs(stamps[0] - time.time_ns()) < 60e9
    assert b.classes() == [("unknown", 1), (REVIEWED + "birds", 1),
                           (REVIEWED + DISCARDED, 1), (REVIEWED + "insects", 1),
                           (REVIEWED + "wind", 1)]
    assert b.rows["pond-1-2"].reviewed_label == "insects"
    assert b.rows["pond-1-2"].reviewed_by == "eve"
    assert b.accept("pond-0-1") == "pond-0-1 is already birds: nothing published"
    assert len(bus.events) == 3 and b.published == 3 and not b.dirty
    assert b.save().startswith("nothing to save")


def test_bad_names_and_an_unreachable_bus_change_nothing(rows: list[ReviewRow],
                                                         tmp_path: Path) -> None:
    bus = Bus()
    b = browser_of(rows, tmp_path, bus)
    before = b.classes()
    for bad in ("", "rain wind", "birds-", "-rain", "é"):
        with pytest.raises(EditorError, match=r"is not a class name .*nothing published"):
            b.relabel("pond-0-1", bad, whole_file=False)
    with pytest.raises(EditorError, match="proposed no class for pond-0-4"):
        b.accept("pond-0-4")
    bus.down = True
    with pytest.raises(EditorError, match="pond-0-1 is not recorded"):
        b.accept("pond-0-1")
    assert bus.events == [] and b.classes() == before and b.take_focus() is None
    assert rows[0].reviewed_label is None and b.published == 0
    with pytest.raises(EditorError, match="nothing to undo"):
        b.undo()
    with pytest.raises(EditorError, match="no sample 'nope'"):
        b.accept("nope")


def test_undo_withdraws_a_first_review_and_restores_an_earlier_one(
        rows: list[ReviewRow], tmp_path: Path) -> None:
    bus = Bus()
    b = browser_of(rows, tmp_path, bus)
    start = b.classes()
    b.accept("pond-0-1")
    b.relabel("pond-0-1", "frog", whole_file=False)
    b.relabel("pond-1-5", "rain", whole_file=False)  # ann's wind, before this session
    bus.down = True  # an undo that cannot be published stays to be done
    with pytest.raises(EditorError, match="not recorded"):
        b.undo()
    bus.down = False
    assert b.undo() == "undone: pond-1-5 back to wind"
    assert b.take_focus() == (REVIEWED + "wind", "pond-1-5")
    assert b.undo() == "undone: pond-0-1 back to birds"
    assert b.undo() == "undone: pond-0-1 unchecked again"
    assert b.take_focus() == ("birds", "pond-0-1")
    assert bus.said()[3:] == [("pond-1-5", "wind", "rain"), ("pond-0-1", "birds", "frog"),
                              ("pond-0-1", "", "birds")]
    assert b.classes() == start and rows[0].reviewed_label is None
    with pytest.raises(EditorError, match="nothing to undo"):
        b.undo()


def test_an_unreachable_nats_fails_within_the_timeout() -> None:
    publisher = BusPublisher(f"nats://127.0.0.1:{free_port()}", timeout_s=0.5)
    event = SampleLabelled(sample_id="pond-0-1", label="birds", by="eve", at_ns=1)
    try:
        began = time.monotonic()
        with pytest.raises(EditorError, match=r"did not answer within 0.5 s: the review of "
                                              r"pond-0-1 is not recorded"):
            publisher(event)
        assert time.monotonic() - began < 2.0
    finally:
        publisher.close()


# ---------------------------------------------------------------- the app, headless


async def until(pilot: Pilot[None], done: Callable[[], bool], what: str) -> None:
    await wait_until(done, 10, what, poll_s=0.02, pause=pilot.pause)


def class_list(app: ReviewApp) -> list[str]:
    box = app.query_one("#classes", OptionList)
    return [str(box.get_option_at_index(i).prompt) for i in range(box.option_count)]


async def test_app_accept_relabel_undo_discard_skip_play_quit(
        rows: list[ReviewRow], tmp_path: Path) -> None:
    bus = Bus()
    app = ReviewApp(browser_of(rows, tmp_path, bus), Player(None, tmp_path / "sounds"))
    async with app.run_test(size=(160, 45)) as pilot:
        assert (app.label, app.key) == ("birds", "pond-0-1")
        await pilot.press("n")
        assert (app.key, app.last_status) == ("pond-1-2", "skipped pond-0-1")
        await pilot.press("space")
        assert app.key == "pond-1-2" and app.last_status.startswith("no sample after")
        await pilot.press("tab", "up", "a")  # back to the first, accepted: on to the next
        assert app.last_status == "accepted pond-0-1 as birds" and app.key == "pond-1-2"
        assert class_list(app)[:2] == ["birds (1)", "rain (1)"]
        await pilot.press("r")
        assert isinstance(app.screen, PromptScreen)
        await pilot.press(*"no such", "enter")
        assert "'no such' is not a class name" in app.last_status and len(bus.events) == 1
        await pilot.press("r", *"insects", "enter")
        assert app.last_status == "relabelled pond-1-2 as insects"
        assert (app.label, app.key) == ("rain", "pond-0-3")  # birds is done
        await pilot.press("u")
        assert app.last_status == "undone: pond-1-2 unchecked again"
        assert (app.label, app.key) == ("birds", "pond-1-2")
        await pilot.press("d")  # at once: u takes it back
        assert app.last_status == "discarded pond-1-2" and app.label == "rain"
        assert class_list(app) == ["rain (1)", "unknown (1)", "✓ birds (1)",
                                   "✓ discarded (1)", "✓ wind (1)"]
        await pilot.press("p")
        await until(pilot, lambda: "wrote" in app.last_status, "the WAV")
        with wave.open(app.last_status.rsplit("wrote ", 1)[1]) as w:
            assert (w.getnframes(), w.getframerate()) == (round(FILE_S * RATE), RATE)
        await pilot.press("q")
        await pilot.pause()
        assert not app.is_running
    assert bus.said() == [("pond-0-1", "birds", "birds"), ("pond-1-2", "insects", "birds"),
                          ("pond-1-2", "", "insects"), ("pond-1-2", DISCARDED, "birds")]


# ---------------------------------------------------------------- the real stack


def extracted(n: int, label: str, root: Path) -> SampleExtracted:
    """A sample as the extractor publishes it, its file written under ``root``."""
    start = int((T0 + timedelta(seconds=10 * n)).timestamp() * 1e9)
    row = sample_row(n, label, (0.7, 0.2, 0.1, 0.0, 0.0, 0.0), "rate")
    write_sample(root, row.path, 3000.0)
    before, window = int(BEFORE_S * 1e9), int(WINDOW_S * 1e9)
    return SampleExtracted(
        sample_id=row.sample_id, source=row.source, channel=row.channel, start_ns=start,
        end_ns=start + int(FILE_S * 1e9), window_start_ns=start + before,
        window_end_ns=start + before + window, label=label, confidence=0.7,
        model_id="selector", model_version="1.0.0", labels=LABELS, scores=row.scores,
        reason="rate", sample_rate=RATE, path=row.path)


async def reviews(dsn: str) -> dict[str, tuple[str | None, str | None]]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute("SELECT sample_id, reviewed_label, reviewed_by FROM samples"
                                 " WHERE path IS NOT NULL")
        return {str(r[0]): (r[1], r[2]) for r in await cur.fetchall()}


async def test_the_command_reviews_on_the_real_bus_and_database(
        nc: Any, nats_server: NatsServer, pg_dsn: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "samples"
    stop = asyncio.Event()
    projector = asyncio.create_task(run_projector(
        ProjectorSettings(nats_url=nats_server.url, database_url=pg_dsn), stop))
    presses: list[tuple[str, ...]] = []  # what the next app opened is given, in turn
    seen: list[tuple[str | None, str | None, str]] = []  # (class, sample, status) after each

    def drive(app: ReviewApp) -> None:  # ReviewApp.run, in the command's thread
        async def keys() -> None:
            async with app.run_test(size=(160, 45)) as pilot:
                seen.append((app.label, app.key, app.last_status))
                for keys in presses:
                    await pilot.press(*keys)
                    seen.append((app.label, app.key, app.last_status))
                await pilot.press("q")
                await pilot.pause()
        asyncio.run(keys())

    monkeypatch.setattr(ReviewApp, "run", drive)
    from tidzam_ctl.__main__ import build_parser

    settings = CtlSettings(home=tmp_path / "home", nats_url=nats_server.url,
                           database_url=pg_dsn, samples_dir=root)

    async def review(*argv: str) -> int:
        args = build_parser().parse_args(["samples", "review", "--by", "tester", *argv])
        return await asyncio.to_thread(samples, settings, args)

    try:
        extractor = await connect(nats_server.url, "pytest-extractor")
        await Publisher(extractor.jetstream()).publish_all(
            [extracted(1, "birds", root), extracted(2, "rain", root)])
        await extractor.drain()
        await wait_until(lambda: _count(pg_dsn, 2), 20, "the two samples projected")
        presses[:] = [("tab", "a"), ("r", *"wind", "enter")]
        assert await review() == 0
        assert seen == [("birds", "pond-0-1", ""),
                        ("rain", "pond-0-2", "accepted pond-0-1 as birds"),
                        (REVIEWED + "birds", "pond-0-1", "relabelled pond-0-2 as wind")]
        assert "2 review event(s) published as tester" in capsys.readouterr().err
        expected = {"pond-0-1": ("birds", "tester"), "pond-0-2": ("wind", "tester")}

        async def projected() -> bool:
            return await reviews(pg_dsn) == expected
        await wait_until(projected, 20, "the two reviews in the samples table")
        # read back from SQL: nothing unchecked is left; --all shows the reviews
        seen.clear()
        assert await review() == 0 and seen == []
        assert "no sample to review" in capsys.readouterr().err
        with pytest.raises(CliError, match="no sample proposed or reviewed as 'nope'"):
            await review("--all", "--label", "nope")
        presses.clear()
        assert await review("--all", "--label", "wind") == 0
        assert seen == [(REVIEWED + "wind", "pond-0-2", "")]
    finally:
        stop.set()
        await asyncio.wait_for(projector, 20)


async def _count(dsn: str, n: int) -> bool:
    return len(await reviews(dsn)) == n
