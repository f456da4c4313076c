"""``tidzam_ctl up | status | check | down`` on real embedded servers."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import psutil
import pytest

from tests.stack_helpers import ctl, running_stack, wait_for
from tidzam_ctl.stack.nats import role_of


def assert_no_secret_shown(home: Path, secrets: list[str]) -> None:
    """No password of the stack in any log of the home, nor in any process's command
    line (``ps`` shows those to every user of the machine)."""
    assert all(len(s) >= 20 for s in secrets)
    for path in home.rglob("*.log"):
        text = path.read_text(errors="replace")
        assert not [s for s in secrets if s in text], f"a secret in {path}"
    for proc in psutil.process_iter(["cmdline"]):
        line = " ".join(proc.info["cmdline"] or ())
        assert not [s for s in secrets if s in line], f"a secret in the command line {line}"


def _status(home: Path) -> dict:  # type: ignore[type-arg]
    done = ctl(home, "status", "--json")
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_two_stacks_side_by_side_then_down(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    with running_stack(a), running_stack(b):
        sa, sb = _status(a), _status(b)
        for st in (sa, sb):
            states = {p["name"]: p["state"] for p in st["processes"]}
            assert states == {"nats": "running", "postgres": "running",
                              "classifier-0": "running", "projector": "running",
                              "sources": "running", "live": "running", "gateway": "running",
                              "extractor": "running", "gain-control": "running"}
            assert all(p["pid"] for p in st["processes"])
            assert "@" not in json.dumps(st["services"])  # no credentials in status
        assert sa["services"]["nats"] != sb["services"]["nats"]
        assert sa["services"]["postgres"] != sb["services"]["postgres"]
        # the database password is in the environment of the two that use SQL only
        with_sql = {p["name"] for p in sa["processes"] if p["name"] not in ("nats", "postgres")
                    and b"TIDZAM_DATABASE_URL=" in Path(f"/proc/{p['pid']}/environ").read_bytes()}
        assert with_sql == {"projector", "gateway"}
        sql_users = {p["name"]: next(
            v for v in Path(f"/proc/{p['pid']}/environ").read_bytes().split(b"\0")
            if v.startswith(b"TIDZAM_DATABASE_URL=")).decode().split("//")[1].split(":")[0]
            for p in sa["processes"] if p["name"] in with_sql}
        assert sql_users == {"projector": "tidzam_projector", "gateway": "tidzam_reader"}
        # each process holds its own role's NATS password, never the operator's; and
        # no secret of the stack is in a command line or a log
        nats_state = json.loads((a / "nats" / "state.json").read_text())
        secrets = [nats_state["password"], *nats_state["roles"].values(),
                   (a / "postgres" / "postgres.password").read_text().strip(),
                   *json.loads((a / "postgres" / "roles.json").read_text()).values()]
        for p in sa["processes"]:
            if p["name"] in ("nats", "postgres"):
                continue
            environ = Path(f"/proc/{p['pid']}/environ").read_bytes().split(b"\0")
            url = next(v for v in environ if v.startswith(b"TIDZAM_NATS_URL=")).decode()
            role = role_of(p["name"])
            assert url.startswith(f"TIDZAM_NATS_URL=nats://{role}:{nats_state['roles'][role]}@")
            assert nats_state["password"].encode() not in b"\0".join(environ), p["name"]
        assert_no_secret_shown(a, secrets)
        # no service listens beyond loopback (none is configured to)
        listening = {(p["name"], c.laddr.ip) for p in sa["processes"] if p["pid"]
                     for c in psutil.Process(p["pid"]).net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN}
        assert {"nats", "postgres", "gateway"} <= {name for name, _ in listening}
        assert all(ip in ("127.0.0.1", "::1") for _, ip in listening), listening
        # each consumer's lag, and each process's last error, for the one who looks
        lags = {c["consumer"]: c for c in sa["consumers"]}
        assert {"classifier-selector", "projection-main-events",
                "projection-main-control"} <= set(lags)
        assert all(isinstance(c["pending"], int) and c["pending"] >= 0 for c in lags.values())
        with (a / "logs" / "extractor.log").open("a") as log:
            log.write("2026-12-07 10:00:00,000 consumers.x ERROR the disk is full\n")
        errors = {p["name"]: p["last_error"] for p in _status(a)["processes"]}
        assert errors["extractor"].endswith("ERROR the disk is full")
        assert "the disk is full" in ctl(a, "status").stdout
    for home in (a, b):
        assert {p["state"] for p in _status(home)["processes"]} == {"stopped"}
        # SIGTERM let each process finish its batch and drain, not a kill
        assert "classifier drained" in (home / "logs" / "classifier-0.log").read_text()
        assert "projector drained" in (home / "logs" / "projector.log").read_text()


def test_check_restarts_what_died(tmp_path: Path) -> None:
    home = tmp_path / "h"
    with running_stack(home) as stack:
        victim = stack.pid_of("projector")
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: not psutil.pid_exists(victim) or
                 psutil.Process(victim).status() == psutil.STATUS_ZOMBIE, what="the kill")
        dead = {p["name"]: p["state"] for p in _status(home)["processes"]}
        assert dead["projector"] == "dead"
        done = ctl(home, "check")
        assert "projector" in done.stderr
        assert stack.pid_of("projector") not in (None, victim)


def test_down_stops_what_other_settings_started(tmp_path: Path) -> None:
    """A stack brought down under other settings (no extractor, no classifier) still
    stops every process the home runs: none is left behind."""
    from tidzam_ctl.settings import CtlSettings
    from tidzam_ctl.stack.stack import Stack

    home = tmp_path / "h"
    with running_stack(home) as stack:
        pids = [stack.pid_of(name) for name in ("extractor", "classifier-0")]
        assert all(pids)
        fewer = Stack(CtlSettings(home=home, extractor=False, classifiers=0))
        fewer.down()
        for pid in pids:
            assert pid is not None
            wait_for(lambda pid=pid: not psutil.pid_exists(pid) or  # type: ignore[misc]
                     psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
                     what=f"process {pid} to stop")


def test_a_postgresql_left_shutting_down_is_seen_and_restarted(tmp_path: Path) -> None:
    """SIGTERM to PostgreSQL: a "smart" shutdown waits for the clients, alive but
    refusing everyone. ``status`` says so (not "running"), ``check`` restarts it, and
    the pipeline's rows come back."""
    home = tmp_path / "h"
    with running_stack(home) as stack:
        pg = stack.pg.status().pid if stack.pg else None
        assert pg is not None
        os.kill(pg, signal.SIGTERM)
        wait_for(lambda: stack.problem_of("postgres") is not None, 30, "refusals")
        states = {p["name"]: p for p in _status(home)["processes"]}
        if states["postgres"]["state"] != "stopped":  # its clients may all have left
            assert states["postgres"]["state"] == "not answering", states["postgres"]
            assert "shutting down" in states["postgres"]["problem"]
            assert ctl(home, "status").returncode != 0
        done = ctl(home, "check")
        assert done.returncode == 0 and "postgres" in done.stderr, done.stderr
        assert stack.problem_of("postgres") is None
        assert {p["state"] for p in _status(home)["processes"]} == {"running"}


