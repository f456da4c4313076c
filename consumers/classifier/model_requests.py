"""A classifier answers the gateway's model requests (``bus_schemas.deploy``).

The gateway may not import the registry nor LiteRT; every classifier process has both.
On ``subjects.MODEL_IN`` in the queue group ``MODEL_QUEUE`` (one classifier answers a
request), it lists the registry's versions with their held-out metrics, and deploys or
rolls back exactly as ``tidzam_ctl model`` does (``inference.deploying``): the folder is
validated off the event loop, then the ``ModelDeployed`` every classifier follows is
published. Requests are handled one at a time, so two deploys never race on the history.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bus.answer import answer
from bus.history import read_deployments
from bus.publisher import Publisher
from bus_schemas import subjects as subj
from bus_schemas.deploy import MODEL_QUEUE, ModelRequest, unpack
from bus_schemas.requests import RequestError
from inference.deploying import (
    DeployPlan,
    baseline,
    checked,
    listing,
    plan_deploy,
    plan_rollback,
)
from inference.registry import DeployHistory, ModelRegistry

log = logging.getLogger(__name__)


class ModelRequests:
    def __init__(self, nc: Client, registry: ModelRegistry | None, model_dir: Path) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._pub = Publisher(self._js)
        self._registry = registry
        self._model_dir = model_dir
        self._lock = asyncio.Lock()
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(subj.MODEL_IN, queue=MODEL_QUEUE,
                                             cb=self._on_request)
        log.info("model requests: answering %s", subj.MODEL_IN)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def _on_request(self, msg: Msg) -> None:
        async def handle(data: bytes) -> dict[str, Any]:
            async with self._lock:
                return await self.handle(unpack(data))
        await answer(msg, handle, "model")

    async def handle(self, request: ModelRequest) -> dict[str, Any]:
        """The answer to one request; raises TidzamError (unknown model, a refused
        deploy) for an ``{"error": ...}`` answer."""
        registry = self._registry
        if registry is None:
            raise RequestError("this classifier has no model registry (TIDZAM_HOME is not set)")
        events, _ = await read_deployments(self._js)
        history = DeployHistory(events, baseline(self._model_dir))
        if request.op == "list":
            rows = await asyncio.to_thread(listing, registry, history, request.spec or None)
            return {"models": rows}
        if not request.spec:
            raise RequestError(f"{request.op} needs a model: NAME or NAME@VERSION")
        plan: DeployPlan
        if request.op == "deploy":
            folder = await asyncio.to_thread(checked, registry, request.spec)
            plan = plan_deploy(folder, history, request.new_windowing)
            verb = "deployed"
        else:
            plan = await asyncio.to_thread(plan_rollback, registry, history, request.spec,
                                           request.new_windowing)
            verb = "rolled back to"
        await self._pub.publish_now(plan.event)
        message = plan.describe(verb)
        log.info("%s (asked by %s)", message, request.by or "?")
        return {"model": {"model_id": plan.event.model_id,
                          "version": plan.event.model_version,
                          "previous": plan.previous.version if plan.previous else None,
                          "path": plan.event.path, "message": message}}
