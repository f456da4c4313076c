"""docker-compose.yml: what can be checked without a Docker daemon (none here, no image hub).

Every Tidzam service runs a module that exists and has a ``main``; every setting it is
given is one a Tidzam settings class reads; every ``${VAR}`` comes from
``scripts/compose-env`` (no password in the repository); the NATS servers form one
cluster; the cluster URL form the services get works with the real client.
"""

from __future__ import annotations

import importlib
import re
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bus.connect import connect, ensure_streams, stream_replicas
from consumers.archiver import ArchiverSettings
from consumers.classifier.service import ClassifierSettings
from consumers.extractor.service import ExtractorSettings
from consumers.gain_controller import GainControllerSettings
from producers.live_service import LiveSettings
from producers.source_service import SourcesSettings
from projections.gateway.app import GatewaySettings
from projections.service import ProjectorSettings
from tidzam_ctl.settings import CtlSettings
from tidzam_ctl.stack.nats import NatsServer

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
    tidzam = {name: s for name, s in compose["services"].items()
              if s.get("image") == "tidzam:local"}
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
    url = compose["x-tidzam"]["environment"]["TIDZAM_NATS_URL"]
    assert [u.split("@")[1] for u in url.split(",")] == [f"{n}:4222" for n in sorted(nodes)]


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
    assert secrets["TIDZAM_NATS_PASSWORD"] in classifier["TIDZAM_NATS_URL"]
    assert {"nats-1", "nats-2", "nats-3", "projector", "gateway"} <= set(resolved["services"])
