"""Reading what the classifier published, for the tests: every Prediction in EVENTS."""

from __future__ import annotations

from nats.aio.client import Client
from nats.js import JetStreamContext

from bus_schemas import Prediction, decode


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