def test_status_without_a_stack_says_stopped(tmp_path: Path) -> None:
    done = ctl(tmp_path / "none", "status", "--json")
    assert done.returncode == 0
    assert {p["state"] for p in json.loads(done.stdout)["processes"]} == {"stopped"}


def test_external_servers_are_used_when_configured(tmp_path: Path) -> None:
    with running_stack(tmp_path / "servers") as servers:
        external = {"nats_url": servers.nats_url, "database_url": servers.database_url,
                    "projector": False, "sources": False, "live": False, "extractor": False,
                    "gain_control": False, "gateway": False}
        with running_stack(tmp_path / "workers", **external) as workers:
            names = [p["name"] for p in workers.status()["processes"]]
            assert names == ["classifier-0"]  # an extra classifier: no servers of its own
            assert workers.status()["services"]["nats"] == servers.public_urls()["nats"]
            assert not (tmp_path / "workers" / "nats").exists()
            assert not (tmp_path / "workers" / "postgres").exists()


def test_relative_model_and_archive_folders_are_made_absolute(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stack's processes run elsewhere: a relative TIDZAM_MODEL_DIR must not break them."""
    from tidzam_ctl.settings import CtlSettings

    monkeypatch.chdir(tmp_path)
    settings = CtlSettings(home=tmp_path / "h", model_dir=Path("m"), archive_dir=Path("a"))
    assert settings.model_dir == tmp_path / "m" and settings.archive_dir == tmp_path / "a"
