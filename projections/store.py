"""Writing events into the projection tables, exactly once, with their checkpoint.

Commit order of ``ProjectionStore.apply`` (one transaction):

1. lock the checkpoint row of (projection, stream) ``FOR UPDATE``;
2. drop the items at or before it: they were committed, only their ack was lost;
3. write the rows of the rest (bulk: binary COPY into temp tables, then
   ``INSERT … ON CONFLICT DO NOTHING`` on the natural keys), and merge the
   detections inserted now, and only those, into ``detection_events`` (``events.py``);
4. move the checkpoint to the highest sequence (a trigger refuses backwards moves);
5. commit, and only then may the caller ack the messages.

A crash anywhere before 5 leaves neither rows nor checkpoint; redelivery re-applies.
Events this store does not project still advance the checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection, AsyncCursor
from psycopg_pool import AsyncConnectionPool

from bus_schemas.errors import TidzamError
from bus_schemas.events import (
    ChannelHealth,
    Event,
    Prediction,
)
from projections import copy_binary as cb
from projections import events as detection_events
from projections.statements import statement_for
from projections.times import to_datetime

log = logging.getLogger(__name__)

PROJECTED_TABLES = ("detections", "detection_events", "predictions", "sources", "models",
                    "channel_health", "samples", "mixer_log")
# tables built from another's rows: truncated with it, or a replay would merge twice
_DERIVED = {"detections": ("detection_events",)}
UNKNOWN = "unknown"

_PRED_COLS = "time, end_time, source, channel, model_id, model_version, scores, result"
_PRED_TYPES: list[cb.Encoder] = [
    cb.timestamptz, cb.timestamptz, cb.text, cb.int4, cb.text, cb.text, cb.float4_array,
    cb.text_array]
_DET_COLS = "time, source, channel, label, confidence, model_id, model_version, window_end"
_DET_TYPES: list[cb.Encoder] = [
    cb.timestamptz, cb.text, cb.int4, cb.text, cb.float4, cb.text, cb.text, cb.timestamptz]
_HEALTH_COLS = ("time, end_time, source, channel, rms_dbfs, peak_dbfs, clip_ratio,"
                " noise_floor_dbfs, dc_offset, hum_db, hum_hz, dead")
_HEALTH_TYPES: list[cb.Encoder] = [
    cb.timestamptz, cb.timestamptz, cb.text, cb.int4, cb.float4, cb.float4, cb.float4,
    cb.float4, cb.float4, cb.float4, cb.int2, cb.boolean]


class CheckpointError(TidzamError, RuntimeError):
    """A checkpoint would move backwards, or a sequence number is invalid."""


@dataclass(frozen=True)
class ApplyResult:
    applied: int  # items after the checkpoint (projected or not)
    skipped: int  # items at or before it: already committed
    rows: int  # rows inserted or updated
    checkpoint: int  # the checkpoint after the call


@dataclass(frozen=True)
class ResetResult:
    tables: tuple[str, ...]  # truncated
    projections: tuple[str, ...]  # whose checkpoints were deleted: replay them from seq 1


def _month(ns: int) -> datetime:
    moment = to_datetime(ns)
    return datetime(moment.year, moment.month, 1, tzinfo=UTC)


def unique_by_seq(items: Iterable[tuple[int, Event]]) -> list[tuple[int, Event]]:
    """Items sorted by stream sequence, each sequence once (a redelivery may repeat one)."""
    by_seq: dict[int, Event] = {}
    for seq, event in items:
        if seq < 1:
            raise CheckpointError(f"stream sequences start at 1, got {seq}")
        by_seq.setdefault(seq, event)
    return sorted(by_seq.items())


# --------------------------------------------------------------------- rows


def prediction_row(event: Prediction) -> tuple[Any, ...]:
    """A ``predictions`` row, columns as ``_PRED_COLS`` (times in ns)."""
    return (
        event.window_start_ns, event.window_end_ns, event.source, event.channel,
        event.model_id, event.model_version, event.scores, event.result,
    )


def detection_rows(event: Prediction) -> list[tuple[Any, ...]]:
    """One ``detections`` row per decided label except ``unknown``; columns as ``_DET_COLS``
    (times in ns).

    The confidence is the label's score, NULL if the label is not in the score vector.
    """
    start, end = event.window_start_ns, event.window_end_ns
    rows: list[tuple[Any, ...]] = []
    for label in dict.fromkeys(event.result):
        if label == UNKNOWN:
            continue
        confidence = event.score_of(label) if label in event.labels else None
        rows.append((start, event.source, event.channel, label, confidence,
                     event.model_id, event.model_version, end))
    return rows


def health_row(event: ChannelHealth) -> tuple[Any, ...]:
    """A ``channel_health`` row, columns as ``_HEALTH_COLS`` (times in ns)."""
    return (event.start_ns, event.end_ns, event.source,
            event.channel, event.rms_dbfs, event.peak_dbfs, event.clip_ratio,
            event.noise_floor_dbfs, event.dc_offset, event.hum_db, event.hum_hz, event.dead)


# ------------------------------------------------------------------- writers

_TEMP_TABLES = """
CREATE TEMP TABLE IF NOT EXISTS tidzam_predictions_in (LIKE predictions INCLUDING DEFAULTS)
    ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS tidzam_detections_in (LIKE detections) ON COMMIT DELETE ROWS;
