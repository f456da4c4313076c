"""The gateway: one ASGI app, socket.io (the original's API, live broadcasts, rooms) and
a REST/JSON API (OpenAPI at ``/api/openapi.json``, docs at ``/api/docs``), answered
from the PostgreSQL projections and the live bus.

socket.io, as the seed (``../shared/seed/tidzam-readme.md``):
- ``sys`` ``{'sys': {'classifier': {'list': ''}}}``, ``{'sys': {'database': ''}}``,
  ``{'sys': {'loadsource': {...}}}`` (with only a name: unload, as the seed's example),
  ``{'sys': {'unloadsource': {'name': ...}}}``; the answer is emitted on ``sys`` and is
  also the request's acknowledgement;
- ``SampleExtractionRules``: ``{'get': 'rules'}``, ``{'set': 'rules', 'rules': {...}}``,
  ``{'get': 'database_info'}``;
- every window is broadcast on ``sys`` as ``[{chan, source, analysis: {...}}]``, to the
  room ``all`` that a client joins on connecting; ``subscribe`` ``{source, channel?}``
  moves it to the rooms of that source or channel instead (``unsubscribe`` leaves one,
  ``{'all': true}`` comes back to everything); ``history`` ``{what: detections | hourly
  | health, source, channel?, since?, until?, label?, limit?}`` answers from SQL. Rooms
  may also be asked at connection (``auth={'subscribe': [{source, channel?}]}``), so a
  client reconnecting after a gateway restart is back in them without a request.

Access: the token of a client (socket.io ``auth={'token': ...}``, REST ``Authorization:
Bearer ...``) is checked against ``auth.TokenStore``; control requests (sources, rules)
need a ``control`` token; reads are public unless ``TIDZAM_GATEWAY_PUBLIC_READ=false``.
A refused request gets ``{'error': ...}`` and a log line. Several gateways may serve one
bus: each follows the predictions itself and answers from the same database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import socketio
from fastapi import FastAPI, HTTPException
from fastapi.middleware.cors import CORSMiddleware
from nats.aio.client import Client
from nats.aio.msg import Msg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import Field, SecretStr, ValidationError

from audio import archive
from bus.history import read_deployments, read_rule_sets
from bus.publisher import Publisher
from bus.settings import TidzamSettings
from bus_schemas import (
    DecodeError,
    Event,
    ExtractionRulesSet,
    Prediction,
    SourceRemoved,
    decode,
)
from bus_schemas import subjects as subj
from bus_schemas.live import MAX_BUFFER_SAMPLES, LiveRequest
from bus_schemas.requests import pack_request
from projections import queries
from projections.gateway import asks, rest, seed
from projections.gateway.auth import Role, TokenStore, tokens_path
from projections.gateway.seed import MAX_LIMIT

log = logging.getLogger(__name__)

FLUSH_S = 0.02  # broadcasts are gathered this long, one emit per room


class GatewaySettings(TidzamSettings):
    nats_url: SecretStr
    database_url: SecretStr
    home: Path = Path(".")
    archive_dir: Path | None = None
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(8090, ge=0, le=65_535)
    gateway_public_read: bool = True
    gateway_cors: str = ""  # comma-separated origins allowed (empty: same origin only)
    samples_dir: Path | None = None  # the extractor's samples (default: <home>/samples)
    # the site, for the dashboard's sunrise and sunset (decimal degrees; unset: none shown)
    site_lat: float | None = Field(None, ge=-90.0, le=90.0)
    site_lon: float | None = Field(None, ge=-180.0, le=180.0)
    icecast_host: str | None = None  # where the relay serves each source's mount
    icecast_port: int | None = Field(None, ge=1, le=65_535)

    def samples_root(self) -> Path:
        return self.samples_dir or self.home / "samples"


class Gateway:
    def __init__(self, settings: GatewaySettings, nc: Client,
                 pool: AsyncConnectionPool[Any]) -> None:
        self.settings = settings
        self._nc = nc
        self._js = nc.jetstream()
        self._pub = Publisher(self._js)
        self.pool = pool
        self.tokens = TokenStore(tokens_path(settings.home))
        origins = [o.strip() for o in settings.gateway_cors.split(",") if o.strip()]
        self.sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins=origins,
                                        max_http_buffer_size=1_000_000)
        self.api = FastAPI(title="Tidzam gateway", version="1",
                           openapi_url="/api/openapi.json", docs_url="/api/docs",
                           redoc_url=None)
        if origins:  # browsers on other origins: REST as socket.io
            self.api.add_middleware(CORSMiddleware, allow_origins=origins,
                                    allow_methods=["GET", "POST", "PUT", "DELETE"],
                                    allow_headers=["Authorization", "Content-Type"])
        self.app = socketio.ASGIApp(self.sio, other_asgi_app=self.api)
        self.instance = secrets.token_hex(4)  # live clients of several gateways differ
        self._live_clients: set[str] = set()
        self._pending: list[Prediction] = []
        self.windows_seen = 0  # for /metrics: a counter since this gateway started
        # who hears what: the room "all" (socket.io's, one emit for all of them), and each
        # other client's sources and channels; a client in several overlapping ones still
        # gets each window once
        self._everything: set[str] = set()
        self._rooms: dict[str, set[str]] = {}
        self.broadcast_windows = 0
        self._register_socketio()
        rest.register(self)

    # ------------------------------------------------------------------ access

    def role_of(self, token: str | None) -> Role | None:
        if self.tokens.check(token, "control"):
            return "control"
        if self.tokens.check(token, "read") or self.settings.gateway_public_read:
            return "read"
        return None

    async def _allowed(self, sid: str, data: Any, role: Role, what: str) -> bool:
        session = await self.sio.get_session(sid)
        token = data.get("token") if isinstance(data, dict) else None
        # checked at each request: a token revoked since the connection counts no more
        granted = self.role_of(token if isinstance(token, str) else session.get("token"))
        if granted == "control" or (role == "read" and granted == "read"):
            return True
        log.warning("refused %s from %s (%s): needs a %s token", what, sid,
                    session.get("addr", "?"), role)
        return False

    # --------------------------------------------------------------- socket.io

    def _register_socketio(self) -> None:
        sio = self.sio

        @sio.event  # type: ignore[untyped-decorator]
        async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
            token = auth.get("token") if isinstance(auth, dict) else None
            token = token if isinstance(token, str) else None
            role = self.role_of(token)
            if role is None:
                log.warning("refused a connection from %s: no valid token",
                            environ.get("REMOTE_ADDR", "?"))
                return False
            await sio.save_session(sid, {"token": token, "addr": environ.get("REMOTE_ADDR")})
            await self._enter_all(sid)
            # rooms asked in the handshake (auth {"subscribe": [{source, channel?}, ...]}):
            # a client reconnecting to a restarted gateway gets them back by itself
            wanted = auth.get("subscribe") if isinstance(auth, dict) else None
            if isinstance(wanted, list):
                for item in wanted[:64]:
                    await self.rooms_request(sid, item, enter=True)
            return True

        @sio.on("sys")  # type: ignore[untyped-decorator]
        async def on_sys(sid: str, data: Any = None, *_: Any) -> Any:
            reply = await self.sys_request(sid, data)
            await sio.emit("sys", reply, to=sid)
            return reply

        @sio.on("SampleExtractionRules")  # type: ignore[untyped-decorator]
        async def on_rules(sid: str, data: Any = None, *_: Any) -> Any:
            reply = await self.rules_request(sid, data)
            await sio.emit("SampleExtractionRules", reply, to=sid)
            return reply

        @sio.on("subscribe")  # type: ignore[untyped-decorator]
        async def on_subscribe(sid: str, data: Any = None, *_: Any) -> Any:
            return await self.rooms_request(sid, data, enter=True)

        @sio.on("unsubscribe")  # type: ignore[untyped-decorator]
        async def on_unsubscribe(sid: str, data: Any = None, *_: Any) -> Any:
            return await self.rooms_request(sid, data, enter=False)

        @sio.on("audio")  # type: ignore[untyped-decorator]
        async def on_audio(sid: str, data: Any = None, *_: Any) -> Any:
            if not await self._allowed(sid, data, "read", "live audio"):
                reply: Any = seed.error("live audio needs a read token")
            elif not isinstance(data, dict):
                reply = seed.error("audio must be {'buffer': int16 PCM, 'samplerate': Hz}")
            else:
                reply = await self.live(sid, "audio", buffer=data.get("buffer"),
                                        samplerate=data.get("samplerate"))
            if "error" in reply:
                await sio.emit("sys", reply, to=sid)
            return reply

        @sio.event  # type: ignore[untyped-decorator]
        async def disconnect(sid: str, *args: Any) -> None:
            self._everything.discard(sid)
            self._rooms.pop(sid, None)
            if sid in self._live_clients:
                await self.live(sid, "close", reason="client disconnected")

        @sio.on("history")  # type: ignore[untyped-decorator]
        async def on_history(sid: str, data: Any = None, *_: Any) -> Any:
            if not await self._allowed(sid, data, "read", "history"):
                return seed.error("history needs a read token")
            try:
                return await self.history(data if isinstance(data, dict) else {})
            except (seed.SeedRequestError, HTTPException) as exc:
                return seed.error(exc.detail if isinstance(exc, HTTPException) else str(exc))

    async def sys_request(self, sid: str, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("sys"), dict):
            return seed.error("request must be a JSON.")
        request = data["sys"]
        try:
            if "classifier" in request:
                return await self.classifier_request(sid, data, request["classifier"])
            if "database" in request:
                return {"sys": {"database": await self.databases()}}
            if "loadsource" in request or "unloadsource" in request:
                if not await self._allowed(sid, data, "control", "a source request"):
                    return seed.error("loading or unloading a source needs a control token")
                body = request.get("loadsource", request.get("unloadsource"))
                if "unloadsource" in request or (isinstance(body, dict) and set(body) == {"name"}):
                    name = seed.unload_name(body)
                    await self.publish(SourceRemoved(source=name, at_ns=time.time_ns()))
                    return {"sys": {"unloadsource": name}}
                event = seed.load_source(request, self.settings.archive_dir, time.time_ns())
                await self.publish(event)
                return {"sys": {"loadsource": event.source}}
            if "add_livestream" in request:
                return await self.live(sid, "open")
            if "del_livestream" in request:
                return await self.live(sid, "close", reason="closed by the client")
        except seed.SeedRequestError as exc:
            log.info("sys request refused: %s", exc)
            return seed.error(str(exc))
        return seed.error(f"unknown request {sorted(map(str, request))[:5]}")

    async def classifier_request(self, sid: str, data: Any, body: Any) -> Any:
        """The seed's ``{'list': ''}``; beyond it ``{'models': name?}`` (the registry's
        versions and metrics), ``{'deploy': 'NAME[@VERSION]', 'new_windowing'?: bool}``
        and ``{'rollback': 'NAME'}`` (control)."""
        try:
            if isinstance(body, dict) and ("deploy" in body or "rollback" in body):
                op: Literal["deploy", "rollback"] = "deploy" if "deploy" in body else "rollback"
                if not await self._allowed(sid, data, "control", f"a model {op}"):
                    return seed.error(f"a model {op} needs a control token")
                spec = body[op]
                if not isinstance(spec, str):
                    return seed.error("a model is NAME or NAME@VERSION")
                session = await self.sio.get_session(sid)
                answer = await asks.models(self._nc, op, spec, body.get("new_windowing", False),
                                           f"gateway:{session.get('addr') or sid}")
                return {"sys": {"classifier": answer}}
            if isinstance(body, dict) and "models" in body:
                name = body["models"]
                answer = await asks.models(self._nc, "list", name if isinstance(name, str)
                                           else "")
                return {"sys": {"classifier": answer}}
        except asks.Refused as exc:
            log.info("model request refused: %s", exc)
            return seed.error(str(exc))
        return {"sys": {"classifier": {"list": await self.classifiers()}}}

    async def rules_request(self, sid: str, data: Any) -> Any:
        if not isinstance(data, dict):
            return seed.error("request must be a JSON.")
        try:
            if data.get("get") == "rules":
                return {"rules": seed.rules_to_seed(await self.rules())}
            if data.get("get") == "database_info":
                return {"database_info": await self.samples_info()}
            if data.get("set") == "rules":
                if not await self._allowed(sid, data, "control", "set rules"):
                    return seed.error("setting rules needs a control token")
                session = await self.sio.get_session(sid)
                rule_set = seed.rules_from_seed(data, time.time_ns(),
                                                f"gateway:{session.get('addr') or sid}")
                await self.publish(rule_set)
                return {"rules": seed.rules_to_seed(rule_set)}
        except seed.SeedRequestError as exc:
            log.info("rules request refused: %s", exc)
            return seed.error(str(exc))
        return seed.error("SampleExtractionRules takes {'get': 'rules' | 'database_info'} "
                          "or {'set': 'rules', 'rules': {...}}")

    async def rooms_request(self, sid: str, data: Any, *, enter: bool) -> Any:
        if not isinstance(data, dict):
            return seed.error("subscribe takes {source, channel?} or {all: true}")
        if data.get("all"):
            rooms = ["all"]
        else:
            try:
                source = seed._name(data.get("source"), "source")
                channel = data.get("channel")
                if channel is not None and (not isinstance(channel, int)
                                            or isinstance(channel, bool)
                                            or not 0 <= channel < 1024):
                    raise seed.SeedRequestError("channel must be a channel number (0-1023)")
            except seed.SeedRequestError as exc:
                return seed.error(str(exc))
            rooms = [f"source:{source}" if channel is None else f"channel:{source}:{channel}"]
        for room in rooms:
            if room == "all":
                await (self._enter_all(sid) if enter else self._leave_all(sid))
            elif enter:
                self._rooms.setdefault(sid, set()).add(room)
                await self._leave_all(sid)  # what it asked for instead of everything
            else:
                self._rooms.get(sid, set()).discard(room)
        return {"rooms": sorted((["all"] if sid in self._everything else [])
                                + list(self._rooms.get(sid, ())))}

    @property
    def clients(self) -> int:
        """Connected socket.io clients (in the room of everything or in their own)."""
        return len(self._everything | set(self._rooms))

    async def _enter_all(self, sid: str) -> None:
        self._everything.add(sid)
        await self.sio.enter_room(sid, "all")

    async def _leave_all(self, sid: str) -> None:
        self._everything.discard(sid)
        await self.sio.leave_room(sid, "all")

    # -------------------------------------------------------------------- live

    async def live(self, sid: str, op: Literal["open", "audio", "close"],
                   **fields: Any) -> dict[str, Any]:
        """Hand a live request to the live producer over the bus; its answer."""
        try:
            request = LiveRequest(op=op, client=f"{self.instance}:{sid}", **fields)
        except ValidationError:
            return seed.error("audio must be {'buffer': int16 PCM bytes or a list of "
                              f"at most {MAX_BUFFER_SAMPLES} integers, 'samplerate': Hz}}")
        if op == "close":
            self._live_clients.discard(sid)
        else:
            self._live_clients.add(sid)
        try:
            packed = pack_request(request)
        except (OverflowError, ValueError):  # an integer msgpack cannot carry (2**64)
            return seed.error("audio samples must be 16-bit integers and samplerate in Hz")
        try:
            return await asks.ask(self._nc, subj.LIVE_IN, packed, "live input",
                                  "live input is not running (the stack's `live` process)",
                                  timeout=10)
        except asks.Refused as exc:
            return seed.error(str(exc))

    # --------------------------------------------------------------- broadcast

    async def follow(self, stop: asyncio.Event) -> None:
        """Broadcast every window the bus carries (core NATS: only what comes from now)."""
        sub = await self._nc.subscribe(subj.PRED_ALL, cb=self._on_prediction)
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), FLUSH_S)
                await self.flush()
        finally:
            await sub.unsubscribe()

    async def _on_prediction(self, msg: Msg) -> None:
        try:
            event = decode(msg.headers, msg.data)
        except DecodeError:
            return  # the consumers dead-letter it; nothing to show
        if isinstance(event, Prediction):
            self._pending.append(event)
            self.windows_seen += 1

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        ordered = sorted(pending, key=lambda p: (p.window_start_ns, p.source, p.channel))
        items = [seed.analysis(p) for p in ordered]
        await self.sio.emit("sys", items, room="all")
        if self._rooms:
            where: dict[str, list[int]] = defaultdict(list)  # room → its windows
            for i, p in enumerate(ordered):
                where[f"source:{p.source}"].append(i)
                where[f"channel:{p.source}:{p.channel}"].append(i)
            for sid, rooms in list(self._rooms.items()):
                if sid in self._everything:
                    continue
                mine = sorted({i for room in rooms for i in where.get(room, ())})
                if mine:
                    await self.sio.emit("sys", [items[i] for i in mine], to=sid)
        self.broadcast_windows += len(pending)

    # ------------------------------------------------------------------- reads

    async def classifiers(self) -> list[dict[str, Any]]:
        """Each model: its last deployment on CONTROL, else (a model run from a folder,
        never deployed) the version its predictions carry, from the projection."""
        seen = await self.rows("SELECT DISTINCT ON (model_id) model_id, version, labels "
                                "FROM models ORDER BY model_id, deployed_at DESC NULLS "
                                "LAST, version DESC")
        found = {r["model_id"]: {"name": r["model_id"], "version": r["version"],
                                 "labels": list(r["labels"])} for r in seen}
        history, _ = await read_deployments(self._js)
        for _, d in history:
            found[d.model_id] = {"name": d.model_id, "version": d.model_version,
                                 "labels": list(d.labels)}
        return [found[name] for name in sorted(found)]

    async def databases(self) -> dict[str, Any]:
        root = self.settings.archive_dir
        if root is None or not root.is_dir():
            return {}

        def scan() -> dict[str, Any]:
            out: dict[str, Any] = {}
            for folder in sorted(p for p in root.iterdir() if p.is_dir()):
                files = archive.scan(folder)
                if files:
                    out[folder.name] = {
                        "nb_channels": archive.channel_count(files),
                        "database": [[a.isoformat(), b.isoformat()]
                                     for a, b in archive.ranges(files)]}
            return out
        return await asyncio.to_thread(scan)

    async def rules(self) -> ExtractionRulesSet:
        history, _ = await read_rule_sets(self._js)
        return history[-1][1] if history else ExtractionRulesSet(rules=(), at_ns=0)

    async def samples_info(self) -> list[dict[str, Any]]:
        return await self.rows("SELECT destination, label, samples, unchecked, reviewed "
                                "FROM samples_info ORDER BY destination, label")

    async def rows(self, query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            return [{k: seed.json_value(v) for k, v in row.items()} for row in await cur.fetchall()]

    async def history(self, data: dict[str, Any]) -> dict[str, Any]:
        what = data.get("what", "detections")
        source, channel, label = seed.read_filters(data.get("source"), data.get("channel"),
                                              data.get("label"))
        since = seed.iso_time(data.get("since"), "since")
        until = seed.iso_time(data.get("until"), "until")
        limit = data.get("limit", 1000)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
            raise seed.SeedRequestError(f"limit must be 1-{MAX_LIMIT}")
        if what == "detections":
            return {"detections": await self.detections(source, channel, label, since, until,
                                                        limit)}
        if what == "hourly":
            return {"hourly": await self.hourly(source, label, since, until, limit)}
        if what == "health":
            return {"health": await self.health(source, channel, since, until, limit)}
        raise seed.SeedRequestError("what must be detections, hourly or health")

    async def detections(self, source: str | None, channel: int | None, label: str | None,
                         since: datetime | None, until: datetime | None,
                         limit: int, newest_first: bool = False) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            rows = await queries.detections(conn, source=source, channel=channel, label=label,
                                            since=since, until=until, limit=limit,
                                            newest_first=newest_first)
        return [{"time": r.time.isoformat(), "end": r.window_end.isoformat(),
                 "source": r.source, "channel": r.channel,
                 "label": r.label, "confidence": r.confidence, "model_id": r.model_id,
                 "model_version": r.model_version} for r in rows]

    async def hourly(self, source: str | None, label: str | None, since: datetime | None,
                     until: datetime | None, limit: int) -> list[dict[str, Any]]:
        where, params = seed.filters_sql(("source", source), ("label", label),
                                 ("bucket >=", since), ("bucket <", until))
        return await self.rows("SELECT bucket, source, label, count, avg_confidence "
                                f"FROM detections_hourly{where} ORDER BY bucket, source, "
                                "label LIMIT %s", (*params, limit))

    async def health(self, source: str | None, channel: int | None, since: datetime | None,
                     until: datetime | None, limit: int) -> list[dict[str, Any]]:
        where, params = seed.filters_sql(("source", source), ("channel", channel),
                                 ("time >=", since), ("time <", until))
        return await self.rows(
            "SELECT time, end_time, source, channel, rms_dbfs, peak_dbfs, clip_ratio, "
            "noise_floor_dbfs, dc_offset, hum_db, hum_hz, dead FROM channel_health"
            f"{where} ORDER BY time, source, channel LIMIT %s", (*params, limit))

    async def publish(self, event: Event) -> None:
        await self._pub.publish_now(event)
        log.info("published %s", type(event).__name__)
