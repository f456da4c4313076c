"""The archiver writes what streams in into hour files that play back as an archive."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg
from nats.aio.client import Client

from audio import archive
from audio.decode import decode_all
from bus.publisher import Publisher
from bus.runner import ConsumerRunner
from consumers.archiver import SPEC, Archiver
from producers.replay import Replayer, ReplayItem
from tests.audio_files import default_grid, expected_windows, write_pcm, write_wav
from tests.bus_reading import archive_everything
from tests.real_audio import DAY, MEGAGLEST, real_file
from tests.stack_helpers import ctl, running_stack
from tests.waiting import wait_for, wait_until

T0 = datetime(2025, 6, 1, 9, 59, 57, tzinfo=UTC)  # 3 s before an hour boundary


async def _archive(nc: Client, root: Path, *items: ReplayItem) -> Archiver:
    await Replayer(Publisher(nc.jetstream()), chunk_s=1.0).replay(list(items))
    return await archive_everything(nc, Archiver(root))


async def test_hour_files_are_split_at_the_hour_and_lossless(nc: Client, tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "two.wav", seconds=7.5, channels=2, seed=4)
    original, _ = decode_all(wav, 48_000)
    await _archive(nc, tmp_path / "arch", ReplayItem(wav, "pond", T0))
    files = archive.scan(tmp_path / "arch" / "pond", "pond")
    assert [f.path.name for f in files] == ["pond-2025-06-01-09-59-57.flac",
                                            "pond-2025-06-01-10-00-00.flac"]
    assert [round(f.duration_s or 0, 3) for f in files] == [3.0, 4.5]
    back = np.concatenate([decode_all(f.path, 48_000)[0] for f in files], axis=1)
    assert back.shape == original.shape
    assert np.abs(back - original).max() < 1e-4  # FLAC: what came in, exactly
    assert archive.ranges(files) == [(T0, T0 + timedelta(seconds=7.5))]


async def test_many_channels_go_to_opus_and_redeliveries_are_not_written_twice(
        nc: Client, tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "twelve.wav", seconds=3.0, channels=12, seed=5)
    archiver = await _archive(nc, tmp_path / "arch", ReplayItem(wav, "array", T0))
    files = archive.scan(tmp_path / "arch" / "array", "array")
    assert len(files) == 1 and files[0].path.suffix == ".opus"  # 09:59:57 to the hour
    assert decode_all(files[0].path, 48_000)[1].channels == 12
    # a restarted archiver that is handed every chunk again (its consumer lost) writes
    # nothing twice: what was written is recorded per session
    await nc.jetstream().delete_consumer("AUDIO", SPEC.durable)
    again = await _archive(nc, tmp_path / "arch")
    assert again._written == archiver._written
    assert [f.path.name for f in archive.scan(tmp_path / "arch" / "array", "array")] == [
        files[0].path.name]


def test_the_stack_archives_a_stream_that_then_plays_as_an_archive(tmp_path: Path) -> None:
    day = real_file(MEGAGLEST, DAY)
    clip = tmp_path / "day.wav"
    audio, _ = decode_all(day, 48_000)
    write_pcm(clip, audio[:, : 4 * 48_000])
    store = tmp_path / "archives"
    with running_stack(tmp_path / "home", archive_dir=store) as stack:
        assert ctl(stack.home, "source", "add", "meadow", "--file", str(clip)).returncode == 0
        def archived() -> bool:
            folder = store / "meadow"
            files = archive.scan(folder, "meadow") if folder.is_dir() else []
            return len(files) == 1 and abs((files[0].duration_s or 0) - 4.0) < 0.01
        wait_for(archived, 60, "the finished archive file")
        files = archive.scan(store / "meadow", "meadow")
        assert len(files) == 1 and abs((files[0].duration_s or 0) - 4.0) < 0.01
        start = files[0].start.isoformat()
        done = ctl(stack.home, "source", "add", "meadow-again", "--database",
                   str(store / "meadow"), "--date", start)
        assert done.returncode == 0
        with psycopg.connect(stack.database_url) as conn:
            def played() -> bool:
                row = conn.execute("SELECT count(*) FROM predictions "
                                   "WHERE source = 'meadow-again'").fetchone()
                return bool(row and row[0] >= 2 * expected_windows(4 * 48_000, *default_grid()))
            wait_for(played, 60, "the archive played back")


async def test_a_session_that_stops_without_an_end_is_finished_and_resumed_right(
        nc: Client, tmp_path: Path) -> None:
    """Sets 0-2 of a 3-channel session, then silence (a crashed source): the file is
    finished after the idle time. A restarted archiver knows the session's channels and
    where it stopped, so a set arriving one channel at a time is not taken for mono."""
    from bus_schemas import AudioChunk

    def chunk(seq: int, ch: int) -> AudioChunk:
        pcm = (np.full(48_000, 1000 * (ch + 1), dtype="<i2")).tobytes()
        return AudioChunk(source="crash", channel=ch, seq=seq, first_sample=seq * 48_000,
                          start_ns=int(T0.timestamp() * 1e9) + seq * 10**9,
                          sample_rate=48_000, samples=pcm)

    pub = Publisher(nc.jetstream())
    await pub.publish_all([chunk(s, c) for s in range(3) for c in range(3)])
    first = Archiver(tmp_path / "arch", idle_s=0.3)
    runner = ConsumerRunner(nc, SPEC, first.handle)
    await runner.ensure_consumer()
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))

    async def sleep_then_tick(delay: float) -> None:
        await asyncio.sleep(delay)
        await first.tick()  # the archiver process runs this every idle_s / 2
    try:
        await wait_until(lambda: not first.sessions and (tmp_path / "arch" / "crash").is_dir(),
                         20, "the idle session's file", poll_s=0.1, pause=sleep_then_tick)
    finally:
        stop.set()
        await task
    files = archive.scan(tmp_path / "arch" / "crash", "crash")
    assert len(files) == 1 and abs((files[0].duration_s or 0) - 3.0) < 0.01  # a finished file
    again = Archiver(tmp_path / "arch")
    session = again._session(chunk(3, 2))  # the next set, its last channel first
    assert session.channels == (0, 1, 2) and session.next_seq == 3


async def test_an_archive_played_back_is_not_archived_again(nc: Client, tmp_path: Path) -> None:
    """Replaying the archive of a source under its own name (``--database --date``)
    adds no file; new audio of the same source after it still is archived."""
    wav = write_wav(tmp_path / "one.wav", seconds=2.5, channels=1, seed=6)
    await _archive(nc, tmp_path / "arch", ReplayItem(wav, "pond", T0))
    first = archive.scan(tmp_path / "arch" / "pond", "pond")
    assert [f.path.name for f in first] == ["pond-2025-06-01-09-59-57.flac"]
    later = T0 + timedelta(minutes=5)
    archiver = await _archive(nc, tmp_path / "arch",
                              ReplayItem(first[0].path, "pond", T0 + timedelta(seconds=1)),
                              ReplayItem(wav, "pond", later))
    names = [f.path.name for f in archive.scan(tmp_path / "arch" / "pond", "pond")]
    assert names == ["pond-2025-06-01-09-59-57.flac", "pond-2025-06-01-10-04-57.flac"]
    skipped = [v for v in archiver._written.values() if v["covered_by"]]
    assert [v["covered_by"] for v in skipped] == ["pond-2025-06-01-09-59-57.flac"]
