"""Whether a server answers a real request, not only whether its process lives.

A PostgreSQL sent SIGTERM keeps its pid while it waits, "shutting down", for its
clients; a stopped (SIGSTOP) or wedged nats-server keeps its pid too. ``status`` and
``check`` ask each one something: PostgreSQL ``SELECT 1``, NATS JetStream's account
information.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import nats
import psycopg

TIMEOUT_S = 3.0

log = logging.getLogger(__name__)


def still_not_answering(server: str, problem: Callable[[], str | None], tries: int = 3,
                        gap_s: float = 1.0) -> bool:
    """Not answering at each of ``tries`` probes ``gap_s`` apart (one busy moment does
    not get a server restarted)."""
    for attempt in range(tries):
        if problem() is None:
            return False
        if attempt < tries - 1:
            time.sleep(gap_s)
    log.warning("%s is alive but does not answer: restarting it", server)
    return True


def postgres_problem(url: str) -> str | None:
    """None if PostgreSQL at ``url`` answers a query, else why not."""
    try:
        with psycopg.connect(url, connect_timeout=int(TIMEOUT_S)) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def nats_problem(url: str) -> str | None:
    """None if NATS at ``url`` answers a JetStream request, else why not."""
    async def quiet(exc: Exception) -> None:  # the failure is returned, not logged
        pass

    async def ask() -> None:
        nc = await nats.connect([u.strip() for u in url.split(",") if u.strip()],
                                connect_timeout=TIMEOUT_S, allow_reconnect=False,
                                max_reconnect_attempts=0, error_cb=quiet)
        try:
            await nc.jetstream(timeout=TIMEOUT_S).account_info()
        finally:
            await nc.close()

    def in_own_loop() -> None:  # callers may be inside an event loop (the rebuild)
        asyncio.run(asyncio.wait_for(ask(), 2 * TIMEOUT_S))

    with ThreadPoolExecutor(1, thread_name_prefix="nats-probe") as pool:
        try:
            pool.submit(in_own_loop).result()
        except Exception as exc:  # any failure to answer is the answer
            return f"{type(exc).__name__}: {exc}".rstrip(": ")
    return None
