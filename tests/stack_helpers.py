"""Start a whole Tidzam stack (embedded NATS + PostgreSQL + processes) in a temp home."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bus_schemas.streams import EXTRACTOR, GAIN_CONTROLLER, pipeline_durables
from tests.waiting import wait_for
from tidzam_ctl.settings import CtlSettings
from tidzam_ctl.stack.stack import Stack

# wait_for lives in tests.waiting; stack tests import it from here with the stack
__all__ = ["REPO", "TEST_SITE", "TOKEN_SHOWN", "ctl", "kill_and_restart", "replay_in_background",
           "running_stack", "up_with_token", "wait_all_read", "wait_for"]

REPO = Path(__file__).resolve().parents[1]
# The test site's source policy: its HTTP and Icecast servers listen on loopback, its
# recordings lie in temporary folders and the test cache (tests/test_source_policy.py
# shows the default refusing both)
TEST_SITE = {
    "TIDZAM_SOURCE_HOSTS": "127.0.0.1,localhost,::1",
    "TIDZAM_SOURCE_FOLDERS": ",".join(os.path.abspath(p) for p in (
        tempfile.gettempdir(), REPO / "tests", os.environ.get("TIDZAM_TEST_CACHE")) if p),
}


@contextlib.contextmanager
def running_stack(home: Path, **settings: object) -> Iterator[Stack]:
    stack = Stack(CtlSettings(home=home, **settings))  # type: ignore[arg-type]
    try:
        stack.up()
        yield stack
    finally:
        stack.down()


def ctl(home: Path, *args: str, timeout: float = 300,
        site: dict[str, str] = TEST_SITE) -> subprocess.CompletedProcess[str]:
    """Run ``tidzam_ctl`` as a user would, in ``home`` (``site``: what the environment
    sets of the site's policy; else what ``up`` kept)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDZAM_")}
    env["TIDZAM_HOME"] = str(home)
    env.update(site)
    return subprocess.run([sys.executable, "-m", "tidzam_ctl", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


TOKEN_SHOWN = re.compile(r"shown once: (\S+)")


def up_with_token(home: Path) -> str:
    """``tidzam_ctl up`` in a new home: the first control token it shows, once."""
    up = ctl(home, "up")
    assert up.returncode == 0, up.stderr
    found = TOKEN_SHOWN.search(up.stderr)
    assert found, up.stderr
    return found.group(1)


def wait_all_read(stack: Stack) -> None:
    """The classifier and the projections, the extractor and the gain controller have
    read everything; then the projection of what those two published, too."""
    import asyncio

    from bus.backlog import wait_idle
    from bus.connect import connect

    async def go() -> bool:
        nc = await connect(stack.nats_url, "test")
        try:
            durables = [*pipeline_durables("selector"), ("EVENTS", EXTRACTOR.durable),
                        ("EVENTS", GAIN_CONTROLLER.durable)]
            return (await wait_idle(nc, durables, timeout_s=240)
                    and await wait_idle(nc, pipeline_durables("selector"), timeout_s=60))
        finally:
            await nc.drain()

    assert asyncio.run(go()), "the pipeline did not catch up"


def replay_in_background(home: Path, *args: str) -> subprocess.Popen[str]:
    """``tidzam_ctl replay ARGS`` in ``home``, running while the test disturbs the stack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDZAM_")}
    env["TIDZAM_HOME"] = str(home)
    return subprocess.Popen([sys.executable, "-m", "tidzam_ctl", "replay", *args], env=env,
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_and_restart(stack: Stack, name: str) -> None:
    """kill -9 one process of the stack, see it dead, and have ``check`` restart it."""
    import signal

    pid = stack.pid_of(name)
    assert pid is not None, f"{name} is not running"
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: any(p["name"] == name and p["state"] == "dead"
                         for p in stack.status()["processes"]), 30, f"{name} dead")
    assert name in stack.check()


def icecast_mounts(url: str) -> set[str]:
    """The mounts an Icecast server serves now (``<name>.ogg``)."""
    import json
    import urllib.request

    try:
        raw = urllib.request.urlopen(f"{url}/status-json.xsl", timeout=2).read()
        sources = json.loads(raw)["icestats"].get("source", [])
    except (OSError, ValueError, KeyError):
        return set()  # Icecast's JSON is invalid while no source is mounted
    if isinstance(sources, dict):
        sources = [sources]
    return {s["listenurl"].rsplit("/", 1)[1] for s in sources}
