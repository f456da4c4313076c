"""docker-compose.yml: what can be checked without a Docker daemon (none here, no image hub).

Every Tidzam service runs a module that exists and has a ``main``; every setting it is
given is one a Tidzam settings class reads; every ``${VAR}`` comes from
``scripts/compose-env`` (no password in the repository); the NATS servers form one
cluster; the cluster URL form the services get works with the real client.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import nats
import psycopg
import pytest
import yaml
from nats.aio.client import Client
from nats.errors import Error as NatsError

from bus.connect import connect, ensure_streams, stream_replicas
from bus_schemas.streams import AUDIO
from consumers.archiver import ArchiverSettings
from consumers.classifier.service import ClassifierSettings
from consumers.extractor.service import ExtractorSettings
from consumers.gain_controller import GainControllerSettings
from producers.live_service import LiveSettings
from producers.source_service import SourcesSettings
from projections.gateway.app import GatewaySettings
from projections.roles import PROJECTOR, READER
from projections.service import ProjectorSettings
from tests.stack_helpers import ctl
from tidzam_ctl.settings import CtlSettings
from tidzam_ctl.stack.nats import NatsServer, compose_config, compose_variable, find_binary

REPO = Path(__file__).resolve().parents[1]
SETTINGS = (ArchiverSettings, ClassifierSettings, ExtractorSettings, GainControllerSettings,
            LiveSettings, SourcesSettings, ProjectorSettings, GatewaySettings, CtlSettings)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return data


def _known_settings() -> set[str]:
    known = {"TIDZAM_STREAM_REPLICAS"}  # bus.connect
    for cls in SETTINGS:
        prefix = cls.model_config.get("env_prefix", "")
        known |= {f"{prefix}{name}".upper() for name in cls.model_fields}
    return known


def test_every_service_runs_a_real_module_with_known_settings(compose: dict[str, Any]) -> None:
    tidzam = _tidzam(compose)
    assert {"projector", "classifier", "sources", "live", "gateway", "archiver", "extractor",
            "gain-control", "ctl"} <= set(tidzam)
    known = _known_settings()
    for name, service in tidzam.items():
        argv = service.get("entrypoint") or service["command"]
        assert argv[:2] == ["python", "-m"], name
        module = importlib.import_module(argv[2] if argv[2] != "tidzam_ctl" else
                                         "tidzam_ctl.__main__")
        assert callable(getattr(module, "main", None)), f"{name}: {argv[2]} has no main()"
        unknown = set(service["environment"]) - known
        assert not unknown, f"{name}: settings no Tidzam process reads: {unknown}"


def test_no_secret_in_the_file_and_every_variable_is_generated(compose: dict[str, Any]) -> None:
    text = (REPO / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{(\w+)", text))
    generated = subprocess.run([str(REPO / "scripts" / "compose-env")], capture_output=True,
                               text=True, check=True).stdout
    values = dict(line.split("=", 1) for line in generated.split())
    assert values.pop("COMPOSE_PROJECT_NAME") == "tidzam"  # a name, not a secret
    assert used == set(values), (used, values)
    assert all(len(v) >= 24 for v in values.values())
    again = subprocess.run([str(REPO / "scripts" / "compose-env")], capture_output=True,
                           text=True, check=True).stdout
    assert again != generated  # fresh passwords every time
    for service in compose["services"].values():
        for key, value in (service.get("environment") or {}).items():
            if "PASSWORD" in key or "URL" in key:
                assert "${" in str(value), f"{key} is written in the file"


def test_the_nats_servers_form_one_cluster(compose: dict[str, Any]) -> None:
    nodes = {n: s for n, s in compose["services"].items() if n.startswith("nats-")}
    assert len(nodes) == 3
    for name, service in nodes.items():
        cmd = service["command"]
        assert "-js" in cmd and cmd[cmd.index("-n") + 1] == name
        routes = cmd[cmd.index("--routes") + 1].split(",")
        assert sorted(routes) == sorted(f"nats://{o}:6222" for o in nodes if o != name)
    for service in nodes.values():  # each node: the same users and permissions
        assert "./deploy/nats.conf:/etc/nats/nats.conf:ro" in service["volumes"]
        assert service["command"][-2:] == ["-c", "/etc/nats/nats.conf"]
        assert "--user" not in service["command"] and "--pass" not in service["command"]
    for service in _tidzam(compose).values():
        url = service["environment"]["TIDZAM_NATS_URL"]
        assert [u.split("@")[1] for u in url.split(",")] == [f"{n}:4222" for n in sorted(nodes)]


# which NATS user and database user each service logs in as (None: no database)
LOGINS = {"init": ("tidzam", "tidzam"), "ctl": ("tidzam", "tidzam"),
          "projector": ("projector", PROJECTOR), "gateway": ("gateway", READER),
          "classifier": ("classifier", None), "sources": ("sources", None),
          "live": ("live", None), "archiver": ("archiver", None),
          "extractor": ("extractor", None), "gain-control": ("gain-control", None)}


def _tidzam(compose: dict[str, Any]) -> dict[str, Any]:
    return {name: s for name, s in compose["services"].items() if s.get("image") == "tidzam:local"}


def test_each_service_logs_in_as_its_own_role(compose: dict[str, Any]) -> None:
    """As under `tidzam_ctl up`: the operator and the superuser for `init` and `ctl`
    alone, every other service its own NATS role and, if it uses SQL, its own role."""
    assert set(_tidzam(compose)) == set(LOGINS)
    for name, service in _tidzam(compose).items():
        nats_user, db_user = LOGINS[name]
        env = service["environment"]
        variable = "TIDZAM_NATS_PASSWORD" + ("" if nats_user == "tidzam" else
                                             compose_variable(nats_user)[20:])
        for url in env["TIDZAM_NATS_URL"].split(","):
            assert url.startswith(f"nats://{nats_user}:${{{variable}"), (name, url)
        if db_user is None:
            assert "TIDZAM_DATABASE_URL" not in env, name
        else:
            assert env["TIDZAM_DATABASE_URL"].startswith(f"postgresql://{db_user}:"), name
        holds_role_passwords = {"TIDZAM_DB_PROJECTOR_PASSWORD", "TIDZAM_DB_READER_PASSWORD"}
        assert (holds_role_passwords <= set(env)) is (name in ("init", "ctl")), name
        if name not in ("init", "nats-1"):
            assert "init" in service["depends_on"], name
    assert compose["services"]["init"]["command"] == ["python", "-m", "tidzam_ctl", "init"]


def test_the_nodes_users_are_the_embedded_servers(tmp_path: Path) -> None:
    """deploy/nats.conf is what the code generates (the same users and permissions as
    `up`), and a real nats-server given it and the .env's passwords enforces them."""
    assert (REPO / "deploy" / "nats.conf").read_text() == compose_config(), (
        "regenerate it: python -m tidzam_ctl.stack.nats > deploy/nats.conf")
    generated = subprocess.run([str(REPO / "scripts" / "compose-env")], capture_output=True,
                               text=True, check=True).stdout
    values = dict(line.split("=", 1) for line in generated.split())
    port = _dead_port()
    server = subprocess.Popen(
        [str(find_binary()), "-c", str(REPO / "deploy" / "nats.conf"), "-js", "-sd",
         str(tmp_path), "-a", "127.0.0.1", "-p", str(port)],
        env={**os.environ, **values}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60  # two workers' stacks starting beside it
        while not _answers(port):
            assert server.poll() is None, server.communicate()[1].decode(errors="replace")
            assert time.monotonic() < deadline, "nats-server did not start in 60 s"
            time.sleep(0.05)
        asyncio.run(_roles_enforced(port, values))
    finally:
        server.terminate()
        server.wait(10)


def _answers(port: int) -> bool:
    """The server sends its INFO: it is ready for clients."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            return sock.recv(4) == b"INFO"
    except OSError:
        return False


async def _roles_enforced(port: int, values: dict[str, str]) -> None:
    operator = await nats.connect(f"nats://tidzam:{values['TIDZAM_NATS_PASSWORD']}"
                                  f"@127.0.0.1:{port}")
    await ensure_streams(operator.jetstream())
    for role, allowed in (("classifier", True), ("gateway", False)):
        problems: list[str] = []

        async def error_cb(exc: Exception, problems: list[str] = problems) -> None:
            problems.append(str(exc))

        nc = await nats.connect(f"nats://{role}:{values[compose_variable(role)]}"
                                f"@127.0.0.1:{port}", error_cb=error_cb)
        try:
            await nc.jetstream().publish("tidzam.pred.s.0", b"x", timeout=2)
            stored = True
        except (NatsError, TimeoutError):
            stored = False
        await nc.close()
        assert stored is allowed and bool(problems) is not allowed, (role, problems)
    with pytest.raises(NatsError):
        await nats.connect(f"nats://gateway:{values['TIDZAM_NATS_PASSWORD']}@127.0.0.1:{port}",
                           allow_reconnect=False, max_reconnect_attempts=0)
    await operator.close()


async def test_init_prepares_servers_it_did_not_start(nc: Client, nats_server: NatsServer,
                                                      pg_dsn: str, tmp_path: Path) -> None:
    """`tidzam_ctl init` (docker-compose's first service): the streams at the site's
    limits, the migrations, and the two roles with the passwords it is given."""
    passwords = {PROJECTOR: secrets.token_urlsafe(24), READER: secrets.token_urlsafe(24)}
    done = ctl(tmp_path, "init", site={
        "TIDZAM_NATS_URL": nats_server.url, "TIDZAM_DATABASE_URL": pg_dsn,
        "TIDZAM_DB_PROJECTOR_PASSWORD": passwords[PROJECTOR],
        "TIDZAM_DB_READER_PASSWORD": passwords[READER], "TIDZAM_RETAIN_AUDIO_H": "5"})
    assert done.returncode == 0, done.stderr
    assert (await nc.jetstream().stream_info(AUDIO.name)).config.max_age == 5 * 3600
    for role, password in passwords.items():
        host = pg_dsn.split("@", 1)[1]
        async with await psycopg.AsyncConnection.connect(
                f"postgresql://{role}:{password}@{host}") as conn:
            assert await (await conn.execute("SELECT count(*) FROM detections")).fetchone()
    alone = ctl(tmp_path, "init", site={"TIDZAM_NATS_URL": nats_server.url})
    assert alone.returncode == 1 and "TIDZAM_DATABASE_URL" in alone.stderr
    one = ctl(tmp_path, "init", site={"TIDZAM_NATS_URL": nats_server.url,
                                      "TIDZAM_DATABASE_URL": pg_dsn,
                                      "TIDZAM_DB_READER_PASSWORD": "x" * 24})
    assert one.returncode != 0 and "or neither" in one.stderr


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_server_list_connects_to_the_one_that_answers(nats_server: NatsServer) -> None:
    """The services' comma-separated URL: a dead first server does not stop them."""
    nc = await connect(f"nats://127.0.0.1:{_dead_port()},{nats_server.url}", "test")
    assert nc.is_connected
    await ensure_streams(nc.jetstream())
    await nc.drain()


def test_stream_replicas_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert stream_replicas() == 1
    monkeypatch.setenv("TIDZAM_STREAM_REPLICAS", "3")
    assert stream_replicas() == 3
    from bus.connect import BusError

    monkeypatch.setenv("TIDZAM_STREAM_REPLICAS", "nine")
    with pytest.raises(BusError):
        stream_replicas()


def test_docker_compose_itself_validates_the_file(tmp_path: Path) -> None:
    """``docker-compose config``: the file as Compose reads it, variables filled from a
    generated .env (no daemon needed; Debian's docker-compose, installed by scripts/test)."""
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is not installed: apt-get install docker-compose "
                    "(scripts/test does as root)")
    env_file = tmp_path / ".env"
    env_file.write_text(subprocess.run([str(REPO / "scripts" / "compose-env")],
                                       capture_output=True, text=True, check=True).stdout)
    secrets = dict(line.split("=", 1) for line in env_file.read_text().split())
    done = subprocess.run([exe, "--project-directory", str(REPO), "--env-file", str(env_file),
                           "-f", str(REPO / "docker-compose.yml"), "config"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
    assert "${" not in done.stdout and "WARNING" not in done.stderr, done.stderr
    classifier = resolved["services"]["classifier"]["environment"]
    assert secrets["TIDZAM_NATS_PASSWORD_CLASSIFIER"] in classifier["TIDZAM_NATS_URL"]
    for name, service in resolved["services"].items():  # the operator's: init and ctl only
        if name not in ("init", "ctl") and not name.startswith("nats-"):
            env = str(service.get("environment"))
            assert secrets["TIDZAM_NATS_PASSWORD"] not in env, name
            assert (secrets["TIDZAM_DB_PASSWORD"] not in env) is (name != "timescaledb"), name
    assert resolved["services"]["init"]["restart"] == "no"
    assert {"nats-1", "nats-2", "nats-3", "projector", "gateway"} <= set(resolved["services"])
