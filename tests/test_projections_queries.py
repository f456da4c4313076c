"""projections.queries against a real PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from bus_schemas.events import Event, SourceLoaded
from projections import queries
from projections.store import ProjectionStore, to_datetime
from tests.fixtures_pg import prediction

Pool = AsyncConnectionPool[Any]
T0 = 1_750_000_000_000_000_000
S = 1_000_000_000


@pytest.fixture
async def filled(pg_pool: Pool) -> Pool:
    """12 windows: sources a/b, channels 0/1, labels birds/rain/wind, one second apart."""
    labels = ("birds", "rain", "wind")
    items: list[tuple[int, Event]] = [
        (i + 1, prediction(T0 + i * S, source="ab"[i % 2], channel=(i // 2) % 2,
                           result=(labels[i % 3],)))
        for i in range(12)
    ]
    store = ProjectionStore(pg_pool)
    await store.apply("main", "EVENTS", items)
    await store.apply("main", "CONTROL", [(1, SourceLoaded(
        source="a", kind="file", location="/x.wav", channels=(0, 1), sample_rate=48_000,
        at_ns=T0))])
    return pg_pool


async def detections(pool: Pool, **filters: Any) -> list[queries.DetectionRow]:
    async with pool.connection() as conn:
        return await queries.detections(conn, **filters)


async def test_all_detections_in_time_order(filled: Pool) -> None:
    rows = await detections(filled)
    assert [r.time for r in rows] == [to_datetime(T0 + i * S) for i in range(12)]
    first = rows[0]
    assert (first.source, first.channel, first.label, first.model_id, first.model_version) == (
        "a", 0, "birds", "selector", "1")
    assert first.confidence == pytest.approx(0.9)


@pytest.mark.parametrize(("filters", "expected"), [
    ({"source": "a"}, [0, 2, 4, 6, 8, 10]),
    ({"source": "b", "channel": 1}, [3, 7, 11]),
    ({"label": "rain"}, [1, 4, 7, 10]),
    ({"label": "rain", "source": "a"}, [4, 10]),
    ({"since": to_datetime(T0 + 9 * S)}, [9, 10, 11]),
    ({"until": to_datetime(T0 + 2 * S)}, [0, 1]),
    ({"since": to_datetime(T0 + 3 * S), "until": to_datetime(T0 + 6 * S)}, [3, 4, 5]),
    ({"limit": 2}, [0, 1]),
    ({"limit": 2, "newest_first": True}, [11, 10]),
    ({"source": "nowhere"}, []),
])
async def test_detection_filters(filled: Pool, filters: dict[str, Any],
                                 expected: list[int]) -> None:
    rows = await detections(filled, **filters)
    assert [r.time for r in rows] == [to_datetime(T0 + i * S) for i in expected]


async def test_a_limit_below_one_is_refused(filled: Pool) -> None:
    with pytest.raises(ValueError, match="limit"):
        await detections(filled, limit=0)


async def test_sources(filled: Pool) -> None:
    async with filled.connection() as conn:
        (row,) = await queries.sources(conn)
    assert (row.name, row.kind, row.channels, row.state, row.since) == (
        "a", "file", [0, 1], "loaded", to_datetime(T0))


async def test_checkpoints(filled: Pool) -> None:
    async with filled.connection() as conn:
        rows = await queries.checkpoints(conn)
    assert [(r.projection, r.stream, r.last_seq) for r in rows] == [
        ("main", "CONTROL", 1), ("main", "EVENTS", 12)]


async def test_exact_counts(filled: Pool) -> None:
    async with filled.connection() as conn:
        tallies = await queries.counts(conn)
    assert tallies == {"detections": 12, "detection_events": 12, "predictions": 12,
                       "sources": 1, "models": 1, "projection_checkpoints": 2,
                       "channel_health": 0, "samples": 0, "mixer_log": 0}


async def test_estimated_counts(filled: Pool) -> None:
    async with filled.connection() as conn:
        await conn.execute("ANALYZE detections, predictions")
        tallies = await queries.counts(conn, exact=False)
    assert tallies["detections"] == 12 and tallies["predictions"] == 12
    assert tallies["sources"] == 1


@pytest.mark.parametrize("filters", [
    {}, {"source": "a"}, {"source": "b", "channel": 1}, {"label": "rain", "source": "a"},
    {"since": to_datetime(T0 + 3 * S), "until": to_datetime(T0 + 6 * S)}, {"source": "nowhere"},
])
async def test_detection_counts_match_the_rows(filled: Pool, filters: dict[str, Any]) -> None:
    async with filled.connection() as conn:
        rows = await queries.detections(conn, limit=1000, **filters)
        assert await queries.count_detections(conn, **filters) == len(rows)
        assert await queries.count_detections(conn, at_most=2, **filters) == min(2, len(rows))


# -------------------------------------------------------------------- events

HALF = S // 2


@pytest.fixture
async def eventful(pg_pool: Pool) -> Pool:
    """Half-second windows, back to back. a/0: birds 0-9, rain 10-12, birds 13-14 (a
    second after the first run ended: a new event); b/1: birds 0-2."""
    plan = ["birds"] * 10 + ["rain"] * 3 + ["birds"] * 2
    events: list[Event] = [
        prediction(T0 + i * HALF, source="a", result=(label,),
                   scores=(0.5 + i / 100, 0.8, 0.0, 0.0, 0.0))
        for i, label in enumerate(plan)]
    events += [prediction(T0 + i * HALF, source="b", channel=1) for i in range(3)]
    await ProjectionStore(pg_pool).apply("main", "EVENTS", list(enumerate(events, start=1)))
    return pg_pool


A_BIRDS, B_BIRDS, A_RAIN, A_BIRDS_AGAIN = ("a", "birds", 0), ("b", "birds", 0), (
    "a", "rain", 10), ("a", "birds", 13)


async def events(pool: Pool, **filters: Any) -> list[tuple[str, str, int]]:
    """(source, label, first window) of the events found, checking the count agrees."""
    async with pool.connection() as conn:
        rows = await queries.detection_events(conn, **filters)
        counted = {k: v for k, v in filters.items() if k not in ("limit", "newest_first")}
        total = await queries.count_detection_events(conn, **counted)
    assert total >= len(rows) and (total == len(rows) or len(rows) == filters.get("limit"))
    return [(r.source, r.label, (r.start - to_datetime(T0)) // (to_datetime(T0 + HALF)
                                                                  - to_datetime(T0)))
            for r in rows]


async def test_events_in_start_order(eventful: Pool) -> None:
    async with eventful.connection() as conn:
        rows = await queries.detection_events(conn)
    assert [(r.source, r.channel, r.label, r.windows) for r in rows] == [
        ("a", 0, "birds", 10), ("b", 1, "birds", 3), ("a", 0, "rain", 3), ("a", 0, "birds", 2)]
    first = rows[0]
    assert (first.start, first.end) == (to_datetime(T0), to_datetime(T0 + 10 * HALF))
    assert first.peak_confidence == pytest.approx(0.59)
    assert first.mean_confidence == pytest.approx(0.545)
    assert (first.model_id, first.model_version) == ("selector", "1")
    assert rows[2].peak_confidence == pytest.approx(0.8)  # rain's score


@pytest.mark.parametrize(("filters", "expected"), [
    ({"source": "a"}, [A_BIRDS, A_RAIN, A_BIRDS_AGAIN]),
    ({"channel": 1}, [B_BIRDS]),
    ({"label": "rain"}, [A_RAIN]),
    ({"source": "a", "label": "birds"}, [A_BIRDS, A_BIRDS_AGAIN]),
    # overlapping [since, until): the first run ends at 5 s, rain runs 5-6.5 s
    ({"since": to_datetime(T0 + 5 * S + HALF // 2)}, [A_RAIN, A_BIRDS_AGAIN]),
    ({"since": to_datetime(T0 + 5 * S)}, [A_RAIN, A_BIRDS_AGAIN]),
    ({"until": to_datetime(T0 + 5 * S)}, [A_BIRDS, B_BIRDS]),
    ({"since": to_datetime(T0 + S), "until": to_datetime(T0 + 2 * S)}, [A_BIRDS, B_BIRDS]),
    ({"min_windows": 3}, [A_BIRDS, B_BIRDS, A_RAIN]),
    ({"limit": 2}, [A_BIRDS, B_BIRDS]),
    ({"limit": 1, "newest_first": True}, [A_BIRDS_AGAIN]),
    ({"source": "nowhere"}, []),
])
async def test_event_filters(eventful: Pool, filters: dict[str, Any],
                             expected: list[tuple[str, str, int]]) -> None:
    assert await events(eventful, **filters) == expected


async def test_event_counts(eventful: Pool) -> None:
    async with eventful.connection() as conn:
        assert await queries.count_detection_events(conn) == 4
        assert await queries.count_detection_events(conn, source="a", min_windows=3) == 2
        assert await queries.count_detection_events(conn, at_most=3) == 3
        with pytest.raises(ValueError, match="limit"):
            await queries.detection_events(conn, limit=0)
