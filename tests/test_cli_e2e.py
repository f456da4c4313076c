"""A user's path through the CLI: replay a real recording, query SQL, rebuild, replay again."""

from __future__ import annotations

import json
from pathlib import Path

from tests.real_audio import MEGAGLEST, RAIN, STORM, real_file
from tests.stack_helpers import ctl, running_stack


def _query(home: Path, *args: str, what: str = "detections") -> list[dict]:  # type: ignore[type-arg]
    done = ctl(home, "query", what, "--json", "--limit", "100000", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_replay_query_rebuild_and_replay_again(tmp_path: Path) -> None:
    home = tmp_path / "home"
    rain = real_file(MEGAGLEST, RAIN)  # 15.8 s of a stereo storm (rain + thunder)
    with running_stack(home):
        done = ctl(home, "replay", str(rain), "--source", "pond", "--start",
                   "2025-06-01T00:00:00Z", "--wait")
        assert done.returncode == 0, done.stderr
        assert "pond: 1 file(s), 2 channel(s)" in done.stderr
        rows = _query(home, "--source", "pond")
        assert rows and {r["channel"] for r in rows} == {0, 1}
        assert rows[0]["time"].startswith("2025-06-01T00:00:00")
        assert set(rows[0]) == {"time", "source", "channel", "label", "confidence",
                                "model_id", "model_version"}
        labels = [r["label"] for r in rows]
        assert sum(label in STORM for label in labels) > len(labels) / 2, labels  # a storm
        heard = max(STORM, key=labels.count)

        later = _query(home, "--source", "pond", "--channel", "1", "--label", heard,
                       "--since", "2025-06-01T00:00:05Z", "--until", "2025-06-01T00:00:10Z")
        assert later and all(r["channel"] == 1 and r["label"] == heard for r in later)
        assert all("00:00:05" <= r["time"][11:19] < "00:00:10" for r in later)

        events = _query(home, "--source", "pond", what="events")
        assert sum(e["windows"] for e in events) == len(rows)  # every detection in one event
        assert len(events) < len(rows) / 2  # rain lasts: windows merge into long events

        url = ctl(home, "psql", "--url").stdout.strip()
        assert url.startswith("postgresql://") and "127.0.0.1" in url

        done = ctl(home, "projections", "rebuild")
        assert done.returncode == 0, done.stderr
        assert _query(home, "--source", "pond") == rows
        assert _query(home, "--source", "pond", what="events") == events

        done = ctl(home, "replay", str(rain), "--source", "pond", "--start",
                   "2025-06-01T00:00:00Z", "--wait")
        assert done.returncode == 0, done.stderr
        assert _query(home, "--source", "pond") == rows  # the same recording, stored once
        assert _query(home, "--source", "pond", what="events") == events

        table = ctl(home, "query", "detections", "--source", "pond", "--limit", "3")
        assert f"3 of {len(rows):,} detections (use --limit" in table.stdout
        assert "selector@" in table.stdout


def test_query_without_a_stack_says_what_to_do(tmp_path: Path) -> None:
    done = ctl(tmp_path / "none", "query", "detections")
    assert done.returncode == 1
    assert "tidzam_ctl up" in done.stderr or "PostgreSQL" in done.stderr


def test_replay_wait_returns_while_a_live_source_never_stops(tmp_path: Path) -> None:
    """``replay --wait`` waits for its own windows, not for an idle bus: a live source
    publishing all along (8 channels, a quarter-second chunk 4 times a second each, so
    the classifier is never idle for a second) does not keep it waiting."""
    import asyncio
    import threading
    import time

    from bus.connect import connect
    from bus.publisher import Publisher
    from bus_schemas import AudioChunk
    from tidzam_ctl.settings import CtlSettings
    from tidzam_ctl.stack.stack import Stack

    home = tmp_path / "home"
    rain = real_file(MEGAGLEST, RAIN)
    stop = threading.Event()

    async def live(url: str) -> None:
        nc = await connect(url, "pytest-live")
        pub = Publisher(nc.jetstream())
        rate, step = 48_000, 12_000
        t0, seq = time.time_ns(), 0
        noise = bytes(range(256)) * (2 * step // 256)
        while not stop.is_set():
            await pub.publish_all([
                AudioChunk(source="live", channel=ch, seq=seq, first_sample=seq * step,
                           start_ns=t0 + seq * step * 10**9 // rate, sample_rate=rate,
                           samples=noise) for ch in range(8)])
            seq += 1
            await asyncio.sleep(0.25)
        await nc.drain()

    with running_stack(home):
        url = Stack(CtlSettings(home=home)).nats_url
        thread = threading.Thread(target=lambda: asyncio.run(live(url)), daemon=True)
        thread.start()
        try:
            time.sleep(3)  # the live source is flowing
            t0 = time.monotonic()
            done = ctl(home, "replay", str(rain), "--source", "pond", "--wait",
                       "--timeout", "120", timeout=200)
            took = time.monotonic() - t0
            assert done.returncode == 0, done.stderr
            assert took < 90, took
            assert _query(home, "--source", "pond")  # its windows are in SQL
        finally:
            stop.set()
            thread.join(10)