""" + detection_events.CREATE_FRESH

# only the detections inserted now go on to the events: a redelivered one changes none
_INSERT_DETECTIONS = f"""
WITH inserted AS (
    INSERT INTO detections ({_DET_COLS}) SELECT {_DET_COLS} FROM tidzam_detections_in
        ON CONFLICT DO NOTHING RETURNING {_DET_COLS}
)
INSERT INTO {detection_events.FRESH} ({_DET_COLS}) SELECT {_DET_COLS} FROM inserted
"""


async def _write_predictions(cur: AsyncCursor[Any], events: Sequence[Prediction]) -> int:
    """Bulk insert; a row already there (same natural key) is left alone."""
    await cur.execute(_TEMP_TABLES)
    await cb.copy_rows(cur, "tidzam_predictions_in", _PRED_COLS, _PRED_TYPES,
                (prediction_row(e) for e in events))
    await cb.copy_rows(cur, "tidzam_detections_in", _DET_COLS, _DET_TYPES,
                (row for e in events for row in detection_rows(e)))
    await cur.execute(f"INSERT INTO predictions ({_PRED_COLS}) SELECT {_PRED_COLS}"
                      " FROM tidzam_predictions_in ON CONFLICT DO NOTHING")
    written = max(cur.rowcount, 0)
    await cur.execute(_INSERT_DETECTIONS)
    fresh = max(cur.rowcount, 0)
    if fresh:
        written += fresh + await detection_events.merge_fresh(cur)
    return written + await _register_models(cur, events)


async def _write_health(cur: AsyncCursor[Any], events: Sequence[ChannelHealth]) -> int:
    """Bulk insert; an interval already there (same source, channel, start) is left alone."""
    await cur.execute("CREATE TEMP TABLE IF NOT EXISTS tidzam_health_in (LIKE channel_health)"
                      " ON COMMIT DELETE ROWS")
    await cb.copy_rows(cur, "tidzam_health_in", _HEALTH_COLS, _HEALTH_TYPES,
                (health_row(e) for e in events))
    await cur.execute(f"INSERT INTO channel_health ({_HEALTH_COLS}) SELECT {_HEALTH_COLS}"
                      " FROM tidzam_health_in ON CONFLICT DO NOTHING")
    return max(cur.rowcount, 0)


async def _register_models(cur: AsyncCursor[Any], events: Sequence[Prediction]) -> int:
    """Record each model's label order (the order of ``scores``) unless already known."""
    models: dict[tuple[str, str], list[str]] = {}
    for e in events:
        if (e.model_id, e.model_version) not in models:
            models[e.model_id, e.model_version] = list(e.labels)
    await cur.executemany(
        "INSERT INTO models (model_id, version, labels) VALUES (%s, %s, %s)"
        " ON CONFLICT DO NOTHING",
        [(model_id, version, labels) for (model_id, version), labels in models.items()],
    )
    return max(cur.rowcount, 0)


async def write_events(cur: AsyncCursor[Any], events: Sequence[Event]) -> tuple[int, set[str]]:
    """Write the rows of ``events`` (in the caller's transaction): (rows, tables touched)."""
    rows, tables = 0, set[str]()
    predictions = [e for e in events if isinstance(e, Prediction)]
    if predictions:
        rows += await _write_predictions(cur, predictions)
        tables |= {"predictions", "detections", "detection_events", "models"}
    health = [e for e in events if isinstance(e, ChannelHealth)]
    if health:
        rows += await _write_health(cur, health)
        tables.add("channel_health")
    for event in events:  # in stream order: a source's lifecycle is order-dependent
        statement = statement_for(event)
        if statement is not None:
            table, query, params = statement
            await cur.execute(query, params)
            rows += max(cur.rowcount, 0)
            tables.add(table)
    return rows, tables


# ------------------------------------------------------------------ the store

_LOCK = (
    "SELECT last_seq FROM projection_checkpoints WHERE projection = %s AND stream = %s FOR UPDATE"
)
_ADVANCE = """
UPDATE projection_checkpoints
   SET last_seq = %s, updated_at = now(),
       tables = ARRAY(SELECT DISTINCT t FROM unnest(tables || %s::text[]) AS t ORDER BY t)
 WHERE projection = %s AND stream = %s
"""


