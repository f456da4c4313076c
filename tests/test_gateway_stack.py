"""The gateway under ``tidzam_ctl up``: its URL in ``status``, the first token shown once,
a real recording replayed and broadcast in the seed's shape with its channel numbers,
history from SQL, a model deployed over REST and run by the classifier, tokens made and
revoked from the command line, and a ``kill -9`` that ``check`` repairs while clients
reconnect."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import socketio

from tests.real_audio import MEGAGLEST, RAIN, real_file
from tests.stack_helpers import (
    REPO,
    TOKEN_SHOWN,
    ctl,
    kill_and_restart,
    up_with_token,
    wait_for,
)
from tests.test_model_registry import default_variant, later
from tidzam_ctl.settings import CtlSettings
from tidzam_ctl.stack.stack import Stack


async def broadcasts_of_a_replay(url: str, token: str, home: Path) -> list[dict[str, Any]]:
    client = socketio.AsyncClient(reconnection=False)
    heard: list[dict[str, Any]] = []
    client.on("sys", lambda data: heard.extend(data) if isinstance(data, list) else None)
    await client.connect(url, auth={"token": token}, transports=["websocket"], wait_timeout=10)
    try:
        assert await client.call("subscribe", {"source": "storm"}, timeout=10) == \
            {"rooms": ["source:storm"]}
        done = await asyncio.to_thread(
            ctl, home, "replay", str(real_file(MEGAGLEST, RAIN)), "--source", "storm",
            "--start", "2025-06-01T00:00:00Z", "--wait")
        assert done.returncode == 0, done.stderr
        for _ in range(100):
            if len(heard) >= 20:  # 2 channels × 10 windows of 15.8 s
                break
            await asyncio.sleep(0.1)
        history = await client.call("history", {"what": "detections", "source": "storm",
                                                "channel": 1}, timeout=10)
        assert history["detections"] and {d["channel"] for d in history["detections"]} == {1}
    finally:
        await client.disconnect()
    return heard


async def _post(url: str, token: str, body: Any) -> Any:
    async with aiohttp.ClientSession() as http, http.post(
            url, json=body, headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200, await r.text()
        return await r.json()


def test_the_gateway_in_the_stack(tmp_path: Path) -> None:
    home = tmp_path / "home"
    try:
        token = up_with_token(home)
        again = ctl(home, "up")  # the token is shown once, not made again
        assert again.returncode == 0 and not TOKEN_SHOWN.search(again.stderr)

        status = json.loads(ctl(home, "status", "--json").stdout)
        url = status["services"]["gateway"]
        assert url.startswith("http://127.0.0.1:")
        assert {p["name"]: p["state"] for p in status["processes"]}["gateway"] == "running"

        heard = asyncio.run(broadcasts_of_a_replay(url, token, home))
        assert len(heard) >= 20
        assert {item["chan"] for item in heard} == {0, 1}
        assert {item["source"] for item in heard} == {"storm"}
        times = sorted({item["analysis"]["time"] for item in heard})
        assert times[0] == "2025-06-01-00-00-00.000"
        assert all(set(item["analysis"]) >= {"time", "result", "predicitions", "predictions"}
                   for item in heard)

        # the README's socket.io example runs as written (its URL and token filled in)
        readme = (REPO / "README.md").read_text()
        example = readme.split("## The gateway", 1)[1].split("```python\n", 1)[1]
        example = example.split("```", 1)[0].replace("http://127.0.0.1:PORT", url)
        example = example.replace('"TOKEN"', repr(token)).replace("sleep(10)", "sleep(1)")
        ran = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True,
                             timeout=120, cwd=REPO)
        assert ran.returncode == 0, ran.stderr
        assert "'classifier': {'list': [{'name': 'selector'" in ran.stdout
        assert "{'database_info': []}" in ran.stdout and "'detections': [" in ran.stdout

        # a model deployed over REST: the stack's classifier validates it, publishes the
        # deploy and switches to it
        new = later(7)
        assert ctl(home, "model", "add", str(default_variant(tmp_path / "v7", new))
                   ).returncode == 0
        deployed = asyncio.run(_post(f"{url}/api/models/deploy", token,
                                     {"model": f"selector@{new}"}))
        assert deployed["version"] == new, deployed
        stack = Stack(CtlSettings(home=home))
        wait_for(lambda: f"→ selector@{new}" in
                 (stack.log_dir / "classifier-0.log").read_text(errors="replace"),
                 60, "the classifier's switch")
        listing = json.loads(ctl(home, "model", "ls", "--json").stdout)
        assert [r["version"] for r in listing if r["deployed"]] == [new]

        made = ctl(home, "token", "create", "grafana")
        assert made.returncode == 0, made.stderr
        listed = json.loads(ctl(home, "token", "ls", "--json").stdout)
        assert [(t["name"], t["role"], t["revoked"]) for t in listed] == [
            ("admin", "control", False), ("grafana", "read", False)]
        assert ctl(home, "token", "create", "grafana").returncode != 0  # exists
        assert ctl(home, "token", "revoke", "admin").returncode == 0

        async def refused_now() -> Any:
            client = socketio.AsyncClient(reconnection=False)
            await client.connect(url, auth={"token": token}, transports=["websocket"],
                                 wait_timeout=10)
            try:
                return await client.call("sys", {"sys": {"unloadsource": {"name": "x"}}},
                                         timeout=10)
            finally:
                await client.disconnect()
        assert "error" in asyncio.run(refused_now())

        kill_and_restart(stack, "gateway")

        async def reconnects() -> Any:
            client = socketio.AsyncClient(reconnection=False)
            for _ in range(100):  # the restarted gateway binds the same port
                try:
                    await client.connect(url, transports=["websocket"], wait_timeout=5)
                    break
                except socketio.exceptions.ConnectionError:
                    await asyncio.sleep(0.1)
            try:
                return await client.call("sys", {"sys": {"classifier": {"list": ""}}},
                                         timeout=10)
            finally:
                await client.disconnect()
        listed_models = asyncio.run(reconnects())["sys"]["classifier"]["list"]
        assert [m["name"] for m in listed_models] == ["selector"]
    finally:
        ctl(home, "down")
