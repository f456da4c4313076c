"""One gateway served by uvicorn on a real port, in this process, following a real bus and
reading a real database: what the gateway tests share. It has an archive database
``pond`` (a silent recording) and two tokens, ``admin`` (control) and ``grafana`` (read)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import socketio
import uvicorn
from nats.aio.client import Client
from psycopg_pool import AsyncConnectionPool
from pydantic import SecretStr

from projections.gateway.app import Gateway, GatewaySettings
from projections.gateway.auth import TokenStore, tokens_path
from tests.audio_files import write_pcm
from tidzam_ctl.stack.ports import free_port


@dataclass
class Served:
    gateway: Gateway
    url: str
    control: str  # a control token
    reader: str  # a read token
    archive: Path  # the archive root (``pond`` in it)

    async def client(self, token: str | None = None, *, auth: Any = None
                     ) -> socketio.AsyncClient:
        """A connected websocket client (``auth`` as given, else the token's)."""
        client = socketio.AsyncClient(reconnection=False)
        if auth is None and token:
            auth = {"token": token}
        await client.connect(self.url, auth=auth, transports=["websocket"], wait_timeout=10)
        return client


@contextlib.asynccontextmanager
async def serve(nc: Client, pool: AsyncConnectionPool[Any], dsn: str, home: Path,
                archive_s: float = 3.0, cors: str = "") -> AsyncIterator[Served]:
    archive = home / "archive"
    (archive / "pond").mkdir(parents=True)
    write_pcm(archive / "pond" / "pond-2025-06-15-12-00-00.wav",
              np.zeros((2, int(48_000 * archive_s)), dtype=np.float32))
    port = free_port()
    settings = GatewaySettings(nats_url=SecretStr("nats://unused"),
                               database_url=SecretStr(dsn), home=home, archive_dir=archive,
                               gateway_port=port, gateway_cors=cors)
    tokens = TokenStore(tokens_path(home))
    control, reader = tokens.create("admin", "control"), tokens.create("grafana", "read")
    gateway = Gateway(settings, nc, pool)
    server = uvicorn.Server(uvicorn.Config(gateway.app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off",
                                           access_log=False))
    stop = asyncio.Event()
    serving = asyncio.create_task(server.serve())
    follower = asyncio.create_task(gateway.follow(stop))
    while not server.started:
        assert not serving.done(), "the gateway did not start"
        await asyncio.sleep(0.05)
    try:
        yield Served(gateway, f"http://127.0.0.1:{port}", control, reader, archive)
    finally:
        stop.set()
        server.should_exit = True
        await follower
        with contextlib.suppress(asyncio.CancelledError):
            await serving
