"""detection_events against a real PostgreSQL: runs of windows merged, in any order,
across batches, exactly once, and rebuilt the same."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from bus_schemas.events import Event, Prediction
from projections.migrate import migrate
from projections.store import ProjectionStore, to_datetime
from tests.fixtures_pg import LABELS, prediction

Pool = AsyncConnectionPool[Any]
T0 = 1_750_000_000_000_000_000  # 2025-06-15T15:06:40Z, in ns
LENGTH = 1_000_000_000  # a window: 1 s ...
HOP = 750_000_000  # ... every 0.75 s (overlap 0.25, the classifier's default)


def window(i: int, label: str = "birds", confidence: float = 0.9, **kwargs: Any) -> Prediction:
    """Window ``i`` of the grid, decided ``label`` with that score."""
    scores = [0.01] * len(LABELS)
    if label in LABELS:
        scores[LABELS.index(label)] = confidence
    return prediction(T0 + i * HOP, result=(label,), scores=scores, length_ns=LENGTH, **kwargs)


def numbered(events: Sequence[Event], first_seq: int = 1) -> list[tuple[int, Event]]:
    return list(enumerate(events, start=first_seq))


@dataclass(frozen=True)
class Ev:
    label: str
    first: int  # the first window's index
    last: int  # the last window's index
    windows: int
    channel: int = 0


async def events_of(pool: Pool) -> list[tuple[Any, ...]]:
    """Every column of every event (the generated mean included), in a stable order."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT model_id, model_version, source, channel, label, start_time, end_time,"
            " reach, windows, peak_confidence, confidence_sum, confidence_count,"
            " mean_confidence FROM detection_events"
            " ORDER BY model_id, model_version, source, channel, label, start_time")
        rows: list[tuple[Any, ...]] = await cur.fetchall()
        return rows


async def shapes(pool: Pool) -> list[Ev]:
    """Events as (label, first window, last window, windows), for windows of the grid."""
    found = []
    for row in await events_of(pool):
        start, end = row[5], row[6]
        first = round((start - to_datetime(T0)).total_seconds() * 1e9 / HOP)
        last = round(((end - to_datetime(T0)).total_seconds() * 1e9 - LENGTH) / HOP)
        assert to_datetime(T0 + first * HOP) == start and to_datetime(
            T0 + last * HOP + LENGTH) == end
        found.append(Ev(row[4], first, last, row[8], row[3]))
    return sorted(found, key=lambda e: (e.first, e.label, e.channel))


def reference(predictions: Sequence[Prediction]) -> list[Ev]:
    """The events by the documented rule, computed plainly: a window joins while it
    starts at most one window length after the previous windows' ends."""
    by_key: dict[tuple[Any, ...], list[tuple[int, int]]] = {}
    for p in predictions:
        for label in p.result:
            if label != "unknown":
                key = (p.model_id, p.model_version, p.source, p.channel, label)
                by_key.setdefault(key, []).append((p.window_start_ns, p.window_end_ns))
    found = []
    for key, spans in by_key.items():
        run: list[tuple[int, int]] = []
        for start, end in sorted(set(spans)):
            if run and start > max(e + (e - s) for s, e in run):
                found.append(_ev(key, run))
                run = []
            run.append((start, end))
        found.append(_ev(key, run))
    return sorted(found, key=lambda e: (e.first, e.label, e.channel))


def _ev(key: tuple[Any, ...], run: list[tuple[int, int]]) -> Ev:
    return Ev(key[4], (run[0][0] - T0) // HOP, (max(e for _, e in run) - LENGTH - T0) // HOP,
              len(run), key[3])


# ------------------------------------------------------------------- merging


async def test_a_run_of_windows_is_one_event(pg_pool: Pool) -> None:
    confidences = [0.6, 0.9, 0.7, 0.8]
    await ProjectionStore(pg_pool).apply("main", "EVENTS", numbered(
        [window(i, confidence=c) for i, c in enumerate(confidences)]))

    (row,) = await events_of(pg_pool)
    assert row[:5] == ("selector", "1", "mic", 0, "birds")
    assert (row[5], row[6]) == (to_datetime(T0), to_datetime(T0 + 3 * HOP + LENGTH))
    assert row[8] == 4
    assert row[9] == pytest.approx(0.9)  # peak
    assert row[12] == pytest.approx(sum(confidences) / 4)  # mean


