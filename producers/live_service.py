"""The live-stream producer: ``python -m producers.live_service``.

It answers the gateway's live requests (``subjects.LIVE_IN``, core NATS request/reply,
``bus_schemas.live``): one process per bus keeps every client's stream, resamples,
chunks and publishes it through the gain stage. Streams idle for a minute are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from nats.aio.msg import Msg
from pydantic import Field, SecretStr

from bus.answer import answer
from bus.connect import connect, ensure_streams
from bus.process import run_process
from bus.publisher import Publisher
from bus.settings import TidzamSettings
from bus_schemas import subjects as subj
from bus_schemas.live import unpack
from producers.gain import GainStage
from producers.live import LiveInputs

log = logging.getLogger(__name__)


class LiveSettings(TidzamSettings):
    nats_url: SecretStr
    sample_rate: int = 48_000
    chunk_s: float = Field(1.0, gt=0.05, le=10.0)
    live_max_streams: int = Field(10, ge=1, le=1000)
    live_idle_s: float = Field(60.0, gt=0.0)


async def run(settings: LiveSettings, stop: asyncio.Event) -> None:
    nc = await connect(settings.nats_url.get_secret_value(), "tidzam-live")
    await ensure_streams(nc.jetstream())
    gain = GainStage()
    await gain.follow(nc)
    inputs = LiveInputs(Publisher(nc.jetstream()), sample_rate=settings.sample_rate,
                        chunk_s=settings.chunk_s, max_streams=settings.live_max_streams,
                        idle_s=settings.live_idle_s, mixer=gain.state)

    async def handle(data: bytes) -> dict[str, Any]:
        return await inputs.handle(unpack(data))

    async def on_request(msg: Msg) -> None:
        await answer(msg, handle, "live")

    # requests are handled as they come, concurrently; each client's in order (a lock)
    sub = await nc.subscribe(subj.LIVE_IN, cb=on_request, pending_msgs_limit=10_000)
    log.info("live streams: answering %s", subj.LIVE_IN)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(1.0, settings.live_idle_s / 4))
        for name in await inputs.close_idle():
            log.info("live stream %s closed: idle", name)
    await sub.unsubscribe()
    await inputs.close_all()
    await gain.close()
    await nc.drain()
    log.info("live server drained: exiting")


def main() -> None:
    settings = LiveSettings()
    run_process(lambda stop: run(settings, stop))


if __name__ == "__main__":
    main()
