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
from psycopg_pool import AsyncConnectionPool
from pydantic import Field, SecretStr

from bus.connect import connect, ensure_streams
from bus.process import run_process
from bus.runner import Ack, ConsumerRunner, Delivery, Handler, Outcome, TransientError
from bus.settings import TidzamSettings
from bus_schemas.streams import PROJECTION, PROJECTION_SUBSCRIPTIONS, projection_consumer
from projections.migrate import migrate
from projections.store import ProjectionStore

log = logging.getLogger(__name__)



class ProjectorSettings(TidzamSettings):
    nats_url: SecretStr
    database_url: SecretStr
    batch: int = Field(5000, ge=1, le=10_000)


def handler_for(store: ProjectionStore, stream: str) -> Handler:
    async def handle(deliveries: Sequence[Delivery]) -> list[Outcome]:
        items = [(d.stream_seq, d.event) for d in deliveries]
        try:
            await store.apply(PROJECTION, stream, items)
        except (psycopg.OperationalError, psycopg.errors.AdminShutdown) as exc:
            raise TransientError(f"database unavailable: {exc}") from exc
        return [Ack()] * len(deliveries)

    return handle


async def run(settings: ProjectorSettings, stop: asyncio.Event) -> None:
    nc = await connect(settings.nats_url.get_secret_value(), "tidzam-projector")
    await ensure_streams(nc.jetstream())
    async with AsyncConnectionPool(settings.database_url.get_secret_value(), min_size=1,
                                   max_size=4, open=False) as pool:
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
