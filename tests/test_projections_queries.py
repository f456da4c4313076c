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
                       "sources": 1, "models": 1, "projection_checkpoints": 2}


async def test_estimated_counts(filled: Pool) -> None:
    async with filled.connection() as conn:
        await conn.execute("ANALYZE detections, predictions")
        tallies = await queries.counts(conn, exact=False)
    assert tallies["detections"] == 12 and tallies["predictions"] == 12
    assert tallies["sources"] == 1
