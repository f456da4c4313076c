"""Whether a server answers a real request, not only whether its process lives.

A PostgreSQL sent SIGTERM keeps its pid while it waits, "shutting down", for its
clients; a stopped (SIGSTOP) or wedged nats-server keeps its pid too. ``status`` and
``check`` ask each one something: PostgreSQL ``SELECT 1``, NATS JetStream's account
information. ``status`` also shows each consumer's lag and each process's last error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import nats
import psycopg
from nats.aio.client import Client
from nats.js.api import ConsumerInfo
from nats.js.client import JetStreamContext

from tidzam_ctl.stack.nats import NatsServerError, owns, role_of

TIMEOUT_S = 3.0
T = TypeVar("T")

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


def consumer_lags(url: str, sample_s: float = 1.0) -> list[dict[str, object]] | None:
    """Every durable consumer of every stream: what waits for it (``pending``), what it
    holds unacked, what was delivered again, and the messages it acked per second over
    ``sample_s`` (``acked_per_s``); None if NATS does not answer."""
    async def snapshot(js: JetStreamContext) -> dict[tuple[str, str], ConsumerInfo]:
        return {(stream.config.name or "", info.name or ""): info
                for stream in await js.streams_info()
                for info in await js.consumers_info(stream.config.name or "")}

    def acked(info: ConsumerInfo) -> int:
        return int(info.ack_floor.consumer_seq or 0) if info.ack_floor else 0

    async def ask() -> list[dict[str, object]]:
        nc = await _connect(url)
        try:
            js = nc.jetstream(timeout=TIMEOUT_S)
            start, before = time.monotonic(), await snapshot(js)
            await asyncio.sleep(sample_s)
            after = await snapshot(js)
            elapsed = time.monotonic() - start
            out: list[dict[str, object]] = []
            for (stream, name), info in after.items():
                earlier = before.get((stream, name))
                rate = (max(0, acked(info) - acked(earlier)) / elapsed) if earlier else 0.0
                out.append({"stream": stream, "consumer": name,
                            "pending": int(info.num_pending or 0),
                            "unacked": int(info.num_ack_pending or 0),
                            "redelivered": int(info.num_redelivered or 0),
                            "acked_per_s": round(rate, 1)})
            return out
        finally:
            await nc.close()

    try:
        return _in_own_loop(ask)
    except Exception:  # not answering: `problem` in the status says why
        return None


def throughput(process: str, consumers: list[dict[str, Any]] | None) -> dict[str, Any]:
    """What ``process``'s durable consumers acked per second and still have waiting (the
    instances of a classifier share theirs: each shows the whole); {} for a server or a
    process with no durable."""
    try:
        role = role_of(process)
    except NatsServerError:
        return {}
    mine = [c for c in consumers or [] if owns(role, c["stream"], c["consumer"])]
    if not mine:
        return {}
    return {"acked_per_s": round(sum(c["acked_per_s"] for c in mine), 1),
            "lag": sum(c["pending"] + c["unacked"] for c in mine)}


def last_error(log_file: str, tail_bytes: int = 65_536) -> str | None:
    """The last ERROR line of a process's log (its tail only), or None."""
    log = Path(log_file)
    try:
        with log.open("rb") as f:
            f.seek(max(0, log.stat().st_size - tail_bytes))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    return next((line.strip()[:300] for line in reversed(lines) if " ERROR " in line), None)


async def _connect(url: str) -> Client:
    async def quiet(exc: Exception) -> None:  # the failure is returned, not logged
        pass

    return await nats.connect([u.strip() for u in url.split(",") if u.strip()],
                              connect_timeout=TIMEOUT_S, allow_reconnect=False,
                              max_reconnect_attempts=0, error_cb=quiet)


def _in_own_loop(ask: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``ask`` in a loop of its own thread: callers may be inside an event loop (the
    rebuild)."""
    with ThreadPoolExecutor(1, thread_name_prefix="nats-probe") as pool:
        return pool.submit(lambda: asyncio.run(asyncio.wait_for(ask(), 2 * TIMEOUT_S))
                           ).result()


def nats_problem(url: str) -> str | None:
    """None if NATS at ``url`` answers a JetStream request, else why not."""
    async def ask() -> None:
        nc = await _connect(url)
        try:
            await nc.jetstream(timeout=TIMEOUT_S).account_info()
        finally:
            await nc.close()

    try:
        _in_own_loop(ask)
    except Exception as exc:  # any failure to answer is the answer
        return f"{type(exc).__name__}: {exc}".rstrip(": ")
    return None
