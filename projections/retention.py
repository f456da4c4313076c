"""Dropping what the database keeps past the site's retention (``TIDZAM_RETAIN_*``).

The time series (predictions, detections, channel health) lose whole months at once
on plain PostgreSQL (``DROP TABLE`` of the monthly partitions that end before the
cutoff: no row-by-row delete, no bloat), then the rows before the cutoff in what is
left (the month it falls in, the default partition); on TimescaleDB its chunks go
with ``drop_chunks``. Detection events that ended before the cutoff go too. Samples
nobody reviewed lose their audio (``forget_samples``: the caller deletes the files);
a reviewed sample is the site's training data and stays.

Run as the tables' owner (``tidzam_ctl retention``, ``check``), never by a process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection, sql

from projections.migrate import flavour_of

SERIES = ("predictions", "detections", "channel_health")


@dataclass
class Dropped:
    """What one pass removed: rows per table, and the partitions dropped whole."""

    rows: dict[str, int] = field(default_factory=dict)
    partitions: list[str] = field(default_factory=list)


async def drop_series_before(conn: AsyncConnection[Any], cutoff: datetime) -> Dropped:
    """Remove the time-series rows (and events) before ``cutoff``, in one transaction."""
    dropped = Dropped()
    timescale = await flavour_of(conn) == "timescale"
    async with conn.transaction():
        for table in SERIES:
            if timescale:
                await conn.execute("SELECT drop_chunks(%s::regclass, older_than => %s)",
                                   (table, cutoff))
            else:
                for name, upper in await _months(conn, table):
                    if upper <= cutoff:
                        count = await _count(conn, sql.SQL("SELECT count(*) FROM {}").format(
                            sql.Identifier(name)))
                        await conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
                        dropped.partitions.append(name)
                        dropped.rows[table] = dropped.rows.get(table, 0) + count
            cur = await conn.execute(sql.SQL("DELETE FROM {} WHERE time < %s").format(
                sql.Identifier(table)), (cutoff,))
            dropped.rows[table] = dropped.rows.get(table, 0) + max(cur.rowcount, 0)
        cur = await conn.execute("DELETE FROM detection_events WHERE end_time < %s", (cutoff,))
        dropped.rows["detection_events"] = max(cur.rowcount, 0)
    return dropped


async def forget_samples(conn: AsyncConnection[Any], cutoff: datetime) -> list[str]:
    """The unreviewed samples that start before ``cutoff`` lose their file (``path``
    set to NULL, so they leave ``samples_info``); returns the paths to delete."""
    cur = await conn.execute(
        "UPDATE samples s SET path = NULL FROM samples old WHERE s.sample_id = old.sample_id"
        " AND old.time < %s AND old.reviewed_label IS NULL AND old.path IS NOT NULL"
        " RETURNING old.path", (cutoff,))
    return [str(row[0]) for row in await cur.fetchall()]


async def _months(conn: AsyncConnection[Any], table: str) -> list[tuple[str, datetime]]:
    """The monthly partitions of ``table`` (named ``<table>_YYYYMM`` by
    ``tidzam_ensure_month_partition``) and where each ends."""
    cur = await conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = %s::regclass", (table,))
    found = []
    for (name,) in await cur.fetchall():
        suffix = str(name).removeprefix(f"{table}_")
        if len(suffix) == 6 and suffix.isdigit():
            year, month = int(suffix[:4]), int(suffix[4:])
            end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
            found.append((str(name), end))
    return found


async def _count(conn: AsyncConnection[Any], query: sql.Composed) -> int:
    row = await (await conn.execute(query)).fetchone()
    return int(row[0]) if row else 0
