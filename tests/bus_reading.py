"""Reading the bus for the tests: every Prediction in EVENTS; an archiver run until it
has written everything the AUDIO stream holds."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client
from nats.js import JetStreamContext

from bus_schemas import Prediction, decode
from consumers.archiver import Archiver


async def count_predictions(js: JetStreamContext) -> int:
    """Predictions stored in EVENTS (which holds channel health and samples too)."""
    info = await js.stream_info("EVENTS", subjects_filter="tidzam.pred.>")
    return sum((info.state.subjects or {}).values())


async def read_predictions(nc: Client, source: str | None = None) -> list[Prediction]:
    """Every prediction stored in EVENTS now (only ``source``'s when given)."""
    js = nc.jetstream()
    total = await count_predictions(js)
    out: list[Prediction] = []
    if not total:
        return out
    sub = await js.pull_subscribe("tidzam.pred.>", stream="EVENTS")
    try:
        seen = 0
        while seen < total:
            for m in await sub.fetch(min(500, total - seen), timeout=5):
                seen += 1
                event = decode(m.headers, m.data)
                assert isinstance(event, Prediction)
                if source is None or event.source == source:
                    out.append(event)
    finally:
        await sub.unsubscribe()
    return out


async def archive_everything(nc: Client, archiver: Archiver) -> Archiver:
    """Run ``archiver`` on the AUDIO stream until every chunk is written and every
    session closed; then close it."""
    from bus.runner import ConsumerRunner
    from consumers.archiver import SPEC
    from tests.waiting import wait_until

    stop = asyncio.Event()
    runner = ConsumerRunner(nc, SPEC, archiver.handle)
    await runner.ensure_consumer()
    task = asyncio.create_task(runner.run(stop))

    async def written() -> bool:
        info = await nc.jetstream().consumer_info("AUDIO", SPEC.durable)
        return not info.num_pending and not info.num_ack_pending and not archiver.sessions
    try:
        await wait_until(written, 30, "every chunk archived and every session closed")
    finally:
        stop.set()
        await task
    archiver.close()
    return archiver
