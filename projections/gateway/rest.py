"""The gateway's REST/JSON API: the same reads and controls as socket.io, for scripts
and Grafana's JSON/Infinity datasources (OpenAPI at ``/api/openapi.json``). Tokens as
``Authorization: Bearer <token>``: control routes need a ``control`` token, reads a
``read`` one unless reads are public."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bus_schemas import MixerCommand, SampleLabelled, SourceRemoved
from bus_schemas.control import CLASS_NAME, DISCARDED
from projections.gateway import asks, seed
from projections.gateway.auth import Role
from projections.gateway.metrics import register_metrics
from projections.gateway.seed import MAX_LIMIT, filters_sql
from projections.gateway.web import register_web

if TYPE_CHECKING:
    from projections.gateway.app import Gateway

log = logging.getLogger(__name__)


MAX_BODY_BYTES = 1_000_000  # a REST request's body; larger ones get a 413


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` (declared or sent in chunks) is
    answered 413 before any route reads it; the body is read at most once."""

    def __init__(self, app: Any, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length", b"0")
        too_big = not declared.isdigit() or int(declared) > self.max_bytes
        body = bytearray()
        while not too_big:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            too_big = len(body) > self.max_bytes
            if not message.get("more_body", False):
                break
        if too_big:
            log.warning("refused a REST request: body over %d bytes", self.max_bytes)
            await JSONResponse({"detail": f"the body is over {self.max_bytes} bytes"},
                               status_code=413)(scope, receive, send)
            return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}
        await self.app(scope, replay, send)


def register(gateway: Gateway) -> None:
    api = gateway.api
    api.add_middleware(BodyLimit)

    def needs(role: Role) -> Any:
        async def check(authorization: Annotated[str | None, Header()] = None) -> str:
            """The caller's name (its token's; ``public`` for a public read)."""
            token = authorization.removeprefix("Bearer ").strip() if authorization else None
            granted = gateway.role_of(token)
            if granted == "control" or (role == "read" and granted == "read"):
                entry = gateway.tokens.check(token, role)
                return entry.name if entry else "public"
            log.warning("refused a REST request: needs a %s token", role)
            raise HTTPException(401 if token is None else 403,
                                f"this needs a {role} token (Authorization: Bearer ...)")
        return Depends(check)

    read, control = needs("read"), needs("control")

    @api.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 with where and what, never the input: FastAPI's own answer echoes it, and
        an input with NaN or a lone surrogate (JSON "\\ud800") made that answer a 500."""
        detail = [{"loc": [_text(part) for part in error.get("loc", ())],
                   "msg": _text(error.get("msg", "invalid")),
                   "type": _text(error.get("type", ""))} for error in exc.errors()[:10]]
        return JSONResponse({"detail": detail or "invalid request"}, status_code=422)

    def filters(source: str | None, channel: int | None, label: str | None
                ) -> tuple[str | None, int | None, str | None]:
        try:
            return seed.read_filters(source, channel, label)
        except seed.SeedRequestError as exc:
            raise HTTPException(422, str(exc)) from exc

    @api.get("/api/classifiers", dependencies=[read])
    async def classifiers() -> list[dict[str, Any]]:
        """Deployed models, the seed's ``classifier list``."""
        return await gateway.classifiers()

    @api.get("/api/sources", dependencies=[read])
    async def sources() -> list[dict[str, Any]]:
        """Every source the projection knows, with its state."""
        return await gateway.rows("SELECT name, kind, location, channels, sample_rate, "
                                "permanent, state, since, attempts, last_error FROM sources "
                                "ORDER BY name")

    @api.post("/api/sources", dependencies=[control])
    async def load(body: dict[str, Any]) -> dict[str, str]:
        """Load a source: the seed's ``loadsource`` fields."""
        try:
            event = seed.load_source({"loadsource": body}, gateway.settings.archive_dir,
                                     time.time_ns())
        except seed.SeedRequestError as exc:
            raise HTTPException(422, str(exc)) from exc
        await gateway.publish(event)
        return {"loadsource": event.source}

    @api.delete("/api/sources/{name}", dependencies=[control])
    async def unload(name: str) -> dict[str, str]:
        try:
            seed.unload_name({"name": name})
        except seed.SeedRequestError as exc:
            raise HTTPException(422, str(exc)) from exc
        await gateway.publish(SourceRemoved(source=name, at_ns=time.time_ns()))
        return {"unloadsource": name}

    @api.get("/api/databases", dependencies=[read])
    async def databases() -> dict[str, Any]:
        """Archive ranges per database, the seed's ``database`` answer."""
        return await gateway.databases()

    @api.get("/api/detections", dependencies=[read])
    async def detections(source: str | None = None, channel: int | None = None,
                         label: str | None = None, since: datetime | None = None,
                         until: datetime | None = None,
                         limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 1000,
                         newest: bool = False) -> list[dict[str, Any]]:
        """Detections of a channel (or source, or everywhere) between two times, oldest
        first (``newest=true``: the last ones first)."""
        source, channel, label = filters(source, channel, label)
        return await gateway.detections(source, channel, label, since, until, limit, newest)

    @api.get("/api/detections/hourly", dependencies=[read])
    async def hourly(source: str | None = None, label: str | None = None,
                     since: datetime | None = None, until: datetime | None = None,
                     limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 1000
                     ) -> list[dict[str, Any]]:
        """Detections per UTC hour, label and source."""
        source, _, label = filters(source, None, label)
        return await gateway.hourly(source, label, since, until, limit)

    @api.get("/api/health", dependencies=[read])
    async def health(source: str | None = None, channel: int | None = None,
                     since: datetime | None = None, until: datetime | None = None,
                     limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 1000
                     ) -> list[dict[str, Any]]:
        """Channel health seconds: level, peak, clipping, noise floor, hum, dead."""
        source, channel, _ = filters(source, channel, None)
        return await gateway.health(source, channel, since, until, limit)

    @api.get("/api/rules", dependencies=[read])
    async def get_rules() -> dict[str, Any]:
        """The extraction rules in force, keyed as ``PUT /api/rules`` takes them."""
        return seed.rules_to_seed(await gateway.rules())

    @api.put("/api/rules", dependencies=[control])
    async def set_rules(rules: dict[str, Any]) -> dict[str, Any]:
        """Replace the whole rule set (the seed's ``set rules``)."""
        try:
            rule_set = seed.rules_from_seed({"rules": rules}, time.time_ns(), "gateway")
        except seed.SeedRequestError as exc:
            raise HTTPException(422, str(exc)) from exc
        await gateway.publish(rule_set)
        return seed.rules_to_seed(rule_set)

    @api.get("/api/samples/info", dependencies=[read])
    async def samples_info() -> list[dict[str, Any]]:
        """Per destination and class: samples, unchecked, reviewed."""
        return await gateway.samples_info()

    @api.get("/api/mixer", dependencies=[read])
    async def mixer() -> list[dict[str, Any]]:
        """Each channel's mixer now: gain, mute, who set it and why."""
        return await gateway.rows("SELECT * FROM mixer_state ORDER BY source, channel")

    @api.get("/api/status")
    async def status() -> dict[str, Any]:
        """Liveness: the bus connection and the windows broadcast so far."""
        return {"bus": gateway._nc.is_connected, "broadcast_windows": gateway.broadcast_windows,
                "clients": gateway.clients}

    register_controls(gateway, api, read, control)
    register_web(gateway, api, read)
    register_metrics(gateway, api, read)