class ProjectionStore:
    """Projection tables + checkpoints over a pool the caller opens and closes."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool
        self._months: set[tuple[str, datetime]] = set()  # partitions known to exist

    async def apply(self, projection: str, stream: str,
                    items: Sequence[tuple[int, Event]]) -> ApplyResult:
        """Write ``(stream seq, event)`` items after the checkpoint, in one transaction.

        Items may come in any order and repeat; ack them only after this returns.
        """
        ordered = unique_by_seq(items)
        if not ordered:
            return ApplyResult(0, 0, 0, await self.checkpoint(projection, stream))
        async with self._pool.connection() as conn:
            await self._ensure_partitions(conn, [e for _, e in ordered])
            async with conn.transaction(), conn.cursor() as cur:
                last = await _lock_checkpoint(cur, projection, stream)
                fresh = [(seq, event) for seq, event in ordered if seq > last]
                if not fresh:
                    return ApplyResult(0, len(items), 0, last)
                rows, tables = await write_events(cur, [event for _, event in fresh])
                await _advance(cur, projection, stream, last, fresh[-1][0], tables)
        log.debug("%s/%s: %d applied, %d rows, checkpoint %d",
                  projection, stream, len(fresh), rows, fresh[-1][0])
        return ApplyResult(len(fresh), len(items) - len(fresh), rows, fresh[-1][0])

    async def checkpoint(self, projection: str, stream: str) -> int:
        """The last stream sequence committed for (projection, stream); 0 if none."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT last_seq FROM projection_checkpoints WHERE projection = %s AND stream = %s",
                (projection, stream),
            )
            row = await cur.fetchone()
        return int(row[0]) if row is not None else 0

    async def reset(self, projection: str | None = None) -> ResetResult:
        """Truncate projected tables and delete checkpoints, so a replay rebuilds them.

        ``None``: everything. A name: the tables that projection wrote, and the
        checkpoints of every projection that wrote any of them (all must replay).
        """
        async with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            if projection is None:
                tables: tuple[str, ...] = PROJECTED_TABLES
                await cur.execute("DELETE FROM projection_checkpoints RETURNING projection")
            else:
                tables = await _tables_of(cur, projection)
                await cur.execute(
                    "DELETE FROM projection_checkpoints WHERE projection = %s OR tables && %s"
                    " RETURNING projection", (projection, list(tables)))
            reset = tuple(sorted({str(row[0]) for row in await cur.fetchall()}))
            if tables:
                await cur.execute("TRUNCATE " + ", ".join(tables))
        log.info("reset projections %s: truncated %s", ", ".join(reset) or "-",
                 ", ".join(tables) or "-")
        return ResetResult(tables, reset)

    async def _ensure_partitions(self, conn: AsyncConnection[Any], events: list[Event]) -> None:
        """Create the monthly partitions the predictions need, in their own transaction.

        Committed apart from the rows: DDL holds strong locks, and an empty partition
        left by a failed batch is harmless.
        """
        months = {_month(e.window_start_ns) for e in events if isinstance(e, Prediction)}
        wanted = {(t, m) for m in months for t in ("predictions", "detections")}
        wanted |= {("channel_health", _month(e.start_ns)) for e in events
                   if isinstance(e, ChannelHealth)}
        wanted -= self._months
        if not wanted:
            return
        async with conn.transaction():
            for table, month in sorted(wanted):
                await conn.execute("SELECT tidzam_ensure_month_partition(%s::regclass, %s)",
                                   (table, month))
        self._months |= wanted


async def _lock_checkpoint(cur: AsyncCursor[Any], projection: str, stream: str) -> int:
    await cur.execute(_LOCK, (projection, stream))
    row = await cur.fetchone()
    if row is None:
        await cur.execute(
            "INSERT INTO projection_checkpoints (projection, stream) VALUES (%s, %s)"
            " ON CONFLICT DO NOTHING", (projection, stream))
        await cur.execute(_LOCK, (projection, stream))
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def _advance(cur: AsyncCursor[Any], projection: str, stream: str,
                   last: int, new: int, tables: set[str]) -> None:
    if new <= last:
        raise CheckpointError(f"checkpoint {projection}/{stream} would move from {last} to {new}")
    await cur.execute(_ADVANCE, (new, sorted(tables), projection, stream))


async def _tables_of(cur: AsyncCursor[Any], projection: str) -> tuple[str, ...]:
    await cur.execute(
        "SELECT DISTINCT t FROM projection_checkpoints, unnest(tables) AS t"
        " WHERE projection = %s ORDER BY t", (projection,))
    tables = {str(row[0]) for row in await cur.fetchall() if row[0] in PROJECTED_TABLES}
    # a checkpoint written before a derived table existed does not name it
    tables |= {derived for table in tables for derived in _DERIVED.get(table, ())}
    return tuple(sorted(tables))
