"""jackd with the dummy driver (no sound card), as the original ran it.

``jackd --port-max N -r -t TIMEOUT -d dummy -r RATE -p PERIOD``, under a server name
of its own per home, so two stacks run side by side; children find it through
``JACK_DEFAULT_SERVER``.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bus_schemas.errors import TidzamError


class JackError(TidzamError, RuntimeError):
    """jackd is missing or did not start."""


@dataclass(frozen=True)
class JackServer:
    home: Path
    rate: int = 48_000
    period: int = 1024
    port_max: int = 2048
    timeout_ms: int = 50_000

    @property
    def name(self) -> str:
        digest = hashlib.sha1(str(self.home.absolute()).encode()).hexdigest()[:10]
        return f"tidzam-{digest}"

    def command(self) -> list[str]:
        jackd = shutil.which("jackd")
        if jackd is None:
            raise JackError("jackd is not installed (Debian: apt-get install jackd2)")
        return [jackd, "-n", self.name, "--port-max", str(self.port_max), "-r",
                "-t", str(self.timeout_ms), "-d", "dummy", "-r", str(self.rate),
                "-p", str(self.period)]

    def spawn(self) -> subprocess.Popen[bytes]:
        logs = self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        logf = open(logs / "jackd.log", "ab")  # noqa: SIM115 - the child's
        return subprocess.Popen(self.command(), stdout=logf, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def wait_ready(self, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
        import jack

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                client = jack.Client("tidzam-probe", no_start_server=True, servername=self.name)
            except jack.JackOpenError:
                time.sleep(0.1)
                continue
            client.close()
            return
        log = self.home / "logs" / "jackd.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise JackError(f"jackd ({self.name}) did not start:\n{tail}")
