"""Migrations, views and the README's SQL, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

import projections
from bus_schemas.events import Event, SourceFailed
from projections.migrate import detect_flavour, flavour_of, migrate, migrations
from projections.store import ProjectionStore, to_datetime
from tests.fixtures_pg import health, prediction
from tidzam_ctl.stack.postgres import EmbeddedPostgres

Pool = AsyncConnectionPool[Any]
README = Path(projections.__file__).with_name("README.md")
MINUTE = 60 * 1_000_000_000


@pytest.fixture
async def empty_dsn(pg_server: EmbeddedPostgres) -> AsyncIterator[str]:
    """A database nobody migrated yet."""
    name = f"empty_{uuid.uuid4().hex[:12]}"
    async with await psycopg.AsyncConnection.connect(pg_server.url_for("postgres"),
                                                     autocommit=True) as admin:
        await admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield pg_server.url_for(name)
        finally:
            await admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(
                sql.Identifier(name)))


async def test_migrate_applies_each_migration_once(empty_dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(empty_dsn) as conn:
        assert await flavour_of(conn) is None
        first = await migrate(conn)
        again = await migrate(conn)
        cur = await conn.execute("SELECT version, variant FROM schema_migrations ORDER BY 1")
        recorded = await cur.fetchall()
        assert await flavour_of(conn) == "plain"

    assert first == [m.version for m in migrations("plain")] and len(first) >= 3
    assert again == []
    assert ("0002_series", "plain") in recorded and len(recorded) == len(first)


async def test_concurrent_migrators_do_not_collide(empty_dsn: str) -> None:
    async def one() -> list[str]:
        async with await psycopg.AsyncConnection.connect(empty_dsn) as conn:
            return await migrate(conn)

    results = await asyncio.gather(one(), one(), one())
    assert sorted(len(r) for r in results) == [0, 0, len(migrations("plain"))]


async def test_a_changed_applied_migration_is_reported(
    pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        await conn.execute("UPDATE schema_migrations SET checksum = 'x'"
                           " WHERE version = '0001_base'")
        with caplog.at_level(logging.WARNING, logger="projections.migrate"):
            assert await migrate(conn) == []
    assert "0001_base changed" in caplog.text


async def test_plain_postgresql_is_detected(pg_dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        assert await detect_flavour(conn) == "plain"


async def test_the_timescale_flavour_is_valid_sql(pg_dsn: str) -> None:
    """TimescaleDB is not installable here: at least PostgreSQL's parser must accept it.

    PL/pgSQL parses every statement of a function body when the function is created
    (without resolving names), so wrapping the file in one checks its syntax.
    """
    own = [m for m in migrations("timescale") if m.variant == "timescale"]
    assert own, "no timescale-specific migration found"

    async def parses(body: str) -> None:
        async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
            await conn.execute(
                "CREATE FUNCTION pg_temp.parse_only() RETURNS void LANGUAGE plpgsql"
                f" AS $tidzam_body$ BEGIN {body} END $tidzam_body$".encode())

    for migration in own:
        await parses(migration.sql)
    with pytest.raises(psycopg.errors.SyntaxError):  # the check has teeth
        await parses("CREATE TABLE broken (time timestamptz NOT NULL,);")


# ----------------------------------------------------------------------- views


async def fill(pool: Pool, base_ns: int) -> None:
    """Three channels over two hours, plus a failed source."""
    items: list[tuple[int, Event]] = []
    plan = [  # (minute, source, channel, result)
        (0, "pond", 0, ("birds",)), (1, "pond", 0, ("birds", "rain")),
        (61, "pond", 0, ("rain",)), (2, "pond", 1, ("unknown",)),
        (5, "pond", 1, ("wind",)), (70, "forest", 0, ("birds",)),
    ]
    for seq, (minute, source, channel, result) in enumerate(plan, start=1):
        items.append((seq, prediction(base_ns + minute * MINUTE, source=source,
                                      channel=channel, result=result,
                                      scores=(0.9, 0.8, 0.7, 0.1, 0.0))))
    # each channel's health over its windows: a quiet floor on pond 0, a noisy one elsewhere
    seq = len(items)
    for minute, source, channel, _ in plan:
        seq += 1
        items.append((seq, health(base_ns + minute * MINUTE, source=source, channel=channel,
                                  noise_floor_dbfs=-58.0 if source == "pond" and channel == 0
                                  else -35.0)))
    store = ProjectionStore(pool)
    await store.apply("main", "EVENTS", items)
    await store.apply("main", "CONTROL",
                      [(1, SourceFailed(source="pond", reason="eof", at_ns=base_ns))])


async def rows_of(pool: Pool, query: str) -> list[tuple[Any, ...]]:
    async with pool.connection() as conn:
        cur = await conn.execute(query.encode())
        rows: list[tuple[Any, ...]] = await cur.fetchall()
        return rows


def hour_of(ns: int) -> int:
    return ns - ns % (60 * MINUTE)


async def test_detections_hourly(pg_pool: Pool) -> None:
    base = hour_of(1_750_000_000_000_000_000)
    await fill(pg_pool, base)
    rows = await rows_of(pg_pool, "SELECT bucket, label, source, count, avg_confidence"
                                  " FROM detections_hourly ORDER BY 1, 2, 3")
    first, second = to_datetime(base), to_datetime(base + 60 * MINUTE)
    assert [r[:4] for r in rows] == [
        (first, "birds", "pond", 2), (first, "rain", "pond", 1), (first, "wind", "pond", 1),
        (second, "birds", "forest", 1), (second, "rain", "pond", 1),
    ]
    assert rows[0][4] == pytest.approx(0.9)


async def test_detections_hourly_buckets_in_utc_whatever_the_session_zone(pg_pool: Pool) -> None:
    base = hour_of(1_750_000_000_000_000_000)
    await fill(pg_pool, base)
    async with pg_pool.connection() as conn:
        await conn.execute("SET TIME ZONE 'Asia/Kolkata'")  # UTC+05:30
        cur = await conn.execute("SELECT min(bucket) FROM detections_hourly")
        row = await cur.fetchone()
        await conn.execute("RESET TIME ZONE")
    assert row is not None and row[0] == to_datetime(base)


async def test_detections_per_channel(pg_pool: Pool) -> None:
    base = 1_750_000_000_000_000_000
    await fill(pg_pool, base)
    rows = await rows_of(pg_pool, "SELECT source, channel, label, count, first_seen, last_seen"
                                  " FROM detections_per_channel ORDER BY 1, 2, 3")
    assert rows == [
        ("forest", 0, "birds", 1, to_datetime(base + 70 * MINUTE),
         to_datetime(base + 70 * MINUTE)),
        ("pond", 0, "birds", 2, to_datetime(base), to_datetime(base + MINUTE)),
        ("pond", 0, "rain", 2, to_datetime(base + MINUTE), to_datetime(base + 61 * MINUTE)),
        ("pond", 1, "wind", 1, to_datetime(base + 5 * MINUTE), to_datetime(base + 5 * MINUTE)),
    ]


async def test_latest_detections_matches_a_plain_distinct_on(pg_pool: Pool) -> None:
    base = 1_750_000_000_000_000_000
    await fill(pg_pool, base)
    view = await rows_of(pg_pool, "SELECT source, channel, time, label FROM latest_detections"
                                  " ORDER BY source, channel")
    reference = await rows_of(
        pg_pool, "SELECT DISTINCT ON (source, channel) source, channel, time, label"
                 " FROM detections ORDER BY source, channel, time DESC, label")
    assert view == reference
    assert [(r[0], r[1], r[3]) for r in view] == [
        ("forest", 0, "birds"), ("pond", 0, "rain"), ("pond", 1, "wind")]


async def test_latest_detections_of_an_empty_table(pg_pool: Pool) -> None:
    assert await rows_of(pg_pool, "SELECT * FROM latest_detections") == []


def readme_queries() -> list[str]:
    """Every SQL block of projections/README.md and of the project's README.md."""
    texts = [README.read_text(), (README.parents[1] / "README.md").read_text()]
    return [q for text in texts for q in re.findall(r"```sql\n(.*?)```", text, flags=re.DOTALL)]


def test_the_readme_has_queries() -> None:
    assert len(readme_queries()) >= 3


@pytest.mark.parametrize("index", range(len(readme_queries())))
async def test_readme_query_runs_and_finds_rows(pg_pool: Pool, index: int) -> None:
    await fill(pg_pool, time.time_ns() - 75 * MINUTE)  # the last rows are minutes old
    rows = await rows_of(pg_pool, readme_queries()[index])
    assert rows, f"README query {index + 1} found nothing:\n{readme_queries()[index]}"
