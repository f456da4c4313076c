"""The gateway, served by uvicorn on a real port, with a real nats-server and PostgreSQL,
driven by the Python socket.io client (websocket) and HTTP: the seed's requests and
broadcasts, rooms, history, REST, and who may do what."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio
from nats.aio.client import Client
from psycopg_pool import AsyncConnectionPool

from bus.history import read_subject
from bus.publisher import Publisher
from bus_schemas import (
    MixerCommand,
    ModelDeployed,
    SampleExtracted,
    SampleLabelled,
    SourceAdded,
    SourceLoaded,
    SourceRemoved,
)
from bus_schemas import subjects as subj
from bus_schemas.streams import CONTROL
from projections.gateway.app import GatewaySettings
from projections.store import ProjectionStore
from tests.fixtures_pg import LABELS, prediction
from tests.gateway_served import Served, serve

T0_NS = int(datetime(2025, 6, 15, 12, 0, tzinfo=UTC).timestamp() * 1e9)


@pytest.fixture
async def served(nc: Client, pg_pool: AsyncConnectionPool[Any], pg_dsn: str,
                 tmp_path: Path) -> AsyncIterator[Served]:
    async with serve(nc, pg_pool, pg_dsn, tmp_path) as gateway:
        yield gateway


async def call(client: socketio.AsyncClient, event: str, data: Any) -> Any:
    return await client.call(event, data, timeout=10)


async def control_events(nc: Client) -> list[Any]:
    added, _ = await read_subject(nc.jetstream(), CONTROL.name, subj.CTL_ALL, SourceAdded)
    removed, _ = await read_subject(nc.jetstream(), CONTROL.name, subj.CTL_ALL,
                                    SourceRemoved)
    return [e for _, e in sorted([*added, *removed], key=lambda pair: pair[0])]


async def test_the_seeds_sys_requests(served: Served, nc: Client) -> None:
    await Publisher(nc.jetstream()).publish_now(ModelDeployed(
        model_id="selector", model_version="2.0.0", sha256="0" * 64,
        path="models/x", labels=LABELS,
        feature_params={}, at_ns=T0_NS))
    anyone = await served.client()
    admin = await served.client(served.control)
    try:
        listed = await call(anyone, "sys", {"sys": {"classifier": {"list": ""}}})
        assert listed == {"sys": {"classifier": {"list": [
            {"name": "selector", "version": "2.0.0", "labels": list(LABELS)}]}}}
        database = (await call(anyone, "sys", {"sys": {"database": ""}}))["sys"]["database"]
        assert database["pond"]["nb_channels"] == 2
        assert database["pond"]["database"] == [["2025-06-15T12:00:00+00:00",
                                                 "2025-06-15T12:00:03+00:00"]]
        load = {"sys": {"loadsource": {
            "name": "marsh", "url": "http://radio.example.org/marsh.ogg",
            "database": "pond", "date": "2025-06-15-12-00-01", "channels": "0,1",
            "is_permanent": True, "format": "ogg"}}}
        # anonymous: refused, nothing published
        assert "error" in await call(anyone, "sys", load)
        assert await control_events(nc) == []
        assert await call(admin, "sys", load) == {"sys": {"loadsource": "marsh"}}
        # the seed's unload spelling (loadsource with only a name) and ours
        assert await call(admin, "sys", {"sys": {"loadsource": {"name": "marsh"}}}) == \
            {"sys": {"unloadsource": "marsh"}}
        assert await call(admin, "sys", {"sys": {"unloadsource": {"name": "marsh"}}}) == \
            {"sys": {"unloadsource": "marsh"}}
        for bad in ({"name": "x", "url": "file:///etc/passwd"},
                    {"name": "x", "database": "../../etc"},
                    {"name": "../x", "url": "http://h/s"},
                    {"name": "x", "url": "http://h/s", "date": "yesterday"},
                    {"name": "x", "url": "http://h/s", "channels": "1,a"},
                    {"name": "x", "url": "http://h/s", "is_permanent": "yes"}):
            assert "error" in await call(admin, "sys", {"sys": {"loadsource": bad}}), bad
        assert await call(admin, "sys", "not a dict") == {"error": "request must be a JSON."}
        events = await control_events(nc)
        assert [type(e).__name__ for e in events] == ["SourceAdded", "SourceRemoved",
                                                      "SourceRemoved"]
        added = events[0]
        assert isinstance(added, SourceAdded)
        assert (added.source, added.kind, added.location, added.channels, added.permanent,
                added.database) == ("marsh", "archive", "http://radio.example.org/marsh.ogg",
                                    (0, 1), True, str(served.archive / "pond"))
        assert added.date_ns == T0_NS + 1_000_000_000
    finally:
        await anyone.disconnect()
        await admin.disconnect()


async def test_extraction_rules_over_socketio(served: Served) -> None:
    anyone = await served.client()
    admin = await served.client(served.control)
    try:
        assert await call(anyone, "SampleExtractionRules", {"get": "rules"}) == {"rules": {}}
        new = {"set": "rules", "rules": {"pond": {"rate": "auto"},
                                         "marsh:2,3": {"rate": 0.25, "classes": "birds-*",
                                                       "length": 1.5}}}
        assert "error" in await call(anyone, "SampleExtractionRules", new)
        answer = await call(admin, "SampleExtractionRules", new)
        assert answer["rules"]["marsh:2,3"]["rate"] == 0.25
        got = await call(anyone, "SampleExtractionRules", {"get": "rules"})
        assert got == answer
        assert got["rules"]["pond"]["classes"] == "*"
        assert got["rules"]["marsh:2,3"]["length_s"] == 1.5
        for bad in ({"pond": {"rate": 7}}, {"pond": {"rate": "often"}},
                    {"pond": {"classes": "birds-["}}, {"pond": {"path": "/etc"}}):
            reply = await call(admin, "SampleExtractionRules", {"set": "rules", "rules": bad})
            assert "error" in reply, bad
        assert await call(anyone, "SampleExtractionRules", {"get": "rules"}) == answer
        info = await call(anyone, "SampleExtractionRules", {"get": "database_info"})
        assert info == {"database_info": []}
    finally:
        await anyone.disconnect()
        await admin.disconnect()


async def test_windows_are_broadcast_in_the_seeds_shape_to_the_rooms_asked(
        served: Served, nc: Client) -> None:
    everything = await served.client()
    one_channel = await served.client()
    got: dict[str, list[Any]] = {"all": [], "one": []}
    everything.on("sys", lambda data: got["all"].extend(data))
    one_channel.on("sys", lambda data: got["one"].extend(data))
    try:
        rooms = await call(one_channel, "subscribe", {"source": "mic", "channel": 1})
        assert rooms == {"rooms": ["channel:mic:1"]}
        assert "error" in await call(one_channel, "subscribe", {"source": "../etc"})
        windows = [prediction(T0_NS + k * 500_000_000, channel=k % 2) for k in range(6)]
        await Publisher(nc.jetstream()).publish_all(windows)
        for _ in range(100):
            if len(got["all"]) >= 6 and len(got["one"]) >= 3:
                break
            await asyncio.sleep(0.05)
        assert len(got["all"]) == 6 and len(got["one"]) == 3
        assert {item["chan"] for item in got["one"]} == {1}
        first = got["all"][0]
        assert first["chan"] == 0 and first["source"] == "mic"
        assert first["analysis"]["time"] == "2025-06-15-12-00-00.000"
        assert first["analysis"]["result"] == ["birds"]
        assert first["analysis"]["predicitions"] == first["analysis"]["predictions"]
        assert first["analysis"]["predictions"]["birds"] == pytest.approx(0.9)
        # rooms asked in the handshake: what a reconnecting client sends again
        pre = socketio.AsyncClient(reconnection=False)
        pre_got: list[Any] = []
        pre.on("sys", lambda data: pre_got.extend(data))
        await pre.connect(served.url, auth={"subscribe": [{"source": "mic", "channel": 0},
                                                          {"source": "../bad"}]},
                          transports=["websocket"], wait_timeout=10)
        await Publisher(nc.jetstream()).publish_all(
            [prediction(T0_NS + k * 500_000_000 + 10**11, channel=k % 2) for k in range(4)])
        for _ in range(100):
            if len(pre_got) >= 2:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        await pre.disconnect()
        assert [item["chan"] for item in pre_got] == [0, 0]
        await call(one_channel, "subscribe", {"all": True})
        assert (await call(one_channel, "unsubscribe", {"source": "mic", "channel": 1})
                ) == {"rooms": ["all"]}
    finally:
        await everything.disconnect()
        await one_channel.disconnect()


async def test_history_and_rest(served: Served, pg_pool: AsyncConnectionPool[Any]) -> None:
    windows = [prediction(T0_NS + k * 500_000_000, channel=k % 2) for k in range(6)]
    await ProjectionStore(pg_pool).apply("main", "EVENTS",
                                         [(k + 1, w) for k, w in enumerate(windows)])
    client = await served.client()
    try:
        reply = await call(client, "history", {"what": "detections", "source": "mic",
                                               "channel": 1, "since": "2025-06-15T12:00:00Z"})
        assert [d["time"] for d in reply["detections"]] == [
            "2025-06-15T12:00:00.500000+00:00", "2025-06-15T12:00:01.500000+00:00",
            "2025-06-15T12:00:02.500000+00:00"]
        hourly = (await call(client, "history", {"what": "hourly"}))["hourly"]
        assert [(h["source"], h["label"], h["count"]) for h in hourly] == [("mic", "birds", 6)]
        for bad in ({"what": "passwords"}, {"since": "soon"}, {"limit": 10**9},
                    {"source": "a b"}):
            assert "error" in await call(client, "history", bad), bad
    finally:
        await client.disconnect()
    async with aiohttp.ClientSession(served.url) as http:
        async with http.get("/api/detections", params={"source": "mic", "channel": "0"}) as r:
            assert r.status == 200 and len(await r.json()) == 3
        async with http.get("/api/openapi.json") as r:
            paths = (await r.json())["paths"]
            assert {"/api/detections", "/api/rules", "/api/sources", "/api/health"} <= set(paths)
        rules = {"pond": {"rate": 0.5}}
        async with http.put("/api/rules", json=rules) as r:
            assert r.status == 401  # no token
        async with http.put("/api/rules", json=rules,
                            headers={"Authorization": f"Bearer {served.reader}"}) as r:
            assert r.status == 403  # a read token
        auth = {"Authorization": f"Bearer {served.control}"}
        async with http.put("/api/rules", json={"pond": {"rate": 7}}, headers=auth) as r:
            assert r.status == 422 and "rate" in (await r.json())["detail"]
        async with http.put("/api/rules", json=rules, headers=auth) as r:
            assert r.status == 200
        async with http.get("/api/rules") as r:
            assert (await r.json())["pond"]["rate"] == 0.5
        async with http.post("/api/sources", json={"name": "x", "url": "file:///etc/passwd"},
                             headers=auth) as r:
            assert r.status == 422
        # a body over the cap is refused before anything reads it: declared, or chunked
        huge = {"pond": {"rate": 0.5, "classes": ["x" * 1000] * 1100}}
        async with http.put("/api/rules", json=huge, headers=auth) as r:
            assert r.status == 413 and "over" in (await r.json())["detail"]

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(1100):
                yield b" " * 1000
        async with http.put("/api/rules", data=chunks(),
                            headers={**auth, "Content-Type": "application/json"}) as r:
            assert r.status == 413
        async with http.get("/api/rules") as r:
            assert (await r.json())["pond"]["rate"] == 0.5  # unchanged


async def test_private_reads_and_revoked_tokens(served: Served) -> None:
    store = served.gateway.tokens
    private = GatewaySettings(**{**served.gateway.settings.model_dump(),
                                 "gateway_public_read": False})
    served.gateway.settings = private
    with pytest.raises(socketio.exceptions.ConnectionError):
        await served.client()
    reader = await served.client(served.reader)
    await reader.disconnect()
    async with aiohttp.ClientSession(served.url) as http:
        async with http.get("/api/sources") as r:
            assert r.status == 401
        async with http.get("/api/sources",
                            headers={"Authorization": f"Bearer {served.reader}"}) as r:
            assert r.status == 200
    admin = await served.client(served.control)
    try:
        store.revoke("admin")  # a running gateway re-reads the file
        reply = await call(admin, "SampleExtractionRules",
                           {"set": "rules", "rules": {}, "token": served.control})
        assert "error" in reply
    finally:
        await admin.disconnect()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await served.client(served.control)


async def test_rest_controls_the_mixer_and_reviews_samples(
        served: Served, nc: Client, pg_pool: AsyncConnectionPool[Any]) -> None:
    await ProjectionStore(pg_pool).apply("main", "CONTROL", [(1, SourceLoaded(
        source="pond", kind="url", location="http://h/pond.ogg", channels=(0, 1),
        sample_rate=48_000, permanent=True, at_ns=T0_NS, attempt=1))])
    await ProjectionStore(pg_pool).apply("main", "EVENTS", [(1, SampleExtracted(
        sample_id="s-1", source="pond", channel=1, start_ns=T0_NS, end_ns=T0_NS + 2 * 10**9,
        window_start_ns=T0_NS, window_end_ns=T0_NS + 10**9, label="birds", confidence=0.7,
        model_id="selector", model_version="1", labels=("birds", "rain"), scores=(0.7, 0.3),
        reason="auto", destination="samples", sample_rate=48_000,
        path="samples/birds/s-1.flac"))])
    auth = {"Authorization": f"Bearer {served.control}"}
    async with aiohttp.ClientSession(served.url) as http:
        async with http.post("/api/mixer/pond/1", json={"action": "mute"}) as r:
            assert r.status == 401
        for path, body, status in (("/api/mixer/marsh/0", {"action": "mute"}, 404),
                                   ("/api/mixer/pond/7", {"action": "mute"}, 422),
                                   ("/api/mixer/pond/1", {"action": "gain", "gain_db": 400},
                                    422),
                                   ("/api/mixer/pond/1", {"action": "louder"}, 422)):
            async with http.post(path, json=body, headers=auth) as r:
                assert r.status == status, (path, body, await r.text())
        async with http.post("/api/mixer/pond/1", json={"action": "gain", "gain_db": -6,
                                                        "reason": "wind"}, headers=auth) as r:
            assert r.status == 200, await r.text()
        async with http.get("/api/samples", params={"unchecked": "true"}) as r:
            assert [s["sample_id"] for s in await r.json()] == ["s-1"]
        for body, status in (({"label": "rain", "accept": True}, 422),
                             ({"label": "no such/class"}, 422), ({}, 422)):
            async with http.post("/api/samples/s-1/label", json=body, headers=auth) as r:
                assert r.status == status, body
        async with http.post("/api/samples/s-9/label", json={"accept": True},
                             headers=auth) as r:
            assert r.status == 404
        async with http.post("/api/samples/s-1/label", json={"label": "birds-crow"},
                             headers=auth) as r:
            assert r.status == 200 and (await r.json())["label"] == "birds-crow"
    commands, _ = await read_subject(nc.jetstream(), "EVENTS", subj.MIXER_CMD_ALL,
                                     MixerCommand)
    assert [(c.source, c.channel, c.action, c.gain_db, c.reason, c.by)
            for _, c in commands] == [("pond", 1, "gain", -6.0, "wind", "gateway:admin")]
    labels, _ = await read_subject(nc.jetstream(), CONTROL.name, subj.LABELS, SampleLabelled)
    assert [(e.sample_id, e.label, e.previous_label, e.by) for _, e in labels] == [
        ("s-1", "birds-crow", "birds", "gateway:admin")]


async def test_browsers_of_the_configured_origins_only(
        nc: Client, pg_pool: AsyncConnectionPool[Any], pg_dsn: str, tmp_path: Path) -> None:
    async with serve(nc, pg_pool, pg_dsn, tmp_path, cors="https://site.example") as served, \
            aiohttp.ClientSession(served.url) as http:
        for origin, allowed in (("https://site.example", True), ("https://evil.example", False)):
            headers = {"Origin": origin, "Access-Control-Request-Method": "PUT",
                       "Access-Control-Request-Headers": "authorization,content-type"}
            async with http.options("/api/rules", headers=headers) as r:
                assert (r.headers.get("access-control-allow-origin") == origin) == allowed
            async with http.get("/socket.io/", params={"EIO": "4", "transport": "polling"},
                                headers={"Origin": origin}) as r:
                assert (r.status == 200) == allowed


async def test_metrics_for_prometheus(served: Served, nc: Client,
                                      pg_pool: AsyncConnectionPool[Any]) -> None:
    """``/metrics``: consumer lag, dead letters, windows seen, each channel's level;
    behind a read token like every read, when reads are private."""
    import time

    from nats.js.api import AckPolicy, ConsumerConfig

    from bus_schemas import ChannelHealth

    js = nc.jetstream()
    await js.add_consumer("EVENTS", ConsumerConfig(durable_name="lagging",
                                                   ack_policy=AckPolicy.EXPLICIT,
                                                   filter_subjects=["tidzam.pred.>"]))
    await Publisher(js).publish_all([prediction(T0_NS + k * 500_000_000) for k in range(6)])
    await js.publish("tidzam.dlq.pred.mic.0", b"junk")
    now = time.time_ns()
    health = ChannelHealth(source="mic", channel=1, start_ns=now - 10**9, end_ns=now,
                           rms_dbfs=-23.5, peak_dbfs=-6.0, clip_ratio=0.0,
                           noise_floor_dbfs=-60.0, dc_offset=0.0, hum_db=None, hum_hz=None,
                           dead=False)
    await ProjectionStore(pg_pool).apply("main", "EVENTS", [(1, health)])
    for _ in range(100):
        if served.gateway.windows_seen >= 6:
            break
        await asyncio.sleep(0.05)
    served.gateway.settings = GatewaySettings(**{**served.gateway.settings.model_dump(),
                                                 "gateway_public_read": False})
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{served.url}/metrics") as r:
            assert r.status == 401
        async with http.get(f"{served.url}/metrics",
                            headers={"Authorization": f"Bearer {served.reader}"}) as r:
            assert r.status == 200
            assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
            text = await r.text()
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines()
                   if line and not line.startswith("#"))
    assert samples['tidzam_consumer_pending{stream="EVENTS",consumer="lagging"}'] == "6"
    assert samples["tidzam_dlq_messages"] == "1"
    assert samples["tidzam_windows_total"] == "6"
    assert samples['tidzam_channel_rms_dbfs{source="mic",channel="1"}'] == "-23.5"
    assert samples['tidzam_channel_dead{source="mic",channel="1"}'] == "0"
    assert "# TYPE tidzam_windows_total counter" in text
