"""The projector process: EVENTS and CONTROL streams → PostgreSQL read models.

One runner per stream, ``ordered``: a batch is applied in one transaction with
its checkpoint (``ProjectionStore.apply``), then acked. After a crash the
unacked messages come back; those at or below the checkpoint are skipped, so
every row exists exactly once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence

import psycopg
from pydantic import Field, SecretStr

from bus.connect import connect, ensure_streams
from bus.process import run_process
from bus.runner import (
    Ack,
    ConsumerRunner,
    Delivery,
    Handler,
    Outcome,
    PoisonError,
    TransientError,
)
from bus.settings import TidzamSettings
from bus_schemas.streams import PROJECTION, PROJECTION_SUBSCRIPTIONS, projection_consumer
from projections.migrate import migrate
from projections.pool import connection_pool
from projections.store import ProjectionStore

log = logging.getLogger(__name__)



class ProjectorSettings(TidzamSettings):
    nats_url: SecretStr
    database_url: SecretStr
    batch: int = Field(5000, ge=1, le=10_000)


# SQLSTATE classes of errors that the same rows will always get again: data exceptions
# (an encoding PostgreSQL refuses, a NUL byte, a number out of range), integrity
# violations, and program limits (an index row too big). Retrying them only stalls the
# projection behind them; the message goes to the dead-letter stream.
_POISON_CLASSES = ("22", "23", "54")
# what a later try can get past: the connection, a conflict, resources, a shutdown
_TRANSIENT_CLASSES = ("08", "40", "53", "55", "57", "58")


def classify(exc: psycopg.Error) -> Exception:
    """The runner's view of a database error: poison, transient, or as it is (a bug:
    retried, then dead-lettered)."""
    state = exc.sqlstate or ""
    # psycopg refuses some values itself (a NUL byte in text): a DataError, no SQLSTATE
    if state[:2] in _POISON_CLASSES or isinstance(exc, psycopg.DataError | psycopg.IntegrityError):
        return PoisonError(f"PostgreSQL refused it{f' ({state})' if state else ''}: {exc}")
    if state[:2] in _TRANSIENT_CLASSES or (isinstance(exc, psycopg.OperationalError)
                                           and not state):
        return TransientError(f"database unavailable: {exc}")
    return exc


def handler_for(store: ProjectionStore, stream: str) -> Handler:
    async def handle(deliveries: Sequence[Delivery]) -> list[Outcome]:
        items = [(d.stream_seq, d.event) for d in deliveries]
        try:
            await store.apply(PROJECTION, stream, items)
        except psycopg.Error as exc:
            kind = classify(exc)
            if kind is exc:
                raise
            raise kind from exc
        return [Ack()] * len(deliveries)

    return handle


async def run(settings: ProjectorSettings, stop: asyncio.Event) -> None:
    nc = await connect(settings.nats_url.get_secret_value(), "tidzam-projector")
    await ensure_streams(nc.jetstream())
    async with connection_pool(settings.database_url.get_secret_value()) as pool:
        async with pool.connection() as conn:
            await migrate(conn)
        store = ProjectionStore(pool)
        runners = []
        for spec, filters in PROJECTION_SUBSCRIPTIONS:
            consumer = projection_consumer(PROJECTION, spec, filters)
            consumer = dataclasses.replace(consumer, batch=settings.batch,
                                           max_ack_pending=2 * settings.batch)  # one batch ahead
            # The checkpoint, not the server's ack state, says where to resume.
            committed = await store.checkpoint(PROJECTION, spec.name)
            runners.append(ConsumerRunner(nc, consumer, handler_for(store, spec.name),
                                          ordered=True, poison_after=20,
                                          start_after=committed))
        log.info("projector running")
        await asyncio.gather(*(r.run(stop) for r in runners))
    await nc.drain()
    log.info("projector drained after %d batches: exiting", sum(r.stats.batches for r in runners))


def main() -> None:
    settings = ProjectorSettings()
    run_process(lambda stop: run(settings, stop))


if __name__ == "__main__":
    main()
