"""PostgreSQL roles instead of the one superuser: the projector writes, readers read.

``tidzam_projector`` may read and write the projection tables (and create the
monthly partitions through ``tidzam_ensure_month_partition``, which runs with its
owner's rights) but not drop or alter a table, create a role or read another role's
password. ``tidzam_reader`` (the gateway, ``tidzam_ctl query``, Grafana) may only
read. Both log in with passwords the caller generated; the superuser stays with
``tidzam_ctl`` (migrations, rebuilds, backups).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psycopg import AsyncConnection, sql

PROJECTOR = "tidzam_projector"
READER = "tidzam_reader"
ROLES = (PROJECTOR, READER)
PARTITION_FUNCTION = "tidzam_ensure_month_partition(regclass, timestamptz)"


async def ensure_roles(conn: AsyncConnection[Any], passwords: Mapping[str, str]) -> None:
    """Create or update the roles (login, password) and grant what each may do on the
    tables that exist now and on those later migrations create. Run as the owner of
    the tables (the superuser), after ``migrate``; idempotent."""
    async with conn.transaction():
        database = sql.Identifier(conn.info.dbname)
        for role in ROLES:
            name = sql.Identifier(role)
            found = await (await conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                                              (role,))).fetchone()
            verb = sql.SQL("ALTER") if found else sql.SQL("CREATE")
            await conn.execute(sql.SQL("{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                                       "PASSWORD {}").format(verb, name,
                                                             sql.Literal(passwords[role])))
            await conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(database,
                                                                                   name))
            await conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(name))
        grants = {
            READER: ("SELECT", None),
            PROJECTOR: ("SELECT, INSERT, UPDATE, DELETE, TRUNCATE", "USAGE, SELECT, UPDATE"),
        }
        for role, (tables, sequences) in grants.items():
            name = sql.Identifier(role)
            await conn.execute(sql.SQL("GRANT {} ON ALL TABLES IN SCHEMA public TO {}")
                               .format(sql.SQL(tables), name))
            # the tables this role (the owner) creates later: migrations, partitions
            await conn.execute(sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA public "
                                       "GRANT {} ON TABLES TO {}")
                               .format(sql.SQL(tables), name))
            if sequences:
                await conn.execute(sql.SQL("GRANT {} ON ALL SEQUENCES IN SCHEMA public TO {}")
                                   .format(sql.SQL(sequences), name))
                await conn.execute(sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA public "
                                           "GRANT {} ON SEQUENCES TO {}")
                                   .format(sql.SQL(sequences), name))
        if (await (await conn.execute("SELECT to_regprocedure(%s)",
                                      (PARTITION_FUNCTION,))).fetchone() or (None,))[0]:
            await conn.execute(f"REVOKE EXECUTE ON FUNCTION {PARTITION_FUNCTION} FROM PUBLIC")
            await conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(
                sql.SQL(PARTITION_FUNCTION), sql.Identifier(PROJECTOR)))
