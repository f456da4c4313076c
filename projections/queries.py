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
    window_end: datetime


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


@dataclass(frozen=True)
class EventRow:
    """A run of windows of one (model, source, channel) with one decided label."""

    start: datetime  # the first window's start (UTC)
    end: datetime  # the last window's end
    source: str
    channel: int
    label: str
    windows: int
    peak_confidence: float | None  # None if no window's vector had the label
    mean_confidence: float | None
    model_id: str
    model_version: str


def _where(*filters: tuple[str, str, Any]) -> tuple[sql.Composable, list[Any]]:
    """`` WHERE column op %s AND …`` for the (column, op, value) whose value is not None."""
    clauses: list[sql.Composable] = []
    params: list[Any] = []
    for column, op, value in filters:
        if value is not None:
            clauses.append(sql.SQL("{} {} %s").format(sql.Identifier(column), sql.SQL(op)))
            params.append(value)
    if not clauses:
        return sql.SQL(""), params
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(clauses), params


def _detection_filters(source: str | None, channel: int | None, label: str | None,
                       since: datetime | None, until: datetime | None,
                       ) -> tuple[sql.Composable, list[Any]]:
    return _where(("source", "=", source), ("channel", "=", channel), ("label", "=", label),
                  ("time", ">=", since), ("time", "<", until))


def _event_filters(source: str | None, channel: int | None, label: str | None,
                   since: datetime | None, until: datetime | None, min_windows: int | None,
                   ) -> tuple[sql.Composable, list[Any]]:
    # an event overlapping [since, until) counts, even if it began before ``since``
    return _where(("source", "=", source), ("channel", "=", channel), ("label", "=", label),
                  ("end_time", ">", since), ("start_time", "<", until),
                  ("windows", ">=", min_windows))


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")


async def _count(conn: AsyncConnection[Any], table: str, where: sql.Composable,
                 params: list[Any], at_most: int | None) -> int:
    """Rows of ``table`` matching ``where``; stops counting at ``at_most``."""
    if at_most is None:
        query = sql.SQL("SELECT count(*) FROM {}{}").format(sql.Identifier(table), where)
    else:
        query = sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {}{} LIMIT %s) matched").format(
            sql.Identifier(table), where)
        params = [*params, at_most]
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    return int(row[0]) if row is not None else 0


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
    _check_limit(limit)
    where, params = _detection_filters(source, channel, label, since, until)
    order = sql.SQL("DESC" if newest_first else "ASC")
    query = sql.SQL(
        "SELECT time, source, channel, label, confidence, model_id, model_version, window_end"
        " FROM detections{where} ORDER BY time {order}, source, channel, label LIMIT %s"
    ).format(where=where, order=order)
    async with conn.cursor(row_factory=class_row(DetectionRow)) as cur:
        await cur.execute(query, [*params, limit])
        return await cur.fetchall()


async def count_detections(
    conn: AsyncConnection[Any],
    *,
    source: str | None = None,
    channel: int | None = None,
    label: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    at_most: int | None = None,
) -> int:
    """How many detections ``detections`` would return without a limit (at most ``at_most``:
    counting billions of rows takes minutes)."""
    where, params = _detection_filters(source, channel, label, since, until)
    return await _count(conn, "detections", where, params, at_most)


async def detection_events(
    conn: AsyncConnection[Any],
    *,
    source: str | None = None,
    channel: int | None = None,
    label: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    min_windows: int | None = None,
    limit: int = 1000,
    newest_first: bool = False,
) -> list[EventRow]:
    """Events matching every given filter that overlap ``[since, until)``, by start time."""
    _check_limit(limit)
    where, params = _event_filters(source, channel, label, since, until, min_windows)
    order = sql.SQL("DESC" if newest_first else "ASC")
    query = sql.SQL(
        "SELECT start_time AS start, end_time AS end, source, channel, label, windows,"
        " peak_confidence, mean_confidence, model_id, model_version"
        " FROM detection_events{where}"
        " ORDER BY start_time {order}, source, channel, label, model_id, model_version LIMIT %s"
    ).format(where=where, order=order)
    async with conn.cursor(row_factory=class_row(EventRow)) as cur:
        await cur.execute(query, [*params, limit])
        return await cur.fetchall()


async def count_detection_events(
    conn: AsyncConnection[Any],
    *,
    source: str | None = None,
    channel: int | None = None,
    label: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    min_windows: int | None = None,
    at_most: int | None = None,
) -> int:
    """How many events ``detection_events`` would return without a limit (at most
    ``at_most``)."""
    where, params = _event_filters(source, channel, label, since, until, min_windows)
    return await _count(conn, "detection_events", where, params, at_most)


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
        result[table] = estimate if estimate is not None else await _count_all(conn, table)
    return result


async def _count_all(conn: AsyncConnection[Any], table: str) -> int:
    return await _count(conn, table, sql.SQL(""), [], None)


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
