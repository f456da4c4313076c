"""The one way this project opens a PostgreSQL connection pool.

Connections are recycled: each lives at most ``MAX_LIFETIME_S`` and an idle one is
closed after ``MAX_IDLE_S``. A PostgreSQL sent SIGTERM (a "smart" shutdown) waits for
its clients to leave and refuses new ones; pools that held their connections for an
hour kept it "shutting down" for as long (``tidzam_ctl check`` then restarts it).
"""

from __future__ import annotations

from typing import Any

from psycopg_pool import AsyncConnectionPool

MAX_LIFETIME_S = 60.0
MAX_IDLE_S = 30.0


def connection_pool(url: str, *, min_size: int = 1, max_size: int = 4
                    ) -> AsyncConnectionPool[Any]:
    """A pool on ``url``, not opened yet (``async with`` it, or ``await pool.open()``)."""
    return AsyncConnectionPool(url, min_size=min_size, max_size=max_size, open=False,
                               max_lifetime=MAX_LIFETIME_S, max_idle=MAX_IDLE_S)
