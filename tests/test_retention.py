"""Retention (``TIDZAM_RETAIN_*``, one settings class): the streams' limits, and
``tidzam_ctl retention`` removing old rows, unreviewed samples and archive files at a
time moved forward with ``--now``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from audio.archive import archive_name
from bus.connect import stream_config
from bus.settings import RetentionSettings
from bus_schemas.streams import AUDIO, CONTROL, EVENTS
from projections.retention import drop_series_before
from projections.store import ProjectionStore
from tests.audio_files import write_wav
from tests.fixtures_pg import health, prediction
from tests.real_audio import MEGAGLEST, RAIN, real_file
from tests.stack_helpers import ctl, running_stack, wait_for

DAY_NS = 86_400 * 10**9
JUNE = int(datetime(2025, 6, 10, tzinfo=UTC).timestamp() * 1e9)


def test_the_streams_keep_what_the_site_says(monkeypatch: pytest.MonkeyPatch) -> None:
    default = stream_config(AUDIO, RetentionSettings())
    assert (default.max_age, default.max_bytes) == (86_400, 8 * 1024**3)
    site = RetentionSettings(retain_audio_h=6, retain_audio_gb=0.5, retain_events_days=30)
    audio, events = stream_config(AUDIO, site), stream_config(EVENTS, site)
    assert (audio.max_age, audio.max_bytes, events.max_age) == (6 * 3600, 512 * 1024**2,
                                                                 30 * 86_400)
    assert stream_config(CONTROL, site).max_age is None  # the configuration history: forever
    monkeypatch.setenv("TIDZAM_RETAIN_AUDIO_H", "0")  # what a process reads: its environment
    assert stream_config(AUDIO).max_age is None


async def test_old_months_are_dropped_whole_and_the_rest_row_by_row(pg_dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        async with AsyncConnectionPool(pg_dsn, min_size=1, max_size=2, open=False) as pool:
            store = ProjectionStore(pool)
            days = [0, 10, 30, 40, 60]  # June 10, June 20, July 10, July 20, Aug 9
            events: list[tuple[int, Any]] = [
                (i + 1, prediction(JUNE + d * DAY_NS)) for i, d in enumerate(days)]
            events += [(i + 10, health(JUNE + d * DAY_NS)) for i, d in enumerate(days)]
            await store.apply("main", "EVENTS", events)
        cutoff = datetime(2025, 7, 15, tzinfo=UTC)
        dropped = await drop_series_before(conn, cutoff)
        await conn.commit()
        assert sorted(dropped.partitions) == ["channel_health_202506", "detections_202506",
                                              "predictions_202506"]
        assert dropped.rows["predictions"] == 3 and dropped.rows["channel_health"] == 3
        left = await (await conn.execute("SELECT time FROM predictions ORDER BY time")).fetchall()
        assert [t for (t,) in left] == [datetime(2025, 7, 20, tzinfo=UTC),
                                        datetime(2025, 8, 9, tzinfo=UTC)]
        events_left = await (await conn.execute(
            "SELECT count(*) FROM detection_events WHERE end_time < %s", (cutoff,))).fetchone()
        assert events_left == (0,)
        again = await drop_series_before(conn, cutoff)  # nothing more to do
        assert again.partitions == [] and not any(again.rows.values())


def test_retention_at_a_later_time_removes_what_is_older(tmp_path: Path) -> None:
    rain = real_file(MEGAGLEST, RAIN)
    store = tmp_path / "archives"
    old_file = store / "pond" / archive_name("pond", JUNE, "wav")
    recent_file = store / "pond" / archive_name("pond", JUNE + 50 * DAY_NS, "wav")
    for path in (old_file, recent_file):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_wav(path, seconds=1.0, channels=1)
    with running_stack(tmp_path / "home", archive_dir=store, retain_predictions_days=30,
                       retain_samples_days=30, retain_archive_days=30) as stack:
        home = stack.home
        assert ctl(home, "rules", "set", "pond*", "--rate", "1", "--cooldown", "2"
                   ).returncode == 0
        for source, start in (("pond", "2025-06-01T00:00:00Z"),
                              ("pond-later", "2025-07-20T00:00:00Z")):
            done = ctl(home, "replay", str(rain), "--source", source, "--start", start,
                       "--wait")
            assert done.returncode == 0, done.stderr

        def samples() -> list[dict[str, Any]]:
            return list(json.loads(ctl(home, "samples", "ls", "--json", "--limit", "1000"
                                       ).stdout))

        wait_for(lambda: {s["source"] for s in samples()} == {"pond", "pond-later"}, 60,
                 "samples of both replays")
        june = [s for s in samples() if s["source"] == "pond"]
        kept = june[0]["sample_id"]
        assert ctl(home, "samples", "label", kept, "--accept").returncode == 0
        wait_for(lambda: any(s["sample_id"] == kept and s["reviewed_label"]
                             for s in samples()), 30, "the review projected")
        files_before = {p.name for p in (home / "samples").rglob("*.flac")}

        done = ctl(home, "retention", "--now", "2025-08-01T00:00:00Z")
        assert done.returncode == 0, done.stderr
        assert "monthly partition(s) dropped" in done.stderr

        with psycopg.connect(stack.database_url) as conn:
            per_source = dict(conn.execute(
                "SELECT source, count(*) FROM predictions GROUP BY source").fetchall())
            assert "pond" not in per_source and per_source["pond-later"] > 0
            assert conn.execute("SELECT count(*) FROM detections WHERE source = 'pond'"
                                ).fetchone() == (0,)
            gone = conn.execute("SELECT sample_id FROM samples WHERE source = 'pond' AND "
                                "path IS NOT NULL").fetchall()
        assert gone == [(kept,)]  # the reviewed June sample stays, the others lost audio
        files_after = {p.name for p in (home / "samples").rglob("*.flac")}
        assert len(files_after) == len(files_before) - (len(june) - 1)
        assert not old_file.exists() and recent_file.exists()
