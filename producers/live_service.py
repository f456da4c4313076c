"""The live-stream server: ``python -m producers.live_service`` (socket.io over aiohttp)."""

from __future__ import annotations

import asyncio
import logging

import socketio
from aiohttp import web
from pydantic import Field, SecretStr

from bus.connect import connect, ensure_streams
from bus.process import run_process
from bus.publisher import Publisher
from bus.settings import TidzamSettings
from producers.gain import GainStage
from producers.live import LiveNamespace

log = logging.getLogger(__name__)


class LiveSettings(TidzamSettings):
    nats_url: SecretStr
    live_host: str = "127.0.0.1"
    live_port: int = Field(8081, ge=1, le=65535)
    sample_rate: int = 48_000
    chunk_s: float = Field(1.0, gt=0.05, le=10.0)
    live_max_streams: int = Field(10, ge=1, le=1000)


async def run(settings: LiveSettings, stop: asyncio.Event) -> None:
    nc = await connect(settings.nats_url.get_secret_value(), "tidzam-live")
    await ensure_streams(nc.jetstream())
    sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins="*",
                               max_http_buffer_size=4 * 1024 * 1024)
    gain = GainStage()
    await gain.follow(nc)
    namespace = LiveNamespace(Publisher(nc.jetstream()), sample_rate=settings.sample_rate,
                              chunk_s=settings.chunk_s, max_streams=settings.live_max_streams,
                              mixer=gain.state)
    sio.register_namespace(namespace)
    app = web.Application()
    sio.attach(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, settings.live_host, settings.live_port)
    await site.start()
    log.info("live streams on http://%s:%d", settings.live_host, settings.live_port)
    await stop.wait()
    await namespace.close_all()
    await runner.cleanup()
    await gain.close()
    await nc.drain()
    log.info("live server drained: exiting")


def main() -> None:
    settings = LiveSettings()
    run_process(lambda stop: run(settings, stop))


if __name__ == "__main__":
    main()
