"""Exactly-once projection and classification in the situations a review found risky:
messages left unacked by a killed projector while newer ones arrive, transient database
failures in the middle of a stream, chunks shorter than a window, sessions of one source
whose times overlap."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from psycopg_pool import AsyncConnectionPool

from bus.publisher import Publisher
from bus.runner import ConsumerRunner, Delivery, Outcome, TransientError
from bus_schemas import Prediction
from bus_schemas.streams import EVENTS, projection_consumer
from producers.replay import Replayer, ReplayItem, plan
from projections.service import handler_for
from projections.store import ProjectionStore
from tests.audio_files import expected_windows, write_wav
from tests.bus_reading import read_predictions
from tests.fixtures_pg import prediction
from tests.test_classifier import _classify
from tests.waiting import wait_until

SPEC = projection_consumer("t", EVENTS, ("tidzam.pred.>",))
SEC = 1_000_000_000


async def _rows(pool: AsyncConnectionPool[Any]) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM predictions")
        row = await cur.fetchone()
        return int(row[0]) if row else 0


async def _run_until_rows(runner: ConsumerRunner, pool: AsyncConnectionPool[Any],
                          rows: int) -> None:
    """Run ``runner`` until the predictions table holds ``rows`` rows."""
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))

    async def done() -> bool:
        return await _rows(pool) == rows
    try:
        await wait_until(done, 20, f"{rows} prediction rows")
    finally:
        stop.set()
        await task


async def test_a_killed_projectors_unacked_batch_is_not_overtaken(
        nc: Client, pg_pool: AsyncConnectionPool[Any]) -> None:
    pub = Publisher(nc.jetstream())
    store = ProjectionStore(pg_pool)
    await pub.publish_all([prediction(i * SEC) for i in range(50)])
    hung = asyncio.Event()

    async def dies_before_commit(ds: Sequence[Delivery]) -> list[Outcome]:
        hung.set()
        await asyncio.sleep(3600)  # "kill -9": never commits, never acks
        raise AssertionError

    first = ConsumerRunner(nc, SPEC, dies_before_commit, ordered=True,
                           start_after=await store.checkpoint("main", "EVENTS"))
    task = asyncio.create_task(first.run(asyncio.Event()))
    await asyncio.wait_for(hung.wait(), 10)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await pub.publish_all([prediction(i * SEC) for i in range(50, 60)])  # traffic goes on
    second = ConsumerRunner(nc, SPEC, handler_for(store, "EVENTS"), ordered=True,
                            start_after=await store.checkpoint("main", "EVENTS"))
    await _run_until_rows(second, pg_pool, 60)


async def test_transient_failures_mid_stream_keep_order_and_lose_nothing(
        nc: Client, pg_pool: AsyncConnectionPool[Any]) -> None:
    pub = Publisher(nc.jetstream())
    store = ProjectionStore(pg_pool)
    apply = handler_for(store, "EVENTS")
    committed: list[int] = []
    failures = iter([True, True, False])

    async def flaky(ds: Sequence[Delivery]) -> Sequence[Outcome]:
        if next(failures, False):
            await pub.publish_all([prediction(i * SEC) for i in range(50, 60)])
            raise TransientError("database restarting")
        out = await apply(ds)
        committed.extend(d.stream_seq for d in ds)
        return out

    await pub.publish_all([prediction(i * SEC) for i in range(50)])
    runner = ConsumerRunner(nc, SPEC, flaky, ordered=True, start_after=0)
    await _run_until_rows(runner, pg_pool, 60)
    assert committed == sorted(committed) and len(set(committed)) == 60
    assert runner.stats.retries == 2 and runner.stats.dead_lettered == 0


async def test_the_consumer_keeps_its_ack_wait(nc: Client) -> None:
    async def ok(ds: Sequence[Delivery]) -> list[Outcome]:
        return []

    runner = ConsumerRunner(nc, SPEC, ok, ordered=True, start_after=0)
    await runner.ensure_consumer()
    info = await nc.jetstream().consumer_info(SPEC.stream, SPEC.durable)
    assert info.config.ack_wait == SPEC.ack_wait_s  # no backoff overriding it
    assert not info.config.backoff


async def test_chunks_shorter_than_a_window(nc: Client, tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "short.wav", seconds=5.1, channels=1)
    await Replayer(Publisher(nc.jetstream()), chunk_s=0.2).replay(plan([wav], source="s"))
    expected = expected_windows(int(5.1 * 48_000), 24_000, 18_000)
    await _classify(nc, instances=1, expected=expected, overlap=0.25)
    starts = sorted(p.window_start_ns for p in await read_predictions(nc))
    assert len(starts) == len(set(starts)) == expected


async def test_overlapping_sessions_of_one_source_are_all_kept(nc: Client,
                                                               tmp_path: Path) -> None:
    """Two 10.3 s files of one source, the second starting 10.0 s after the first: their
    times overlap, yet every chunk of both is stored and classified (ids are per session).
    The same file replayed from the same start is the same session: stored once."""
    a = write_wav(tmp_path / "a.wav", seconds=10.3, seed=1)
    b = write_wav(tmp_path / "b.wav", seconds=10.3, seed=2)
    pub = Publisher(nc.jetstream())
    replayer = Replayer(pub, chunk_s=1.0)
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    await replayer.replay([ReplayItem(a, "m", t0), ReplayItem(b, "m", t0 + timedelta(seconds=10))])
    await replayer.replay([ReplayItem(a, "m", t0)])  # a replay: nothing new
    info = await nc.jetstream().stream_info("AUDIO")
    assert info.state.messages == 2 * 11 and pub.duplicates == 2 * 11  # chunks and health
    per_file = expected_windows(int(10.3 * 48_000), 24_000, 18_000)
    await _classify(nc, instances=1, expected=2 * per_file, overlap=0.25)
    predictions: list[Prediction] = await read_predictions(nc)
    assert len({p.window_start_ns for p in predictions}) == 2 * per_file


async def test_a_value_the_database_refuses_is_dead_lettered_at_once(
        nc: Client, pg_pool: AsyncConnectionPool[Any]) -> None:
    """A NUL byte PostgreSQL cannot store is poison, not a transient failure: that one
    message goes to the DLQ at once with the reason, and what follows is projected in
    seconds (it used to retry 20 times, stalling the projection for 442 s)."""
    from bus_schemas import SourceFailed
    from bus_schemas.streams import CONTROL, DLQ_REASON

    spec = projection_consumer("t", CONTROL, ("tidzam.ctl.>",))
    store = ProjectionStore(pg_pool)
    pub = Publisher(nc.jetstream())
    await pub.publish_all([
        SourceFailed(source="good1", reason="http 404", at_ns=SEC),
        SourceFailed(source="bad", reason="broken\x00pipe", at_ns=2 * SEC),
        SourceFailed(source="good2", reason="http 500", at_ns=3 * SEC),
    ])
    runner = ConsumerRunner(nc, spec, handler_for(store, "CONTROL"), ordered=True,
                            poison_after=20, start_after=0)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))

    async def sources() -> set[str]:
        async with pg_pool.connection() as conn:
            cur = await conn.execute("SELECT name FROM sources")
            return {str(row[0]) for row in await cur.fetchall()}

    async def projected() -> bool:
        return await sources() == {"good1", "good2"}
    t0 = asyncio.get_running_loop().time()
    try:
        await wait_until(projected, 10, "both good sources projected")
    finally:
        stop.set()
        await task
    assert asyncio.get_running_loop().time() - t0 < 5  # no backoff: 20 tries took 442 s
    assert runner.stats.retries == 0
    sub = await nc.jetstream().pull_subscribe("tidzam.dlq.>", stream="DLQ")
    dead = await sub.fetch(5, timeout=2)
    assert [m.subject for m in dead] == ["tidzam.dlq.ctl.source.bad"]
    assert dead[0].headers is not None
    assert "cannot succeed: PostgreSQL refused it" in dead[0].headers[DLQ_REASON]
