"""Read-side queries over the projection tables (``tidzam_ctl query``, status, gateway)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import class_row

from projections.migrate import flavour_of
from projections.store import PROJECTED_TABLES

_TIME_SERIES = ("detections", "predictions")


@dataclass(frozen=True)
class DetectionRow:
    time: datetime  # window start (UTC)
    source: str
    channel: int
    label: str
    confidence: float | None  # the label's score; None if absent from the score vector
    model_id: str
    model_version: str


@dataclass(frozen=True)
class SourceRow:
    name: str
    kind: str | None
    location: str | None
    channels: list[int] | None
    sample_rate: int | None
    permanent: bool
    state: str  # requested | loaded | failed | unloaded | removed
    since: datetime
    last_error: str | None
    attempts: int
    updated_at: datetime
    database: str | None = None
    start_date: datetime | None = None
    wanted: bool = True


@dataclass(frozen=True)
class CheckpointRow:
    projection: str
    stream: str
    last_seq: int
    updated_at: datetime


async def detections(
    conn: AsyncConnection[Any],
    *,
    source: str | None = None,
    channel: int | None = None,
    label: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 1000,
    newest_first: bool = False,
) -> list[DetectionRow]:
    """Detections matching every given filter, ``since <= time < until``, ordered by time."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    filters: list[sql.Composable] = []
    params: list[Any] = []
    for column, op, value in (("source", "=", source), ("channel", "=", channel),
                              ("label", "=", label), ("time", ">=", since),
                              ("time", "<", until)):
        if value is not None:
            filters.append(sql.SQL("{} {} %s").format(sql.Identifier(column), sql.SQL(op)))
            params.append(value)
    where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(filters) if filters else sql.SQL("")
    order = sql.SQL("DESC" if newest_first else "ASC")
    query = sql.SQL(
        "SELECT time, source, channel, label, confidence, model_id, model_version"
        " FROM detections{where} ORDER BY time {order}, source, channel, label LIMIT %s"
    ).format(where=where, order=order)
    async with conn.cursor(row_factory=class_row(DetectionRow)) as cur:
        await cur.execute(query, [*params, limit])
        return await cur.fetchall()


async def sources(conn: AsyncConnection[Any]) -> list[SourceRow]:
    """Every source ever seen, by name."""
    async with conn.cursor(row_factory=class_row(SourceRow)) as cur:
        await cur.execute(
            "SELECT name, kind, location, channels, sample_rate, permanent, state, since,"
            " last_error, attempts, updated_at, database, start_date, wanted"
            " FROM sources ORDER BY name"
        )
        return await cur.fetchall()


async def checkpoints(conn: AsyncConnection[Any]) -> list[CheckpointRow]:
    """Where each projection stands in each stream."""
    async with conn.cursor(row_factory=class_row(CheckpointRow)) as cur:
        await cur.execute(
            "SELECT projection, stream, last_seq, updated_at FROM projection_checkpoints"
            " ORDER BY projection, stream"
        )
        return await cur.fetchall()


async def counts(conn: AsyncConnection[Any], *, exact: bool = True) -> dict[str, int]:
    """Rows per projected table (and checkpoints).

    ``exact=False`` reads the planner's estimates for the time series, which costs
    nothing on billions of rows; a table never analysed is counted exactly.
    """
    result: dict[str, int] = {}
    timescale = not exact and await flavour_of(conn) == "timescale"
    for table in (*PROJECTED_TABLES, "projection_checkpoints"):
        estimate = None
        if not exact and table in _TIME_SERIES:
            estimate = await _estimate(conn, table, timescale)
        result[table] = estimate if estimate is not None else await _count(conn, table)
    return result


async def _count(conn: AsyncConnection[Any], table: str) -> int:
    cur = await conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
    row = await cur.fetchone()
    return int(row[0]) if row is not None else 0


async def _estimate(conn: AsyncConnection[Any], table: str, timescale: bool) -> int | None:
    if timescale:  # chunks' own statistics miss the rows compressed away
        cur = await conn.execute("SELECT approximate_row_count(%s::regclass)", (table,))
    else:  # a partitioned parent holds no rows: add up its partitions
        cur = await conn.execute(
            "SELECT CASE WHEN bool_or(c.reltuples < 0) THEN NULL"
            " ELSE sum(c.reltuples)::bigint END"
            " FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = %s::regclass",
            (table,),
        )
    row = await cur.fetchone()
    return int(row[0]) if row is not None and row[0] is not None else None


async def decisions(conn: AsyncConnection[Any], source: str) -> dict[str, int]:
    """How many windows of a source got each decision (``unknown`` included)."""
    cur = await conn.execute(
        "SELECT result[1] AS decision, count(*) FROM predictions WHERE source = %s "
        "GROUP BY 1 ORDER BY 2 DESC", (source,))
    return {str(label): int(n) for label, n in await cur.fetchall()}
