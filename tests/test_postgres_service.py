"""The embedded PostgreSQL service: real servers in temporary homes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.fixtures_pg import FAST, bin_dir_override
from tidzam_ctl.stack.ports import free_port, port_is_free
from tidzam_ctl.stack.postgres import EmbeddedPostgres
from tidzam_ctl.stack.postgres_binaries import PostgresError, find_bin_dir, usable_bin_dir
from tidzam_ctl.stack.server_user import server_user

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the root path needs root")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    pg = EmbeddedPostgres(tmp_path / "home", bin_dir=bin_dir_override())
    try:
        yield pg
    finally:
        pg.stop()


def query_one(url: str, query: str) -> object:
    with psycopg.connect(url, connect_timeout=10) as conn:
        row = conn.execute(query.encode()).fetchone()
    assert row is not None
    return row[0]


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 1024 <= port <= 65535 and port_is_free(port)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        assert not port_is_free(port)


def test_binaries_are_found() -> None:
    bin_dir = find_bin_dir()
    assert all((bin_dir / name).is_file() for name in ("initdb", "pg_ctl", "postgres"))


def test_init_start_stop(server: EmbeddedPostgres) -> None:
    assert not server.status().initialized
    server.init(settings=FAST)
    server.init()  # idempotent
    assert server.initialized and not server.status().running
    assert server.password_file.stat().st_mode & 0o777 == 0o600

    server.start()
    server.start()  # idempotent
    status = server.status()
    assert status.running and status.pid is not None and status.port == server.port
    assert query_one(server.url, "SELECT current_database() || ' ' || current_user") == (
        "tidzam tidzam")
    assert query_one(server.url, "SHOW listen_addresses") == "127.0.0.1"
    password = server.password_file.read_text().strip()
    assert password not in server.log_file.read_text()

    server.stop()
    assert not server.status().running
    with pytest.raises(psycopg.OperationalError):
        query_one(server.url, "SELECT 1")


def test_the_password_is_required(server: EmbeddedPostgres) -> None:
    server.init(settings=FAST)
    server.start()
    wrong = server.url.replace(server.password_file.read_text().strip(), "guess")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        query_one(wrong, "SELECT 1")


def test_two_homes_side_by_side(
    server: EmbeddedPostgres, pg_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    server.init(settings=FAST)
    server.start()
    assert server.port != pg_server.port
    assert query_one(server.url, "SELECT 1") == query_one(pg_server.url, "SELECT 1") == 1
    assert query_one(server.url, "SHOW data_directory") != query_one(
        pg_server.url, "SHOW data_directory")


def test_a_taken_port_moves_the_server(server: EmbeddedPostgres) -> None:
    server.init(settings=FAST)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", server.port))
        squatter.listen()
        taken = server.port
        server.start()
        assert server.port != taken
        assert query_one(server.url, "SELECT 1") == 1


def test_a_failed_start_shows_the_server_log(server: EmbeddedPostgres) -> None:
    server.init(settings={"shared_buffers": "lots"})
    with pytest.raises(PostgresError, match="shared_buffers") as failure:
        server.start()
    assert str(server.log_file) in str(failure.value)


def test_start_before_init_is_refused(server: EmbeddedPostgres) -> None:
    with pytest.raises(PostgresError, match="init"):
        server.start()


@as_root
def test_as_root_the_server_runs_as_an_unprivileged_user(pg_server: EmbeddedPostgres) -> None:
    pid = pg_server.status().pid
    assert pid is not None
    uid = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text()
               .splitlines() if line.startswith("Uid:"))
    assert uid != 0
    assert pg_server.data_dir.stat().st_uid == uid
    assert pg_server.password_file.stat().st_uid == 0  # the caller keeps the secret


@pytest.fixture
def cache_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="tidzam-test-cache-", dir="/var/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root)


@as_root
def test_binaries_the_user_cannot_reach_are_copied(tmp_path: Path, cache_root: Path) -> None:
    """CI clones to a 0700 home: the venv's binaries are out of the server user's reach."""
    source = find_bin_dir()
    private = tmp_path / "private"  # <private>/<pkg>/<prefix>/bin, like site-packages
    prefix = private / source.parent.parent.name / source.parent.name
    shutil.copytree(source.parent, prefix, ignore=shutil.ignore_patterns("include"))
    libs = source.parent.parent.parent / f"{source.parent.parent.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, private / libs.name)
    private.chmod(0o700)

    user = server_user()
    usable = usable_bin_dir(prefix / "bin", user, cache_root)
    assert usable.is_relative_to(cache_root)
    assert usable_bin_dir(prefix / "bin", user, cache_root) == usable  # reused

    pg = EmbeddedPostgres(tmp_path / "home", bin_dir=prefix / "bin", cache_root=cache_root)
    try:
        pg.init(settings=FAST)
        pg.start()
        assert query_one(pg.url, "SELECT 1") == 1
    finally:
        pg.stop()


def test_binaries_that_vanished_are_found_again(server: EmbeddedPostgres) -> None:
    server.init(settings=FAST)
    state = json.loads(server.state_file.read_text())
    server.state_file.write_text(json.dumps({**state, "bin_dir": "/nonexistent/bin"}))

    again = EmbeddedPostgres(server.home, bin_dir=bin_dir_override())  # e.g. a new venv
    again.start()
    assert query_one(again.url, "SELECT 1") == 1
    assert json.loads(server.state_file.read_text())["bin_dir"] == state["bin_dir"]


def test_urls_need_a_cluster(server: EmbeddedPostgres) -> None:
    with pytest.raises(PostgresError, match="init"):
        _ = server.url


def test_a_stale_pid_file_is_not_a_running_server(server: EmbeddedPostgres) -> None:
    server.init(settings=FAST)
    pid_file = server.data_dir / "postmaster.pid"
    pid_file.write_text(f"{os.getpid()}\n{server.data_dir}\n")  # alive, but not postgres
    assert not server.status().running
    pid_file.unlink()
    server.start()
    assert server.status().pid == int(pid_file.read_text().split()[0])