def _text(value: Any) -> str:
    """``value`` as text that UTF-8 can carry (a lone surrogate escaped), at most 200."""
    return str(value)[:200].encode("utf-8", "backslashreplace").decode("utf-8")


class MixerRequest(BaseModel):
    """A person's mixer setting for one channel (``tidzam_ctl mixer set``): it pins the
    channel until ``auto`` releases it to the gain controller."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["gain", "mute", "unmute", "auto"]
    gain_db: float = 0.0
    reason: Annotated[str, Field(max_length=200)] = ""


class DeployRequest(BaseModel):
    """A model version to deploy: ``NAME`` (its newest) or ``NAME@VERSION``."""

    model_config = ConfigDict(extra="forbid")

    model: Annotated[str, Field(max_length=200)]
    new_windowing: bool = False  # allow another window length or rate (restart needed)


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    new_windowing: bool = False


class LabelRequest(BaseModel):
    """A review of an extracted sample: a class, ``accept`` the proposed one, ``discard``
    it, or ``withdraw`` the reviews (unchecked again)."""

    model_config = ConfigDict(extra="forbid")

    label: Annotated[str, Field(max_length=128)] | None = None
    accept: bool = False
    discard: bool = False
    withdraw: bool = False


def register_controls(gateway: Gateway, api: FastAPI, read: Any, caller: Any) -> None:
    """The models, the mixer, the samples and their reviews."""

    async def asked(request: Awaitable[dict[str, Any]]) -> dict[str, Any]:
        try:
            return await request
        except asks.Refused as exc:
            log.info("model request refused: %s", exc)
            raise HTTPException(exc.status, str(exc)) from None

    @api.get("/api/models", dependencies=[read])
    async def models(name: Annotated[str, Query(max_length=200)] = "") -> list[Any]:
        """Every version in the model registry (of ``name``): created, held-out accuracy
        and per-class metrics, deployed or not (answered by a classifier)."""
        answer = await asked(asks.models(gateway._nc, "list", name))
        return list(answer.get("models", []))

    @api.post("/api/models/deploy")
    async def deploy(body: DeployRequest, by: str = caller) -> dict[str, Any]:
        """Deploy a registry version: a classifier validates it (one inference) and
        publishes the ``ModelDeployed`` that every classifier switches to."""
        answer = await asked(asks.models(gateway._nc, "deploy", body.model,
                                         body.new_windowing, f"gateway:{by}"))
        return dict(answer["model"])

    @api.post("/api/models/{name}/rollback")
    async def rollback(name: Annotated[str, Path(max_length=200)],
                       body: RollbackRequest | None = None,
                       by: str = caller) -> dict[str, Any]:
        """Deploy again the version deployed before the current one."""
        new_windowing = body.new_windowing if body is not None else False
        answer = await asked(asks.models(gateway._nc, "rollback", name, new_windowing,
                                         f"gateway:{by}"))
        return dict(answer["model"])

    @api.post("/api/mixer/{source}/{channel}")
    async def mixer_set(source: str, channel: int, body: MixerRequest,
                        by: str = caller) -> dict[str, Any]:
        """Set a channel's gain, mute, unmute, or release it to the gain controller."""
        await known_channel(gateway, source, channel)
        try:
            command = MixerCommand(command_id=f"manual-{uuid.uuid4().hex}", source=source,
                                   channel=channel, action=body.action,
                                   gain_db=body.gain_db, reason=body.reason,
                                   origin="manual", by=f"gateway:{by}", at_ns=time.time_ns())
        except ValidationError as exc:
            first = exc.errors(include_input=False)[0]
            raise HTTPException(422, f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
                                ) from None
        await gateway.publish(command)
        return {"command_id": command.command_id, "action": command.action,
                "gain_db": command.gain_db}

    @api.get("/api/samples", dependencies=[read])
    async def samples(label: str | None = None, destination: str | None = None,
                      unchecked: bool = False,
                      limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100
                      ) -> list[dict[str, Any]]:
        """Extracted samples, newest first: their proposed label, review and path."""
        for value in (label, destination):
            if value is not None and not CLASS_NAME.fullmatch(value):
                raise HTTPException(422, "label and destination are class names")
        where, params = filters_sql(("label", label), ("destination", destination))
        if unchecked:
            where += (" AND " if where else " WHERE ") + "reviewed_label IS NULL"
        return await gateway.rows(
            "SELECT sample_id, time, end_time, source, channel, label, confidence, reason, "
            "destination, path, reviewed_label, reviewed_by, reviewed_at FROM samples"
            f"{where} ORDER BY time DESC LIMIT %s", (*params, limit))

    @api.post("/api/samples/{sample_id}/label")
    async def label(sample_id: Annotated[str, Path(pattern=seed.SAMPLE_ID)], body: LabelRequest,
                    by: str = caller) -> dict[str, str]:
        """Review a sample (a ``SampleLabelled`` event; the latest review wins)."""
        chosen = [body.label is not None, body.accept, body.discard, body.withdraw]
        if sum(chosen) != 1:
            raise HTTPException(422, "give exactly one of label, accept, discard, withdraw")
        if body.label is not None and not CLASS_NAME.fullmatch(body.label):
            raise HTTPException(422, "label is a class name: letters, digits, '_', '-' "
                                "between levels (birds-american_robin)")
        found = await gateway.rows("SELECT label, reviewed_label FROM samples "
                                   "WHERE sample_id = %s", (sample_id,))
        if not found:
            raise HTTPException(404, "no such sample")
        row = found[0]
        new = (row["label"] if body.accept else DISCARDED if body.discard
               else "" if body.withdraw else str(body.label))
        await gateway.publish(SampleLabelled(
            sample_id=sample_id, label=new,
            previous_label=row["reviewed_label"] or row["label"] or "", by=f"gateway:{by}",
            at_ns=time.time_ns()))
        return {"sample_id": sample_id, "label": new}


async def known_channel(gateway: Gateway, source: str, channel: int) -> None:
    """A channel of a source the projection knows, or a 404/422 that says which."""
    try:
        seed.read_filters(source, channel, None)
    except seed.SeedRequestError as exc:
        raise HTTPException(422, str(exc)) from exc
    rows = await gateway.rows("SELECT channels FROM sources WHERE name = %s", (source,))
    if not rows:
        raise HTTPException(404, f"no source named {source!r}")
    channels = rows[0]["channels"]
    if channels and channel not in channels:
        raise HTTPException(422, f"{source} has channels {','.join(map(str, channels))}, "
                            f"not {channel}")
