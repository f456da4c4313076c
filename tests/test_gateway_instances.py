"""Two gateway processes behind one bus and one database: a client of each sees the same
broadcasts and gets the same history; one of them killed, its client reconnects to it
once it is back (a restart) and is in its rooms again without asking."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio
from nats.aio.client import Client
from psycopg_pool import AsyncConnectionPool

from bus.publisher import Publisher
from projections.store import ProjectionStore
from tests.fixtures_pg import prediction
from tests.stack_helpers import REPO
from tidzam_ctl.stack.nats import NatsServer
from tidzam_ctl.stack.ports import free_port

T0_NS = 1_748_736_000_000_000_000  # 2025-06-01T00:00:00Z


def start_gateway(home: Path, nats_url: str, dsn: str, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDZAM_")}
    env.update({"TIDZAM_HOME": str(home), "TIDZAM_NATS_URL": nats_url,
                "TIDZAM_DATABASE_URL": dsn, "TIDZAM_GATEWAY_PORT": str(port)})
    log = open(home / f"gateway-{port}.log", "ab")  # noqa: SIM115 - the child's
    return subprocess.Popen([sys.executable, "-m", "projections.gateway.service"], env=env,
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture
def gateways(tmp_path: Path, nats_server: NatsServer, pg_dsn: str,
             nc: Client) -> Iterator[tuple[list[str], list[subprocess.Popen[bytes]], Any]]:
    ports = [free_port(), free_port()]
    procs = [start_gateway(tmp_path, nats_server.url, pg_dsn, p) for p in ports]

    def restart(i: int) -> None:
        procs[i] = start_gateway(tmp_path, nats_server.url, pg_dsn, ports[i])
    try:
        yield [f"http://127.0.0.1:{p}" for p in ports], procs, restart
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=20)


async def connected(url: str, **auth: Any) -> socketio.AsyncClient:
    client = socketio.AsyncClient(reconnection=False)
    for _ in range(200):  # the process imports its libraries first
        try:
            await client.connect(url, auth=auth or None, transports=["websocket"],
                                 wait_timeout=5)
            return client
        except socketio.exceptions.ConnectionError:
            await asyncio.sleep(0.1)
    raise AssertionError(f"no gateway answered on {url}")


async def heard_after(clients: list[socketio.AsyncClient], nc: Client,
                      windows: list[Any], expected: int) -> list[list[tuple[str, int]]]:
    heard: list[list[tuple[str, int]]] = [[] for _ in clients]
    for i, client in enumerate(clients):
        client.on("sys", lambda data, i=i: heard[i].extend(
            (item["analysis"]["time"], item["chan"]) for item in data))
    await asyncio.sleep(0.5)  # each gateway subscribed to the predictions
    await Publisher(nc.jetstream()).publish_all(windows)
    for _ in range(100):
        if all(len(h) >= expected for h in heard):
            break
        await asyncio.sleep(0.05)
    return heard


async def test_two_gateways_one_bus(gateways: tuple[list[str], list[Any], Any], nc: Client,
                                    pg_pool: AsyncConnectionPool[Any]) -> None:
    urls, procs, restart = gateways
    a, b = await connected(urls[0]), await connected(urls[1])
    try:
        windows = [prediction(T0_NS + k * 500_000_000, channel=k % 3) for k in range(9)]
        heard = await heard_after([a, b], nc, windows, 9)
        assert len(heard[0]) == 9 and sorted(heard[0]) == sorted(heard[1])
        await ProjectionStore(pg_pool).apply("main", "EVENTS",
                                             [(k + 1, w) for k, w in enumerate(windows)])
        ask = {"what": "detections", "source": "mic", "channel": 2}
        ha, hb = (await a.call("history", ask, timeout=10),
                  await b.call("history", ask, timeout=10))
        assert ha == hb and len(ha["detections"]) == 3
    finally:
        await a.disconnect()
        await b.disconnect()

    # the first gateway killed and started again: a client asking for its rooms in the
    # handshake (what a reconnecting client sends) hears only them, from the new process
    procs[0].send_signal(signal.SIGKILL)
    procs[0].wait(timeout=10)
    restart(0)
    again = await connected(urls[0], subscribe=[{"source": "mic", "channel": 1}])
    try:
        later = [prediction(T0_NS + 10**11 + k * 500_000_000, channel=k % 3)
                 for k in range(9)]
        heard = await heard_after([again], nc, later, 3)
        await asyncio.sleep(0.3)
        assert [chan for _, chan in heard[0]] == [1, 1, 1]
    finally:
        await again.disconnect()
