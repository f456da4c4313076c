"""Schema migrations of the projections: numbered SQL files in ``sql/``, each applied once.

A file is ``NNNN_name.sql`` (both flavours) or ``NNNN_name.<flavour>.sql`` where the
flavour is ``plain`` (PostgreSQL 15+, declarative partitions) or ``timescale``
(hypertables). A database keeps the flavour it was first migrated with; a new one
gets ``timescale`` when the extension is installed, or available and preloaded.
Applied migrations are recorded in ``schema_migrations``; concurrent migrators
serialise on an advisory lock, and all pending files apply in one transaction.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import psycopg
from psycopg import AsyncConnection

from bus_schemas.errors import TidzamError

log = logging.getLogger(__name__)

Flavour = Literal["plain", "timescale"]
_LOCK_KEY = 0x7469647A616D  # "tidzam"
_FILE = re.compile(r"^(\d{4}_[a-z0-9_]+)(?:\.(plain|timescale))?\.sql$")


class MigrationError(TidzamError, RuntimeError):
    """The schema could not be brought up to date."""


@dataclass(frozen=True)
class Migration:
    version: str  # "0002_series"
    variant: str  # "common", "plain" or "timescale"
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations(flavour: Flavour) -> list[Migration]:
    """The migrations a database of ``flavour`` needs, in order."""
    found: dict[str, Migration] = {}
    for entry in resources.files("projections").joinpath("sql").iterdir():
        match = _FILE.match(entry.name)
        if match is None:
            continue
        version, variant = match.group(1), match.group(2) or "common"
        if variant not in ("common", flavour):
            continue
        if version in found:
            raise MigrationError(f"two migrations named {version} for {flavour}")
        found[version] = Migration(version, variant, entry.read_text(encoding="utf-8"))
    return [found[version] for version in sorted(found)]


async def detect_flavour(conn: AsyncConnection[Any]) -> Flavour:
    """``timescale`` when TimescaleDB is installed, or available and preloaded."""
    cur = await conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'),"
        " EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),"
        " current_setting('shared_preload_libraries')"
    )
    row = await cur.fetchone()
    assert row is not None
    installed, available, preload = bool(row[0]), bool(row[1]), str(row[2])
    return "timescale" if installed or (available and "timescaledb" in preload) else "plain"


async def migrate(conn: AsyncConnection[Any]) -> list[str]:
    """Apply the pending migrations (idempotent); returns the versions applied now."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        cur = await conn.execute("SELECT to_regclass('schema_migrations') IS NULL")
        row = await cur.fetchone()
        if row is not None and row[0]:  # only then: a role that may not create tables
            await conn.execute(  # (the projector's) finds nothing pending and goes on
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, variant text NOT NULL, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
        applied = await _applied(conn)
        flavour = _recorded_flavour(applied) or await detect_flavour(conn)
        done: list[str] = []
        for migration in migrations(flavour):
            if migration.version in applied:
                _warn_if_changed(migration, applied[migration.version][1])
                continue
            await _apply(conn, migration)
            done.append(migration.version)
    if done:
        log.info("applied migrations %s (%s)", ", ".join(done), flavour)
    return done


async def flavour_of(conn: AsyncConnection[Any]) -> Flavour | None:
    """The flavour a migrated database was created with (None: not migrated)."""
    cur = await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
    row = await cur.fetchone()
    if row is None or not row[0]:
        return None
    return _recorded_flavour(await _applied(conn)) or "plain"


async def _applied(conn: AsyncConnection[Any]) -> dict[str, tuple[str, str]]:
    cur = await conn.execute("SELECT version, variant, checksum FROM schema_migrations")
    return {str(v): (str(variant), str(checksum)) for v, variant, checksum in await cur.fetchall()}


def _recorded_flavour(applied: dict[str, tuple[str, str]]) -> Flavour | None:
    variants = {variant for variant, _ in applied.values()}
    if "timescale" in variants:
        return "timescale"
    if "plain" in variants:
        return "plain"
    return None


def _warn_if_changed(migration: Migration, checksum: str) -> None:
    if checksum != migration.checksum:
        log.warning("migration %s changed after it was applied; the database keeps the old one",
                    migration.version)


async def _apply(conn: AsyncConnection[Any], migration: Migration) -> None:
    try:
        await conn.execute(migration.sql.encode())  # several statements: no parameters
    except psycopg.Error as exc:
        raise MigrationError(f"migration {migration.version} ({migration.variant}) failed: "
                             f"{exc}") from exc
    await conn.execute(
        "INSERT INTO schema_migrations (version, variant, checksum) VALUES (%s, %s, %s)",
        (migration.version, migration.variant, migration.checksum),
    )
