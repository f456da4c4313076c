"""An Icecast 2 server for the per-channel streams, configured in the home.

Loopback by default, generated source and admin passwords (0600 state file, never
in a command line), logs in the home. Icecast refuses to run as root: as root it
runs as Debian's ``icecast2`` user.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from bus_schemas.errors import TidzamError
from tidzam_ctl.stack.ports import free_port
from tidzam_ctl.stack.private import write_private
from tidzam_ctl.stack.server_user import RunAs, grant_traverse

SERVICE_USER = "icecast2"


class IcecastError(TidzamError, RuntimeError):
    """Icecast is missing, misconfigured or did not start."""


def find_binary() -> Path:
    for name in ("icecast2", "icecast"):
        found = shutil.which(name)
        if found:
            return Path(found)
    raise IcecastError("icecast2 is not installed (Debian: apt-get install icecast2)")


def _webroot() -> Path:
    for candidate in (Path("/usr/share/icecast2"), Path("/usr/share/icecast")):
        if (candidate / "web").is_dir():
            return candidate
    raise IcecastError("Icecast's web/admin files are missing (/usr/share/icecast2)")


@dataclass(frozen=True)
class IcecastServer:
    home: Path
    host: str
    port: int
    source_password: str
    admin_password: str

    @property
    def dir(self) -> Path:
        return self.home / "icecast"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @classmethod
    def load_or_init(cls, home: Path, host: str = "127.0.0.1") -> IcecastServer:
        state = home / "icecast" / "state.json"
        if state.exists():
            data = json.loads(state.read_text())
            return cls(home, data["host"], int(data["port"]), data["source_password"],
                       data["admin_password"])
        server = cls(home, host, free_port(), secrets.token_urlsafe(18),
                     secrets.token_urlsafe(18))
        server.dir.mkdir(parents=True, exist_ok=True)
        write_private(state, json.dumps({"host": host, "port": server.port,
                       "source_password": server.source_password,
                       "admin_password": server.admin_password}))
        return server

    def write_config(self, max_sources: int = 256) -> Path:
        web = _webroot()
        logs = self.dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        conf = f"""<icecast>
  <location>Tidzam</location>
  <admin>tidzam@localhost</admin>
  <limits>
    <clients>512</clients>
    <sources>{max_sources}</sources>
    <queue-size>524288</queue-size>
    <client-timeout>30</client-timeout>
    <header-timeout>15</header-timeout>
    <source-timeout>10</source-timeout>
    <burst-size>65535</burst-size>
  </limits>
  <authentication>
    <source-password>{escape(self.source_password)}</source-password>
    <relay-password>{escape(self.source_password)}</relay-password>
    <admin-user>admin</admin-user>
    <admin-password>{escape(self.admin_password)}</admin-password>
  </authentication>
  <hostname>{escape(self.host)}</hostname>
  <listen-socket>
    <port>{self.port}</port>
    <bind-address>{escape(self.host)}</bind-address>
  </listen-socket>
  <fileserve>1</fileserve>
  <paths>
    <basedir>{web}</basedir>
    <logdir>{logs}</logdir>
    <webroot>{web / 'web'}</webroot>
    <adminroot>{web / 'admin'}</adminroot>
  </paths>
  <logging>
    <accesslog>access.log</accesslog>
    <errorlog>error.log</errorlog>
    <loglevel>2</loglevel>
  </logging>
  <security><chroot>0</chroot></security>
</icecast>
"""
        path = self.dir / "icecast.xml"
        write_private(path, conf)
        if os.geteuid() == 0:  # icecast refuses root: its user must read the config
            user = pwd.getpwnam(SERVICE_USER)
            for p in (self.dir, logs, path):
                os.chown(p, user.pw_uid, user.pw_gid)
            grant_traverse(self.dir, RunAs(user.pw_name, user.pw_uid, user.pw_gid))
        return path

    def spawn(self) -> subprocess.Popen[bytes]:
        config = self.write_config()
        user: int | None = None
        group: int | None = None
        extra: list[int] | None = None
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam(SERVICE_USER)
            except KeyError:
                raise IcecastError(f"running as root needs the {SERVICE_USER} user "
                                   "(Debian's icecast2 package creates it)") from None
            # uid, gid AND groups: left in root's group, the group bits of root's
            # 0701 folders would deny the search their other bits allow.
            user, group, extra = entry.pw_uid, entry.pw_gid, []
        logf = open(self.dir / "stdout.log", "ab")  # noqa: SIM115 - the child's
        return subprocess.Popen([str(find_binary()), "-c", str(config)], stdout=logf,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                user=user, group=group, extra_groups=extra)

    def wait_ready(self, proc: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                break
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        log = self.dir / "logs" / "error.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise IcecastError(f"icecast did not start on port {self.port}:\n{tail}")
