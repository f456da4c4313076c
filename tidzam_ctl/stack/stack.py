"""Start, stop, inspect and heal the stack: embedded servers and Tidzam processes.

Like the original ``tidzam start|stop|check``: every process has a pid file in
``<home>/run`` (pid + start time, so a recycled pid is not mistaken for ours)
and a log in ``<home>/logs``. ``check`` restarts whatever died while the stack
is meant to be up.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bus_schemas.errors import TidzamError
from tidzam_ctl.settings import SITE_FIELDS, CtlSettings
from tidzam_ctl.stack import environment, probe, sinks
from tidzam_ctl.stack.icecast import IcecastServer
from tidzam_ctl.stack.jack import JackServer
from tidzam_ctl.stack.nats import NatsServer
from tidzam_ctl.stack.ports import free_port
from tidzam_ctl.stack.postgres import EmbeddedPostgres

log = logging.getLogger(__name__)


class StackError(TidzamError, RuntimeError):
    """The stack could not be started or is not running."""


@dataclass(frozen=True)
class ProcSpec:
    name: str
    argv: list[str]


@dataclass(frozen=True)
class ProcState:
    name: str
    pid: int | None
    state: str  # running | stopped | dead | not answering (a server: alive, no answer)
    log: str
    problem: str | None = None  # why a server does not answer


class Stack:
    def __init__(self, settings: CtlSettings) -> None:
        self.home = settings.home.expanduser().absolute()
        self.run_dir = self.home / "run"
        self.log_dir = self.home / "logs"
        self.desired = self.home / "stack.json"
        recorded = self._recorded()  # `up --icecast`/`--jack`/an archive hold for later
        for option in ("icecast", "jack"):
            if recorded.get(option):
                settings = settings.model_copy(update={option: True})
        if recorded.get("archive_dir") and "archive_dir" not in settings.model_fields_set:
            settings = settings.model_copy(update={"archive_dir": Path(recorded["archive_dir"])})
        # so do the site fields (privacy, sources, retention), unless this command sets them
        kept = {k: v for k, v in recorded.get("site", recorded.get("privacy", {})).items()
                if k in SITE_FIELDS and k not in settings.model_fields_set}
        if kept:
            settings = settings.model_copy(update=kept)
        self.settings = settings
        self.embedded_nats = settings.nats_url is None
        self.nats = NatsServer.load(self.home) if self.embedded_nats else None
        if self.nats is not None and not self.nats.config_current():
            self.nats.write_config()  # the role users of a newer Tidzam
            pid = self.pid_of("nats")
            if pid is not None:
                os.kill(pid, signal.SIGHUP)  # nats-server reloads its users
        self.pg = None if settings.database_url else EmbeddedPostgres(self.home / "postgres")

    # ------------------------------------------------------------------ urls

    @property
    def nats_url(self) -> str:
        if self.settings.nats_url:
            return self.settings.nats_url.get_secret_value()
        if self.nats is None:
            raise StackError(f"no NATS server set up in {self.home}: run `tidzam_ctl up`")
        return self.nats.url

    @property
    def database_url(self) -> str:
        if self.settings.database_url:
            return self.settings.database_url.get_secret_value()
        if self.pg is None or not self.pg.initialized:
            raise StackError(f"no PostgreSQL set up in {self.home}: run `tidzam_ctl up`")
        return self.pg.url

    def database_url_as(self, role: str) -> str:
        """``role``'s own login on the embedded server (``projections.roles``); an
        external database (TIDZAM_DATABASE_URL) has the one URL it was given."""
        return self.pg.url_as(role) if self.pg is not None else self.database_url

    def public_urls(self) -> dict[str, str]:
        """Service URLs without credentials, for status output."""
        urls = {}
        if not self.embedded_nats or self.nats is not None:
            urls["nats"] = _strip_credentials(self.nats_url)
        if self.pg is None or self.pg.initialized:
            urls["postgres"] = _strip_credentials(self.database_url)
        if self.settings.gateway and (self.settings.gateway_port
                                      or (self.home / "gateway.json").exists()):
            urls["gateway"] = f"http://{self.settings.gateway_host}:{self.gateway_port}"
        if self.settings.icecast and (self.home / "icecast" / "state.json").exists():
            urls["icecast"] = self.icecast.url if self.icecast else ""
        return urls

    # ------------------------------------------------------------- processes

    def processes(self) -> list[ProcSpec]:
        py = sys.executable
        procs = [ProcSpec(f"classifier-{i}", [py, "-m", "consumers.classifier.service"])
                 for i in range(self.settings.classifiers)]
        if self.settings.projector:
            procs.append(ProcSpec("projector", [py, "-m", "projections.service"]))
        if self.settings.sources:
            procs.append(ProcSpec("sources", [py, "-m", "producers.source_service"]))
        if self.settings.live:
            procs.append(ProcSpec("live", [py, "-m", "producers.live_service"]))
        if self.settings.gateway:
            procs.append(ProcSpec("gateway", [py, "-m", "projections.gateway.service"]))
        for sink in sinks.recorded(self.home):
            procs.append(ProcSpec(f"sink-{sink}", [py, "-m", f"consumers.sinks.{sink}"]))
        if self.settings.icecast:
            procs.append(ProcSpec("relay", [py, "-m", "consumers.icecast_relay"]))
        if self.settings.jack:
            procs.append(ProcSpec("jack-out", [py, "-m", "consumers.jack_output"]))
        if self.settings.archive_dir is not None:
            procs.append(ProcSpec("archiver", [py, "-m", "consumers.archiver"]))
        if self.settings.extractor:
            procs.append(ProcSpec("extractor", [py, "-m", "consumers.extractor.service"]))
        if self.settings.gain_control:
            procs.append(ProcSpec("gain-control", [py, "-m", "consumers.gain_controller"]))
        return procs

    def child_env(self, name: str = "") -> dict[str, str]:
        return environment.child_env(self, name)

    @property
    def icecast(self) -> IcecastServer | None:
        if not self.settings.icecast:
            return None
        return IcecastServer.load_or_init(self.home, self.settings.icecast_host)

    @property
    def gateway_port(self) -> int:
        """The gateway's port: configured, else chosen once and kept in the home."""
        if self.settings.gateway_port:
            return self.settings.gateway_port
        state = self.home / "gateway.json"
        if state.exists():
            return int(json.loads(state.read_text())["port"])
        self.home.mkdir(parents=True, exist_ok=True)
        port = free_port()
        state.write_text(json.dumps({"port": port}))
        return port

    def first_token(self) -> str | None:
        """A ``control`` token named ``admin`` when the gateway has none yet (shown once,
        by ``up``); None when tokens exist."""
        from projections.gateway.auth import TokenStore, tokens_path

        store = TokenStore(tokens_path(self.home))
        if not self.settings.gateway or store.entries():
            return None
        return store.create("admin", "control")

    # -------------------------------------------------------------- commands

    def up(self) -> None:
        """Start what is not running: servers first, then the processes."""
        self.home.mkdir(parents=True, exist_ok=True)
        for d in (self.run_dir, self.log_dir):
            d.mkdir(exist_ok=True)
        sinks.record(self.home, dict(os.environ))
        self._start_nats()
        self._start_postgres()
        self._start_icecast()
        self._start_jack()
        if self.settings.projector:  # `query` and the tests work the moment `up` returns
            self.prepare()
        else:
            self._ensure_streams()
        started = []
        for spec in self.processes():
            if self._state_of(spec.name).state != "running":
                self._spawn(spec)
                started.append(spec.name)
        self.desired.write_text(json.dumps({
            "up": True, "since": time.time(), "icecast": self.settings.icecast,
            "jack": self.settings.jack, "archive_dir": str(self.settings.archive_dir or ""),
            "site": {k: getattr(self.settings, k) for k in SITE_FIELDS}}))
        self._verify_alive(started)
        if "gateway" in started:
            self._wait_serving("gateway", self.settings.gateway_host, self.gateway_port)

    def prepare(self) -> None:
        """The streams (updated to the site's limits), the migrations and the database
        roles: what `up` does before the processes start, and all that `init` does for
        servers it did not start (docker-compose)."""
        import asyncio

        import psycopg

        from projections.migrate import migrate
        from projections.roles import PROJECTOR, READER, ROLES, ensure_roles

        passwords = self.pg.role_passwords() if self.pg is not None else {
            role: secret.get_secret_value() for role, secret in (
                (PROJECTOR, self.settings.db_projector_password),
                (READER, self.settings.db_reader_password)) if secret is not None}
        if passwords and set(passwords) != set(ROLES):
            raise StackError("set both TIDZAM_DB_PROJECTOR_PASSWORD and "
                             "TIDZAM_DB_READER_PASSWORD, or neither (the site's own roles)")
        self._ensure_streams()

        async def go() -> None:
            async with await psycopg.AsyncConnection.connect(self.database_url) as conn:
                await migrate(conn)
                if passwords:
                    await ensure_roles(conn, passwords)

        asyncio.run(go())

    def _wait_serving(self, name: str, host: str, port: int, timeout_s: float = 60.0) -> None:
        """A serving process is up once its port answers (several processes starting
        at once on two cores take seconds to import their libraries)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((host, port), timeout=0.5):
                    return
            except OSError:
                if self._state_of(name).state != "running":
                    break
                time.sleep(0.1)
        tail = (self.log_dir / f"{name}.log").read_text(errors="replace")
        raise StackError(f"{name} does not answer on {host}:{port}; the end of its log:\n"
                         + "\n".join(tail.splitlines()[-15:]))

    def _recorded(self) -> dict[str, Any]:
        if not self.desired.exists():
            return {}
        data: dict[str, Any] = json.loads(self.desired.read_text())
        return data

    def _verify_alive(self, names: list[str], grace_s: float = 2.0) -> None:
        """A process that dies right after its start (bad model, bad URL) is an error now."""
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            time.sleep(0.2)
            dead = [n for n in names if self._state_of(n).state != "running"]
            if dead:
                tail = (self.log_dir / f"{dead[0]}.log").read_text(errors="replace")
                raise StackError(f"{dead[0]} exited at start; the end of its log:\n"
                                 + "\n".join(tail.splitlines()[-15:]))

    def down(self, timeout_s: float = 20.0) -> None:
        """Stop the processes (SIGTERM, then SIGKILL), then the servers."""
        if self.desired.exists():
            self.desired.write_text(json.dumps({**self._recorded(), "up": False}))
        servers = ["nats", "icecast", "jackd"]  # the embedded ones, started or not
        # every process this home runs, also one started under other settings (a
        # command run with TIDZAM_EXTRACTOR=false must not leave the extractor running)
        started = {pidfile.stem for pidfile in self.run_dir.glob("*.pid")} - set(servers)
        for name in [spec.name for spec in self.processes()] + sorted(started) + servers:
            self._terminate(name, timeout_s)
        if self.pg is not None and self.pg.initialized:
            self.pg.stop()

    def check(self) -> list[str]:
        """Restart every process (and embedded server) that died, and every embedded
        server that lives but does not answer (a PostgreSQL left "shutting down"); returns
        their names."""
        if not self.is_meant_up():
            return []
        restarted: list[str] = []
        if self.embedded_nats:
            if self._state_of("nats").state != "running":
                self._start_nats()
                restarted.append("nats")
            elif probe.still_not_answering("nats", lambda: self.problem_of("nats")):
                self._terminate("nats", timeout_s=5.0)
                self._start_nats()
                restarted.append("nats")
        if self.pg is not None:
            if not self.pg.status().running:
                self._start_postgres()
                restarted.append("postgres")
            elif probe.still_not_answering("postgres", lambda: self.problem_of("postgres")):
                self.pg.stop()  # fast: disconnects the clients it was waiting for
                self._start_postgres()
                restarted.append("postgres")
        if self.settings.icecast and self._state_of("icecast").state != "running":
            self._start_icecast()
            restarted.append("icecast")
        if self.settings.jack and self._state_of("jackd").state != "running":
            self._start_jack()
            restarted.append("jackd")
        for spec in self.processes():
            if self._state_of(spec.name).state != "running":
                self._spawn(spec)
                restarted.append(spec.name)
        return restarted

    def problem_of(self, server: str) -> str | None:
        """Why ``nats`` or ``postgres`` does not answer a real request; None if it does."""
        return probe.nats_problem(self.nats_url) if server == "nats" else probe.postgres_problem(
            self.database_url)

    def is_meant_up(self) -> bool:
        return bool(self._recorded().get("up"))

    def status(self) -> dict[str, Any]:
        procs: list[ProcState] = []
        if self.embedded_nats:
            procs.append(self._answering(self._state_of("nats")))
        if self.pg is not None:
            st = self.pg.status()
            procs.append(self._answering(ProcState(
                "postgres", st.pid if st.running else None,
                "running" if st.running else "stopped", str(self.pg.log_file))))
        if self.settings.icecast:
            procs.append(self._state_of("icecast"))
        if self.settings.jack:
            procs.append(self._state_of("jackd"))
        procs.extend(self._state_of(spec.name) for spec in self.processes())
        consumers = probe.consumer_lags(self.nats_url) if self.is_meant_up() else None
        return {
            "home": str(self.home),
            "up": self.is_meant_up(),
            "processes": [{**p.__dict__, "last_error": probe.last_error(p.log),
                           **probe.throughput(p.name, consumers)} for p in procs],
            "services": self.public_urls(),
            "consumers": consumers,
        }

    def _answering(self, state: ProcState) -> ProcState:
        """A running server's state, "not answering" if it does not answer a request."""
        if state.state != "running":
            return state
        problem = self.problem_of(state.name)
        return state if problem is None else dataclasses.replace(
            state, state="not answering", problem=problem)

    def pid_of(self, name: str) -> int | None:
        return self._state_of(name).pid

    # ------------------------------------------------------------ internals

    def _start_nats(self) -> None:
        if not self.embedded_nats or self._state_of("nats").state == "running":
            return
        self.nats = NatsServer.load_or_init(self.home)
        proc = self.nats.spawn()
        self._write_pid("nats", proc.pid)
        self.nats.wait_ready(proc)

    @property
    def jack(self) -> JackServer | None:
        s = self.settings
        if not s.jack:
            return None
        return JackServer(self.home, rate=s.jack_rate, period=s.jack_period,
                          port_max=s.jack_port_max, timeout_ms=s.jack_timeout_ms)

    def _start_jack(self) -> None:
        server = self.jack
        if server is None or self._state_of("jackd").state == "running":
            return
        proc = server.spawn()
        self._write_pid("jackd", proc.pid)
        server.wait_ready(proc)

    def _start_icecast(self) -> None:
        server = self.icecast
        if server is None or self._state_of("icecast").state == "running":
            return
        proc = server.spawn()
        self._write_pid("icecast", proc.pid)
        server.wait_ready(proc)

    def _start_postgres(self) -> None:
        if self.pg is None:
            return
        self.pg.init()
        self.pg.start()

    def _ensure_streams(self) -> None:
        import asyncio

        from bus.connect import connect, ensure_streams

        async def go() -> None:
            nc = await connect(self.nats_url, "tidzam_ctl")
            try:
                await ensure_streams(nc.jetstream(), retention=self.settings, update=True)
            finally:
                await nc.close()

        asyncio.run(go())

    def _spawn(self, spec: ProcSpec) -> None:
        logf = open(self.log_dir / f"{spec.name}.log", "ab")  # noqa: SIM115 - child's stdout
        proc = subprocess.Popen(spec.argv, stdout=logf, stderr=subprocess.STDOUT,
                                env=self.child_env(spec.name), cwd=str(self.home),
                                start_new_session=True)
        logf.close()
        self._write_pid(spec.name, proc.pid)
        log.info("started %s (pid %d)", spec.name, proc.pid)

    def _write_pid(self, name: str, pid: int) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        created = psutil.Process(pid).create_time()
        (self.run_dir / f"{name}.pid").write_text(json.dumps({"pid": pid, "created": created}))

    def _state_of(self, name: str) -> ProcState:
        logfile = str(self.log_dir / f"{name}.log")
        pidfile = self.run_dir / f"{name}.pid"
        if not pidfile.exists():
            return ProcState(name, None, "stopped", logfile)
        data = json.loads(pidfile.read_text())
        pid = int(data["pid"])
        try:
            proc = psutil.Process(pid)
            alive = (abs(proc.create_time() - float(data["created"])) < 1.0
                     and proc.status() != psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            alive = False
        if alive:
            return ProcState(name, pid, "running", logfile)
        meant = self.is_meant_up()
        return ProcState(name, None, "dead" if meant else "stopped", logfile)

    def stop_process(self, name: str, timeout_s: float = 20.0) -> None:
        """SIGTERM one process (the batch in hand finishes), SIGKILL after the timeout."""
        self._terminate(name, timeout_s)

    def _terminate(self, name: str, timeout_s: float) -> None:
        state = self._state_of(name)
        if state.pid is None:
            (self.run_dir / f"{name}.pid").unlink(missing_ok=True)
            return
        try:
            proc = psutil.Process(state.pid)
            proc.send_signal(signal.SIGTERM)
            if not _wait_gone(proc, timeout_s):
                log.warning("%s did not stop in %.0f s: killing it", name, timeout_s)
                proc.kill()
                _wait_gone(proc, 5.0)
        except psutil.NoSuchProcess:
            pass
        (self.run_dir / f"{name}.pid").unlink(missing_ok=True)


def _wait_gone(proc: psutil.Process, timeout_s: float) -> bool:
    """Wait until the process exited. Its parent may be another program that never
    reaps it (``up`` ran elsewhere), so a zombie counts as gone."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
            proc.wait(0.1)
            return True
        except psutil.TimeoutExpired:
            continue
        except psutil.NoSuchProcess:
            return True
    return False


def _strip_credentials(url: str) -> str:
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{rest.rsplit('@', 1)[1]}"
