"""PostgreSQL for the tests: one embedded server per session, a fresh database per test.

``pg_server`` runs ``initdb`` once per session, durability off (no test data needs
to survive a host crash). Each test gets its own database cloned from a migrated template, so tests
neither see each other's rows nor pay for the migrations again.
``TIDZAM_TEST_PG_BIN=/usr/lib/postgresql/15/bin`` runs the suite on other binaries.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from bus_schemas.events import ChannelHealth, Prediction
from projections.migrate import migrate
from tidzam_ctl.stack.postgres import EmbeddedPostgres

FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
TEMPLATE = "tidzam_test_template"
LABELS = ("birds", "rain", "wind", "insects", "unknown")


def bin_dir_override() -> Path | None:
    value = os.environ.get("TIDZAM_TEST_PG_BIN")
    return Path(value) if value else None


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path_factory.mktemp("postgres"), bin_dir=bin_dir_override())
    server.init(settings=FAST)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def _admin(server: EmbeddedPostgres, statement: sql.Composed) -> None:
    async with await psycopg.AsyncConnection.connect(server.url_for("postgres"),
                                                     autocommit=True) as conn:
        await conn.execute(statement)


class Databases:
    """Clones of a migrated template, a few made ahead while the tests run.

    CREATE DATABASE waits ~0.2 s however small the template, but several overlap
    freely: with clones in flight a test rarely waits for its own.
    """

    AHEAD = 3

    def __init__(self, server: EmbeddedPostgres) -> None:
        self.server = server
        self._ahead: deque[asyncio.Task[str]] = deque()

    async def create_template(self) -> None:
        await _admin(self.server, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
        async with await psycopg.AsyncConnection.connect(self.server.url_for(TEMPLATE)) as conn:
            await migrate(conn)

    async def take(self) -> str:
        while len(self._ahead) <= self.AHEAD:
            self._ahead.append(asyncio.create_task(self._clone()))
        return await self._ahead.popleft()

    async def drop(self, name: str) -> None:
        await _admin(self.server, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))

    async def close(self) -> None:
        while self._ahead:
            await self.drop(await self._ahead.popleft())

    async def _clone(self) -> str:
        name = f"test_{uuid.uuid4().hex[:16]}"
        await _admin(self.server, sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(TEMPLATE)))
        return name


@pytest.fixture(scope="session")
async def pg_databases(pg_server: EmbeddedPostgres) -> AsyncIterator[Databases]:
    databases = Databases(pg_server)
    await databases.create_template()
    try:
        yield databases
    finally:
        await databases.close()


@pytest.fixture
async def pg_dsn(pg_server: EmbeddedPostgres, pg_databases: Databases) -> AsyncIterator[str]:
    """The DSN of a fresh, empty, migrated database of its own."""
    name = await pg_databases.take()
    try:
        yield pg_server.url_for(name)
    finally:
        await pg_databases.drop(name)


@pytest.fixture
async def pg_pool(pg_dsn: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    """An opened pool on the test's database."""
    async with AsyncConnectionPool(pg_dsn, min_size=1, max_size=4, open=False) as pool:
        await pool.wait()
        yield pool


# ------------------------------------------------------------ event factories


def health(start_ns: int, *, source: str = "mic", channel: int = 0, rms_dbfs: float = -40.0,
           noise_floor_dbfs: float = -55.0, peak_dbfs: float = -20.0, clip_ratio: float = 0.0,
           dead: bool = False, length_ns: int = 1_000_000_000) -> ChannelHealth:
    """A ChannelHealth of one chunk (a second by default) starting at ``start_ns``."""
    return ChannelHealth(source=source, channel=channel, start_ns=start_ns,
                         end_ns=start_ns + length_ns, rms_dbfs=rms_dbfs, peak_dbfs=peak_dbfs,
                         clip_ratio=clip_ratio, noise_floor_dbfs=noise_floor_dbfs,
                         dc_offset=0.0, hum_db=-60.0, hum_hz=50, dead=dead)


def prediction(
    start_ns: int,
    *,
    source: str = "mic",
    channel: int = 0,
    result: Sequence[str] = ("birds",),
    scores: Sequence[float] = (0.9, 0.05, 0.02, 0.02, 0.01),
    model_id: str = "selector",
    model_version: str = "1",
    length_ns: int = 500_000_000,
) -> Prediction:
    """A Prediction over ``LABELS`` for the window starting at ``start_ns``."""
    return Prediction(
        source=source, channel=channel, window_start_ns=start_ns,
        window_end_ns=start_ns + length_ns, model_id=model_id, model_version=model_version,
        labels=LABELS, scores=tuple(scores), result=tuple(result),
    )
