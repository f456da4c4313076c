"""A real nats-server with JetStream per test session, a fresh account state per test."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client

from bus.connect import connect, ensure_streams
from tidzam_ctl.stack.nats import NatsServer


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    home = tmp_path_factory.mktemp("nats-home")
    server = NatsServer.load_or_init(Path(home))
    proc = server.spawn()
    try:
        server.wait_ready(proc)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    """A connection to a bus whose streams were just (re)created empty."""
    client = await connect(nats_server.url, "pytest")
    js = client.jetstream()
    for info in await js.streams_info():
        await js.delete_stream(info.config.name)
    await ensure_streams(js)
    try:
        yield client
    finally:
        await client.drain()