async def test_gaps_labels_and_unknown_split_events(pg_pool: Pool) -> None:
    plan = (["birds"] * 3 + ["unknown"] + ["birds"] * 2  # one window missing: one event
            + ["unknown"] * 2 + ["birds"] * 2  # two missing (2.25 s > 1 s): a new event
            + ["rain", "birds"])  # rain between birds: one rain event, birds goes on
    await ProjectionStore(pg_pool).apply("main", "EVENTS", numbered(
        [window(i, label) for i, label in enumerate(plan)]))

    assert await shapes(pg_pool) == [
        Ev("birds", 0, 5, 5), Ev("birds", 8, 11, 3), Ev("rain", 10, 10, 1)]


async def test_channels_sources_and_models_have_their_own_events(pg_pool: Pool) -> None:
    await ProjectionStore(pg_pool).apply("main", "EVENTS", numbered([
        window(0), window(1, channel=1), window(2, source="pond"), window(3, model_version="2"),
    ]))
    rows = await events_of(pg_pool)
    assert sorted((r[1], r[2], r[3], r[8]) for r in rows) == [
        ("1", "mic", 0, 1), ("1", "mic", 1, 1), ("1", "pond", 0, 1), ("2", "mic", 0, 1)]


async def test_a_label_without_a_score_counts_but_has_no_confidence(pg_pool: Pool) -> None:
    await ProjectionStore(pg_pool).apply("main", "EVENTS", numbered(
        [window(0, "owl"), window(1, "owl")]))
    (row,) = await events_of(pg_pool)
    assert (row[4], row[8], row[9], row[11], row[12]) == ("owl", 2, None, 0, None)


async def test_a_window_extends_an_event_at_either_end(pg_pool: Pool) -> None:
    store = ProjectionStore(pg_pool)
    await store.apply("main", "EVENTS", numbered([window(5), window(6)]))
    await store.apply("main", "EVENTS", numbered([window(7)], first_seq=3))  # after
    assert await shapes(pg_pool) == [Ev("birds", 5, 7, 3)]
    await store.apply("main", "EVENTS", numbered([window(4)], first_seq=4))  # late, before
    assert await shapes(pg_pool) == [Ev("birds", 4, 7, 4)]


async def test_a_late_window_bridges_two_events(pg_pool: Pool) -> None:
    store = ProjectionStore(pg_pool)
    await store.apply("main", "EVENTS", numbered(
        [window(0, confidence=0.5), window(1), window(4), window(5, confidence=0.95)]))
    assert await shapes(pg_pool) == [Ev("birds", 0, 1, 2), Ev("birds", 4, 5, 2)]

    await store.apply("main", "EVENTS", numbered([window(2, confidence=0.6)], first_seq=5))
    (row,) = await events_of(pg_pool)
    assert (row[5], row[6], row[8]) == (to_datetime(T0), to_datetime(T0 + 5 * HOP + LENGTH), 5)
    assert row[9] == pytest.approx(0.95)
    assert row[12] == pytest.approx((0.5 + 0.9 + 0.6 + 0.9 + 0.95) / 5)


async def test_one_batch_can_bridge_many_events(pg_pool: Pool) -> None:
    store = ProjectionStore(pg_pool)
    await store.apply("main", "EVENTS", numbered([window(i) for i in range(0, 30, 3)]))
    assert len(await shapes(pg_pool)) == 10
    await store.apply("main", "EVENTS", numbered(
        [window(i) for i in range(30) if i % 3], first_seq=11))
    assert await shapes(pg_pool) == [Ev("birds", 0, 29, 30)]


@pytest.mark.parametrize("seed", range(4))
async def test_any_order_and_batching_gives_the_same_events(pg_pool: Pool, seed: int) -> None:
    """Two classifier instances: windows shuffled, in batches of random sizes."""
    rng = random.Random(seed)
    plan = [window(i, rng.choice(["birds", "birds", "rain", "unknown"]),
                   confidence=rng.choice([0.5, 0.625, 0.75, 0.875]), channel=rng.randint(0, 1))
            for i in range(120)]
    shuffled = plan[:]
    rng.shuffle(shuffled)
    store = ProjectionStore(pg_pool)
    seq = 1
    while seq <= len(shuffled):
        size = rng.randint(1, 20)
        await store.apply("main", "EVENTS", numbered(shuffled[seq - 1:seq - 1 + size], seq))
        seq += size
    shuffled_rows = await events_of(pg_pool)

    async with pg_pool.connection() as conn:
        await conn.execute("TRUNCATE detections, detection_events, projection_checkpoints")
    await store.apply("main", "EVENTS", numbered(plan))
    assert await events_of(pg_pool) == shuffled_rows  # to the last bit of the mean
    assert await shapes(pg_pool) == reference(plan)


