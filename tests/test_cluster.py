"""A 3-node NATS JetStream cluster (three local nats-server processes, streams with 3
replicas) under a whole stack: one node killed during a 16-channel replay, and the
pipeline goes on; the rows equal those of the same replay undisturbed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import psycopg
import pytest

from bus_schemas.streams import AUDIO
from tests.audio_files import default_grid, expected_windows, write_wav
from tests.stack_helpers import REPO, TEST_SITE, ctl, running_stack
from tidzam_ctl.stack.nats import find_binary
from tidzam_ctl.stack.ports import free_port

USER = "tidzam"


class Node:
    def __init__(self, root: Path, name: str, port: int, route: int, routes: list[int],
                 password: str) -> None:
        self.name, self.port = name, port
        self.dir = root / name
        self.dir.mkdir(parents=True)
        self.conf = self.dir / "nats.conf"
        peers = ", ".join(f"nats-route://127.0.0.1:{r}" for r in routes)
        self.conf.write_text(f"""
server_name: {name}
listen: 127.0.0.1:{port}
max_payload: 4MB
jetstream {{ store_dir: "{self.dir / 'js'}", max_file_store: 64G, max_memory_store: 64MB }}
cluster {{ name: tidzam, listen: 127.0.0.1:{route}, routes: [{peers}] }}
authorization {{ user: "{USER}", password: "{password}" }}
""")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.dir / "nats.log", "ab")  # noqa: SIM115 - the child's output
        self.proc = subprocess.Popen([str(find_binary()), "-c", str(self.conf)], stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[list[Node], str]]:
    password = secrets.token_urlsafe(24)
    ports = [free_port() for _ in range(3)]
    routes = [free_port() for _ in range(3)]
    nodes = [Node(tmp_path / "cluster", f"n{i + 1}", ports[i], routes[i],
                  [r for j, r in enumerate(routes) if j != i], password) for i in range(3)]
    for node in nodes:
        node.start()
    url = ",".join(f"nats://{USER}:{password}@127.0.0.1:{p}" for p in ports)
    try:
        asyncio.run(_wait_jetstream(url))
        yield nodes, url
    finally:
        for node in nodes:
            node.kill()


async def _wait_jetstream(url: str, timeout_s: float = 60.0) -> None:
    """Until the cluster has a JetStream meta leader (account info answers)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            nc = await nats.connect(url.split(","), connect_timeout=2, allow_reconnect=False)
            try:
                await nc.jetstream().account_info()
                return
            finally:
                await nc.close()
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def _leader(url: str, stream: str) -> str:
    nc = await nats.connect(url.split(","))
    try:
        info = await nc.jetstream().stream_info(stream)
        assert info.config.num_replicas == 3 and info.cluster is not None
        return str(info.cluster.leader)
    finally:
        await nc.close()


def _detections(url: str, source: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT channel, time, label, round(confidence::numeric, 4), model_version"
            " FROM detections WHERE source = %s ORDER BY channel, time, label",
            (source,)).fetchall()


def _windows(url: str, source: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM predictions WHERE source = %s",
                           (source,)).fetchone()
        return int(row[0]) if row else 0


def test_a_node_killed_during_a_replay(cluster: tuple[list[Node], str], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    nodes, url = cluster
    monkeypatch.setenv("TIDZAM_STREAM_REPLICAS", "3")  # the stack's processes
    site = {**TEST_SITE, "TIDZAM_NATS_URL": url, "TIDZAM_STREAM_REPLICAS": "3"}  # commands
    wav = write_wav(tmp_path / "sixteen.wav", seconds=24.0, channels=16)
    with running_stack(tmp_path / "home", nats_url=url, extractor=False,
                       gain_control=False) as stack:
        calm = ctl(stack.home, "replay", str(wav), "--source", "calm", "--start",
                   "2025-06-01T00:00:00Z", "--wait", timeout=600, site=site)
        assert calm.returncode == 0, calm.stderr
        leader = asyncio.run(_leader(url, AUDIO.name))
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIDZAM_")}
        replay = subprocess.Popen(
            [sys.executable, "-m", "tidzam_ctl", "replay", str(wav), "--source", "storm",
             "--start", "2025-06-01T00:00:00Z", "--speed", "6", "--wait"],
            env={**env, **site, "TIDZAM_HOME": str(stack.home)}, cwd=str(REPO),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(2.0)  # about half way through the audio
            assert replay.poll() is None, "the replay ended before the kill"
            next(n for n in nodes if n.name == leader).kill()
            _, err = replay.communicate(timeout=600)
        finally:
            with contextlib.suppress(ProcessLookupError):
                replay.kill()
        assert replay.returncode == 0, err
        db = stack.database_url
        expected = 16 * expected_windows(24 * 48_000, *default_grid())
        assert _windows(db, "storm") == _windows(db, "calm") == expected
        calm_rows = _detections(db, "calm")
        assert calm_rows and _detections(db, "storm") == calm_rows
        states = {p["name"]: p["state"] for p in stack.status()["processes"]}
        assert all(state == "running" for name, state in states.items()
                   if name.startswith(("classifier", "projector"))), states
