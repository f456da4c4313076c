"""The gateway process: ``python -m projections.gateway.service``.

Serves ``app.Gateway`` with uvicorn on ``TIDZAM_GATEWAY_HOST``:``TIDZAM_GATEWAY_PORT``
(socket.io at ``/socket.io/``, REST under ``/api/``), follows the bus's predictions for
the live broadcasts, and reads the projections from ``TIDZAM_DATABASE_URL``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import uvicorn

from bus.connect import connect, ensure_streams
from bus.process import run_process
from projections.gateway.app import Gateway, GatewaySettings
from projections.pool import connection_pool

log = logging.getLogger(__name__)


async def run(settings: GatewaySettings, stop: asyncio.Event) -> None:
    nc = await connect(settings.nats_url.get_secret_value(), "tidzam-gateway")
    await ensure_streams(nc.jetstream())
    pool = connection_pool(settings.database_url.get_secret_value())
    await pool.open(wait=True, timeout=30)
    gateway = Gateway(settings, nc, pool)
    server = uvicorn.Server(uvicorn.Config(
        gateway.app, host=settings.gateway_host, port=settings.gateway_port,
        log_level="warning", lifespan="off", access_log=False))
    follower = asyncio.create_task(gateway.follow(stop))
    serving = asyncio.create_task(server.serve())
    log.info("gateway on http://%s:%d (socket.io /socket.io/, REST /api/, docs /api/docs)",
             settings.gateway_host, settings.gateway_port)
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    server.should_exit = True
    with contextlib.suppress(asyncio.CancelledError):
        await serving
    await follower
    stopped.cancel()
    await pool.close()
    await nc.drain()
    log.info("gateway stopped after %d windows broadcast", gateway.broadcast_windows)


def main() -> None:
    settings = GatewaySettings()
    run_process(lambda stop: run(settings, stop))


if __name__ == "__main__":
    main()