async def test_the_events_match_the_plain_rule(pg_pool: Pool) -> None:
    rng = random.Random(7)
    plan = [window(i, rng.choice(["birds", "birds", "birds", "rain", "unknown"]))
            for i in range(200)]
    order = plan[:]
    rng.shuffle(order)
    store = ProjectionStore(pg_pool)
    for first in range(0, len(order), 25):
        await store.apply("main", "EVENTS", numbered(order[first:first + 25], first + 1))
    assert await shapes(pg_pool) == reference(plan)


# -------------------------------------------------------------- exactly once


async def test_redelivered_windows_change_no_event(pg_pool: Pool) -> None:
    store = ProjectionStore(pg_pool)
    items = numbered([window(i, confidence=0.5 + i / 100) for i in range(10)])
    await store.apply("main", "EVENTS", items)
    before = await events_of(pg_pool)

    again = await store.apply("main", "EVENTS", items)  # ack lost: below the checkpoint
    republished = await store.apply("main", "EVENTS", numbered(  # replayed: new seqs
        [event for _, event in items[3:8]], first_seq=11))

    assert (again.applied, republished.applied, republished.rows) == (0, 5, 0)
    assert await events_of(pg_pool) == before
    assert before[0][8] == 10


async def test_a_failed_batch_leaves_no_event(pg_pool: Pool,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from projections import store as store_module

    async def crash(*args: Any) -> None:
        raise RuntimeError("power cut before the checkpoint")

    store = ProjectionStore(pg_pool)
    await store.apply("main", "EVENTS", numbered([window(0)]))
    monkeypatch.setattr(store_module, "_advance", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        await store.apply("main", "EVENTS", numbered([window(1), window(2)], first_seq=2))
    assert await shapes(pg_pool) == [Ev("birds", 0, 0, 1)]
    monkeypatch.undo()
    await store.apply("main", "EVENTS", numbered([window(1), window(2)], first_seq=2))
    assert await shapes(pg_pool) == [Ev("birds", 0, 2, 3)]


async def test_concurrent_projections_merge_one_at_a_time(pg_pool: Pool) -> None:
    """Two projections writing windows of the same key at once (the advisory lock)."""
    plan = [window(i) for i in range(80)]

    async def project(name: str, parity: int) -> None:
        store = ProjectionStore(pg_pool)
        mine = [p for i, p in enumerate(plan) if i % 2 == parity]
        for first in range(0, len(mine), 4):
            await store.apply(name, "EVENTS", numbered(mine[first:first + 4], first + 1))

    await asyncio.gather(project("a", 0), project("b", 1))
    assert await shapes(pg_pool) == [Ev("birds", 0, 79, 80)]


# -------------------------------------------------------------------- rebuild


async def test_a_rebuild_gives_the_same_events(pg_pool: Pool) -> None:
    rng = random.Random(3)
    plan = [window(i, rng.choice(["birds", "rain", "unknown"]), confidence=rng.random())
            for i in range(60)]
    store = ProjectionStore(pg_pool)
    for first in range(0, 60, 7):
        await store.apply("main", "EVENTS", numbered(plan[first:first + 7], first + 1))
    built = await events_of(pg_pool)

    reset = await store.reset("main")
    assert "detection_events" in reset.tables
    assert await events_of(pg_pool) == []
    await store.apply("main", "EVENTS", numbered(plan))  # the replay, in one batch
    assert await events_of(pg_pool) == built


async def test_a_checkpoint_from_before_the_events_still_resets_them(pg_pool: Pool) -> None:
    store = ProjectionStore(pg_pool)
    await store.apply("main", "EVENTS", numbered([window(0)]))
    async with pg_pool.connection() as conn:
        await conn.execute("UPDATE projection_checkpoints"
                           " SET tables = array_remove(tables, 'detection_events')")
    assert "detection_events" in (await store.reset("main")).tables
    assert await events_of(pg_pool) == []


async def test_the_migration_builds_the_events_of_earlier_detections(pg_dsn: str,
                                                                     pg_pool: Pool) -> None:
    rng = random.Random(5)
    plan = [window(i, rng.choice(["birds", "rain", "unknown"]), confidence=rng.random(),
                   channel=i % 2) for i in range(90)]
    await ProjectionStore(pg_pool).apply("main", "EVENTS", numbered(plan))
    merged = await events_of(pg_pool)
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        await conn.execute("DROP TABLE detection_events")  # as before migration 0005
        await conn.execute("DELETE FROM schema_migrations WHERE version = '0005_detection_events'")
        await conn.commit()
        assert await migrate(conn) == ["0005_detection_events"]
    assert await events_of(pg_pool) == merged
