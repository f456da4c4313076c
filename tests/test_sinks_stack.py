"""The webhook sink under ``tidzam_ctl up``: started because ``TIDZAM_WEBHOOK_URL`` was
set, its secret kept for it alone (not in the other processes' environment), the
detections of a real recording delivered and signed, and a ``kill -9`` repaired by a
``check`` run from a shell that no longer has the variables."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.real_audio import MEGAGLEST, RAIN, real_file
from tests.stack_helpers import REPO, ctl, kill_and_restart, wait_for
from tidzam_ctl.settings import CtlSettings
from tidzam_ctl.stack.stack import Stack

SECRET = "a-test-secret-of-32-characters!!"


class Receiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.batches: list[tuple[dict[str, Any], bool]] = []


class Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        signed = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        ok = self.headers["X-Tidzam-Signature"] == f"sha256={signed}"
        self.server.batches.append((json.loads(body), ok))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()


def test_the_webhook_sink_in_the_stack(tmp_path: Path, receiver: Receiver) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDZAM_")}
    env.update({"TIDZAM_HOME": str(home),
                "TIDZAM_WEBHOOK_URL": f"http://127.0.0.1:{receiver.server_port}/hook",
                "TIDZAM_WEBHOOK_SECRET": SECRET})
    try:
        up = subprocess.run([sys.executable, "-m", "tidzam_ctl", "up"], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=300)
        assert up.returncode == 0, up.stderr
        stack = Stack(CtlSettings(home=home))
        assert stack.pid_of("sink-webhook") is not None
        classifier = psutil.Process(stack.pid_of("classifier-0"))
        assert "TIDZAM_WEBHOOK_SECRET" not in classifier.environ()
        assert psutil.Process(stack.pid_of("sink-webhook")).environ()[
            "TIDZAM_WEBHOOK_SECRET"] == SECRET
        assert (home / "sinks.json").stat().st_mode & 0o077 == 0

        done = ctl(home, "replay", str(real_file(MEGAGLEST, RAIN)), "--source", "storm",
                   "--start", "2025-06-01T00:00:00Z", "--wait")
        assert done.returncode == 0, done.stderr
        rows = json.loads(ctl(home, "query", "detections", "--source", "storm",
                              "--json").stdout)
        wanted = {(r["channel"], r["time"][:19], r["label"]) for r in rows}

        def delivered() -> set[tuple[int, str, str]]:
            return {(d["channel"], d["start"][:19], d["label"])
                    for batch, _ in receiver.batches for d in batch["detections"]}
        wait_for(lambda: delivered() >= wanted, 60, "every detection at the webhook")
        assert wanted and all(ok for _, ok in receiver.batches)

        # ctl() runs without the variables: check restarts the sink from what up kept
        kill_and_restart(stack, "sink-webhook")
        assert psutil.Process(stack.pid_of("sink-webhook")).environ()[
            "TIDZAM_WEBHOOK_URL"].endswith("/hook")
    finally:
        ctl(home, "down")
