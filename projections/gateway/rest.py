"""The gateway's REST/JSON API: the same reads and controls as socket.io, for scripts
and Grafana's JSON/Infinity datasources (OpenAPI at ``/api/openapi.json``). Tokens as
``Authorization: Bearer <token>``: control routes need a ``control`` token, reads a
``read`` one unless reads are public."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from bus_schemas import SourceRemoved
from projections.gateway import seed
from projections.gateway.auth import Role
from projections.gateway.seed import MAX_LIMIT

if TYPE_CHECKING:
    from projections.gateway.app import Gateway

log = logging.getLogger(__name__)


def register(gateway: Gateway) -> None:
    api = gateway.api

    def needs(role: Role) -> Any:
        async def check(authorization: Annotated[str | None, Header()] = None) -> None:
            token = authorization.removeprefix("Bearer ").strip() if authorization else None
            granted = gateway.role_of(token)
            if granted == "control" or (role == "read" and granted == "read"):
                return
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
        return await gateway._rows("SELECT name, kind, location, channels, sample_rate, "
                                "permanent, state, since, last_error FROM sources "
                                "ORDER BY name")

    @api.post("/api/sources", dependencies=[control])
    async def load(body: dict[str, Any]) -> dict[str, str]:
        """Load a source: the seed's ``loadsource`` fields."""
        try:
            event = seed.load_source({"loadsource": body}, gateway.settings.archive_dir,
                                     time.time_ns())
        except seed.SeedRequestError as exc:
            raise HTTPException(422, str(exc)) from exc
        await gateway._publish(event)
        return {"loadsource": event.source}

    @api.delete("/api/sources/{name}", dependencies=[control])
    async def unload(name: str) -> dict[str, str]:
        try:
            seed.unload_name({"name": name})
        except seed.SeedRequestError as exc:
            raise HTTPException(422, str(exc)) from exc
        await gateway._publish(SourceRemoved(source=name, at_ns=time.time_ns()))
        return {"unloadsource": name}

    @api.get("/api/databases", dependencies=[read])
    async def databases() -> dict[str, Any]:
        """Archive ranges per database, the seed's ``database`` answer."""
        return await gateway.databases()

    @api.get("/api/detections", dependencies=[read])
    async def detections(source: str | None = None, channel: int | None = None,
                         label: str | None = None, since: datetime | None = None,
                         until: datetime | None = None,
                         limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 1000
                         ) -> list[dict[str, Any]]:
        """Detections of a channel (or source, or everywhere) between two times."""
        source, channel, label = filters(source, channel, label)
        return await gateway.detections(source, channel, label, since, until, limit)

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
        await gateway._publish(rule_set)
        return seed.rules_to_seed(rule_set)

    @api.get("/api/samples/info", dependencies=[read])
    async def samples_info() -> list[dict[str, Any]]:
        """Per destination and class: samples, unchecked, reviewed."""
        return await gateway.samples_info()

    @api.get("/api/mixer", dependencies=[read])
    async def mixer() -> list[dict[str, Any]]:
        """Each channel's mixer now: gain, mute, who set it and why."""
        return await gateway._rows("SELECT * FROM mixer_state ORDER BY source, channel")

    @api.get("/api/status")
    async def status() -> dict[str, Any]:
        """Liveness: the bus connection and the windows broadcast so far."""
        return {"bus": gateway._nc.is_connected, "broadcast_windows": gateway.broadcast_windows,
                "clients": gateway.clients}


def _text(value: Any) -> str:
    """``value`` as text that UTF-8 can carry (a lone surrogate escaped), at most 200."""
    return str(value)[:200].encode("utf-8", "backslashreplace").decode("utf-8")
