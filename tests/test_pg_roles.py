"""PostgreSQL roles (``projections.roles``): the projector writes through its real
write path and may do nothing else; a reader may only read. On a real PostgreSQL."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import errors
from psycopg_pool import AsyncConnectionPool

from bus_schemas import SourceAdded
from projections.migrate import migrate
from projections.roles import PROJECTOR, READER, ensure_roles
from projections.store import ProjectionStore
from tests.test_projections_store import T0, control, windows

MONTH_AHEAD_NS = T0 + 400 * 86_400 * 10**9  # a month with no partition yet


def _as(dsn: str, role: str, password: str) -> str:
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{role}:{quote(password, safe='')}@{host}"))


async def _refused(dsn: str, statement: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        with pytest.raises(errors.InsufficientPrivilege):
            await conn.execute(statement.encode())


async def test_the_projector_writes_and_a_reader_only_reads(pg_dsn: str) -> None:
    passwords = {PROJECTOR: secrets.token_urlsafe(24), READER: secrets.token_urlsafe(24)}
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        await ensure_roles(conn, passwords)
        await ensure_roles(conn, passwords)  # idempotent
    projector = _as(pg_dsn, PROJECTOR, passwords[PROJECTOR])
    reader = _as(pg_dsn, READER, passwords[READER])

    async with AsyncConnectionPool(projector, min_size=1, max_size=2, open=False) as pool:
        async with pool.connection() as conn:
            assert await migrate(conn) == []  # nothing pending: no DDL asked of it
        store = ProjectionStore(pool)
        result = await store.apply("main", "EVENTS", windows(20))
        assert result.applied == 20 and result.rows > 0
        later = [(seq + 20, e.model_copy(update={
            "window_start_ns": e.window_start_ns + MONTH_AHEAD_NS - T0,
            "window_end_ns": e.window_end_ns + MONTH_AHEAD_NS - T0}))
            for seq, e in windows(5)]  # a new month: its partition is created
        assert (await store.apply("main", "EVENTS", later)).applied == 5
        await store.apply("control", "CONTROL", control(SourceAdded(
            source="pond", kind="url", location="http://h/p.ogg", at_ns=T0)))
    for statement in ("DROP TABLE detections", "ALTER TABLE detections ADD COLUMN x int",
                      "CREATE TABLE evil (x int)", "CREATE ROLE evil LOGIN",
                      "SELECT rolpassword FROM pg_authid", "DROP TABLE schema_migrations"):
        await _refused(projector, statement)

    async with await psycopg.AsyncConnection.connect(reader) as conn:
        count: Any = await (await conn.execute("SELECT count(*) FROM predictions")).fetchone()
        assert count[0] == 25
        months = await (await conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'predictions'::regclass ORDER BY 1")).fetchall()
        assert months == [("predictions_202506",), ("predictions_202607",),
                          ("predictions_default",)]  # the projector made both months
        names = await (await conn.execute("SELECT name FROM sources")).fetchall()
        assert names == [("pond",)]
    for statement in ("INSERT INTO sources (name) VALUES ('x')", "DELETE FROM predictions",
                      "UPDATE detections SET label = 'x'", "TRUNCATE detections",
                      "DROP TABLE detections", "CREATE TABLE evil (x int)",
                      "SELECT tidzam_ensure_month_partition('predictions', now())",
                      "SELECT rolpassword FROM pg_authid"):
        await _refused(reader, statement)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        await psycopg.AsyncConnection.connect(_as(pg_dsn, READER, "guess"))
