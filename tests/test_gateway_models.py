"""Models over the gateway: the registry listed, a version deployed and rolled back by
REST and socket.io, answered by the classifiers' model requests
(``consumers.classifier.model_requests``) over a real nats-server, with the same checks
as ``tidzam_ctl model deploy``; who may do it, and what a client hears when no
classifier runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nats.aio.client import Client
from psycopg_pool import AsyncConnectionPool

from bus.history import read_deployments
from consumers.classifier.model_requests import ModelRequests
from inference.registry import ModelRegistry
from tests.gateway_served import Served, serve
from tests.test_model_registry import SELECTOR, SHIPPED, later, variant


@pytest.fixture
async def served(nc: Client, pg_pool: AsyncConnectionPool[Any], pg_dsn: str,
                 tmp_path: Path) -> AsyncIterator[Served]:
    async with serve(nc, pg_pool, pg_dsn, tmp_path) as gateway:
        yield gateway


async def _deployed(nc: Client) -> list[tuple[str, str]]:
    events, _ = await read_deployments(nc.jetstream())
    return [(e.model_id, e.model_version) for _, e in events]


async def _post(url: str, token: str | None, body: Any = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.post(url, json=body,
                                                           headers=headers) as r:
        return r.status, await r.json()


async def test_models_are_listed_deployed_and_rolled_back_through_the_gateway(
        served: Served, nc: Client, tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    good, _ = registry.add(variant(tmp_path / "v1", later(1)))
    broken, _ = registry.add(variant(tmp_path / "v2", later(2)))
    (broken.path / "model.tflite").write_bytes(b"garbage")
    requests = ModelRequests(nc, registry, SELECTOR)
    await requests.start()
    try:
        client = await served.client(served.reader)
        listed = await client.call("sys", {"sys": {"classifier": {"models": "selector"}}},
                                   timeout=30)
        rows = {r["version"]: r for r in listed["sys"]["classifier"]["models"]}
        assert rows[SHIPPED]["deployed"] is True  # the baseline: TIDZAM_MODEL_DIR
        assert rows[later(1)]["deployed"] is False and rows[later(1)]["problem"] is None
        assert rows[later(1)]["per_class"]["speech"]["f1"] > 0  # the folder's metrics
        assert rows[later(2)]["problem"] is None  # a broken model file shows at deploy

        # a read token may not deploy; nothing is published
        refused = await client.call("sys", {"sys": {"classifier": {"deploy": good.spec}}},
                                    timeout=30)
        assert "control token" in refused["error"]
        status, _ = await _post(f"{served.url}/api/models/deploy", served.reader,
                                {"model": good.spec})
        assert status == 403
        assert await _deployed(nc) == []

        # refused deploys: a model file that does not run, an unknown model, a bad name
        status, body = await _post(f"{served.url}/api/models/deploy", served.control,
                                   {"model": broken.spec})
        assert status == 422 and "does not run" in body["detail"], body
        status, body = await _post(f"{served.url}/api/models/deploy", served.control,
                                   {"model": "nosuchmodel"})
        assert status == 422 and "nosuchmodel" in body["detail"], body
        status, body = await _post(f"{served.url}/api/models/deploy", served.control,
                                   {"model": "../../etc/passwd"})
        assert status == 422, body
        assert await _deployed(nc) == []

        # deployed by REST, rolled back by socket.io
        status, body = await _post(f"{served.url}/api/models/deploy", served.control,
                                   {"model": good.spec})
        assert status == 200, body
        assert (body["version"], body["previous"]) == (later(1), SHIPPED)
        assert await _deployed(nc) == [("selector", later(1))]
        async with aiohttp.ClientSession() as http, http.get(
                f"{served.url}/api/models?name=selector") as r:
            now = {row["version"]: row["deployed"] for row in await r.json()}
        assert now[later(1)] is True and now[SHIPPED] is False
        admin = await served.client(served.control)
        back = await admin.call("sys", {"sys": {"classifier": {"rollback": "selector"}}},
                                timeout=30)
        assert back["sys"]["classifier"]["model"]["version"] == SHIPPED, back
        assert await _deployed(nc) == [("selector", later(1)), ("selector", SHIPPED)]
        status, body = await _post(f"{served.url}/api/models/selector@1.0.0/rollback",
                                   served.control)
        assert status == 422 and "NAME" in body["detail"], body
        await client.disconnect()
        await admin.disconnect()
    finally:
        await requests.stop()

    # no classifier running: a clear answer, not a hang
    status, body = await _post(f"{served.url}/api/models/deploy", served.control,
                               {"model": good.spec})
    assert status == 503 and "no classifier" in body["detail"], body
    assert len(await _deployed(nc)) == 2
