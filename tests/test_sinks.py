"""The outbound sinks against real parts: a nats-server, an HTTP receiver (aiohttp) that
fails on purpose for a while, a mosquitto broker stopped mid-run. Every detection that
passes the filters arrives at least once, signed; nothing filtered or private leaves."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
from aiohttp import web
from nats.aio.client import Client
from pydantic import SecretStr

from bus.publisher import Publisher
from bus_schemas import ChannelHealth, Event, Prediction
from bus_schemas.streams import EVENTS, SINK_MQTT, SINK_WEBHOOK
from consumers.sinks import mqtt as mqtt_sink
from consumers.sinks import webhook
from consumers.sinks.detections import DetectionFilter, detections_of, iso_utc
from tests.waiting import wait_for, wait_until

SEC = 1_000_000_000
T0_NS = int(datetime(2025, 6, 15, 12, 0, tzinfo=UTC).timestamp()) * SEC
LABELS = ("birds-american_robin", "birds-blue_jay", "rain", "speech")
MOSQUITTO = "/usr/sbin/mosquitto"


def pred(source: str, channel: int, at_s: float, result: tuple[str, ...],
         scores: tuple[float, float, float, float]) -> Prediction:
    start = T0_NS + int(at_s * SEC)
    return Prediction(source=source, channel=channel, window_start_ns=start,
                      window_end_ns=start + 2 * SEC, model_id="selector", model_version="3",
                      labels=LABELS, scores=scores, result=result, origin_ns=T0_NS)


def health(source: str, channel: int, at_s: float, rms_dbfs: float) -> ChannelHealth:
    start = T0_NS + int(at_s * SEC)
    return ChannelHealth(source=source, channel=channel, start_ns=start, end_ns=start + SEC,
                         rms_dbfs=rms_dbfs, peak_dbfs=rms_dbfs + 10, clip_ratio=0.0,
                         noise_floor_dbfs=None, dc_offset=None, hum_db=None, hum_hz=None,
                         dead=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def settled(nc: Client, durable: str) -> bool:
    info = await nc.jetstream().consumer_info(EVENTS.name, durable)
    return bool(info.num_pending == 0 and info.num_ack_pending == 0)


# ----------------------------------------------------------------- filters


def test_filters_patterns_confidence_sources_and_unknown() -> None:
    f = DetectionFilter(labels=("birds-*",), min_confidence=0.5, sources=("pond*",))
    assert [d.label for d in f.pick(pred("pond", 0, 0, ("birds-blue_jay", "rain"),
                                         (0.1, 0.7, 0.9, 0.0)))] == ["birds-blue_jay"]
    assert f.pick(pred("pond2", 0, 0, ("birds-american_robin",), (0.4, 0, 0, 0))) == []
    assert f.pick(pred("lab", 0, 0, ("birds-american_robin",), (0.9, 0, 0, 0))) == []
    unknown = pred("pond", 0, 0, ("unknown",), (0.2, 0.3, 0.6, 0.0))
    assert DetectionFilter().pick(unknown) == []  # "*" is every class, not unknown
    [d] = DetectionFilter(labels=("birds-*", "unknown")).pick(unknown)
    assert (d.label, d.confidence) == ("unknown", 0.6)  # the window's best score
    assert d.as_json()["start"] == "2025-06-15T12:00:00.000000Z"


def test_webhook_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDZAM_NATS_URL", "nats://127.0.0.1:4222")
    monkeypatch.setenv("TIDZAM_WEBHOOK_URL", "https://hooks.example/t/TOKEN-xyz")
    with pytest.raises(webhook.WebhookConfigError) as err:
        webhook.load_settings()
    assert "TIDZAM_WEBHOOK_SECRET must be set" in str(err.value)
    assert "TOKEN-xyz" not in str(err.value)  # a URL may carry a token: never printed
    monkeypatch.setenv("TIDZAM_WEBHOOK_SECRET", "short")
    with pytest.raises(webhook.WebhookConfigError):
        webhook.load_settings()
    monkeypatch.setenv("TIDZAM_WEBHOOK_SECRET", "0123456789abcdef0123")
    monkeypatch.setenv("TIDZAM_WEBHOOK_LABELS", "birds-*, frogs")
    settings = webhook.load_settings()
    assert settings.detection_filter().labels == ("birds-*", "frogs")
    assert "TOKEN-xyz" not in repr(settings) and "0123456789abcdef" not in repr(settings)
    monkeypatch.delenv("TIDZAM_WEBHOOK_URL")
    with pytest.raises(webhook.WebhookConfigError, match="TIDZAM_WEBHOOK_URL is not set"):
        webhook.load_settings()


def test_mqtt_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDZAM_NATS_URL", "nats://127.0.0.1:4222")
    monkeypatch.setenv("TIDZAM_MQTT_URL", "http://u:pw-secret@host:1883")
    with pytest.raises(mqtt_sink.MqttConfigError) as err:
        mqtt_sink.load_settings()
    assert "pw-secret" not in str(err.value)
    monkeypatch.setenv("TIDZAM_MQTT_URL", "mqtt://u:pw-secret@broker.lan")
    sink = mqtt_sink.MqttSink.from_settings(mqtt_sink.load_settings())
    assert (sink.broker.host, sink.broker.port, sink.broker.username) == ("broker.lan", 1883,
                                                                         "u")
    assert "pw-secret" not in repr(sink.broker)


# ----------------------------------------------------------------- webhook


@dataclass
class Received:
    status: int
    signed: bool
    batch_header: str
    body: dict[str, Any]


@dataclass
class Receiver:
    """A webhook receiver: 400 to the first request, 500 to the next ones while
    ``failing``, 200 after; it records every request it answers."""

    secret: bytes
    failing: bool = True
    port: int = 0
    requests: list[Received] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        expected = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        signed = hmac.compare_digest(request.headers.get("X-Tidzam-Signature", ""), expected)
        status = (400 if not self.requests else 500) if self.failing else 200
        self.requests.append(Received(status, signed, request.headers.get(
            "X-Tidzam-Batch", ""), json.loads(body)))
        return web.Response(status=status, text="no thanks" if status == 400 else "")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def delivered(self) -> list[tuple[str, int, str, str]]:
        return [(d["source"], d["channel"], d["start"], d["label"])
                for r in self.requests if r.status == 200 for d in r.body["detections"]]


def key(p: Prediction, label: str) -> tuple[str, int, str, str]:
    return (p.source, p.channel, iso_utc(p.window_start_ns), label)


async def test_webhook_delivers_every_detection_through_an_outage(
        nc: Client, caplog: pytest.LogCaptureFixture) -> None:
    secret = secrets.token_hex(16)  # made up per run
    receiver = Receiver(secret.encode())
    await receiver.start()
    settings = webhook.WebhookSettings(
        nats_url=SecretStr("nats://unused"),
        webhook_url=SecretStr(f"http://127.0.0.1:{receiver.port}/hook"),
        webhook_secret=SecretStr(secret), webhook_labels=("birds-*",),
        webhook_sources=("pond*",), webhook_min_confidence=0.5, privacy="mask",
        webhook_timeout_s=2.0)
    passing = [pred("pond", i % 2, i, (LABELS[i % 2],), (0.9, 0.8, 0.0, 0.1))
               for i in range(10)]
    passing.append(pred("pond2", 0, 0, ("birds-blue_jay", "rain"), (0.0, 0.7, 0.9, 0.0)))
    filtered = [
        pred("pond", 0, 20, ("birds-american_robin",), (0.3, 0, 0, 0)),  # confidence
        pred("pond", 0, 21, ("rain",), (0.1, 0, 0.95, 0)),  # label
        pred("pond", 0, 22, ("unknown",), (0.1, 0.2, 0.8, 0)),  # unknown not asked
        pred("lab", 0, 23, ("birds-american_robin",), (0.9, 0, 0, 0)),  # source
        pred("pond", 1, 24, ("birds-blue_jay",), (0, 0.7, 0, 0.8)),  # private: speech 0.8
    ]
    pub = Publisher(nc.jetstream())
    await pub.publish_all([*passing[:6], *filtered, *passing[6:]])
    caplog.set_level(logging.WARNING)

    async with aiohttp.ClientSession() as session:
        sink = webhook.WebhookSink.from_settings(settings, session)
        stop = asyncio.Event()
        task = asyncio.create_task(webhook.serve(nc, sink, stop))
        try:
            await wait_until(lambda: len(receiver.requests) >= 2, 20, "a 400 then a 500")
            await receiver.stop()  # now: connection refused
            await wait_until(lambda: sink.stats.unreachable >= 1, 20, "a refused connection")
            receiver.failing = False
            await receiver.start()  # the same port
            late = [pred("pond", 0, 40, ("birds-blue_jay",), (0, 0.99, 0, 0)),
                    pred("pond", 0, 41, ("rain",), (0, 0, 0.99, 0))]
            await pub.publish_all(late)
            passing.append(late[0])
            filtered.append(late[1])
            expected = {key(p, d.label) for p in passing for d in detections_of(p)
                        if d.label.startswith("birds-")}
            await wait_until(lambda: expected <= set(receiver.delivered()), 30,
                             "every passing detection delivered")
            await wait_until(lambda: settled(nc, SINK_WEBHOOK.durable), 20, "all acked")
        finally:
            stop.set()
            await task
            await receiver.stop()

    assert len(expected) == 12 and set(receiver.delivered()) == expected
    everything = {(d["source"], d["channel"], d["start"], d["label"])
                  for r in receiver.requests for d in r.body["detections"]}
    assert not everything & {key(p, label) for p in filtered for label in p.result}
    assert all(r.signed for r in receiver.requests)
    assert [r.status for r in receiver.requests[:2]] == [400, 500]
    bodies: dict[str, list[dict[str, Any]]] = {}
    for r in receiver.requests:
        assert r.batch_header == r.body["batch_id"]
        bodies.setdefault(r.batch_header, []).append(r.body)
    assert all(b == same[0] for same in bodies.values() for b in same)  # one id, one body
    robin = next(d for r in receiver.requests for d in r.body["detections"])
    assert set(robin) == {"source", "channel", "start", "end", "label", "confidence",
                          "model_id", "model_version"}
    assert (sink.stats.refused, sink.stats.private) >= (1, 1)
    assert sink.stats.failures >= 3 and sink.stats.unreachable >= 1
    assert any(rec.levelno == logging.ERROR and "REFUSED" in rec.getMessage()
               and "400" in rec.getMessage() for rec in caplog.records)
    assert not any(secret in rec.getMessage() for rec in caplog.records)


def test_retry_after_as_seconds_or_a_date() -> None:
    now = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)
    assert webhook.retry_after_s("7") == 7.0
    assert webhook.retry_after_s("Sun, 15 Jun 2025 12:00:30 GMT", now) == 30.0
    assert webhook.retry_after_s("Sun, 15 Jun 2025 11:00:00 GMT", now) == 0.0  # past
    assert webhook.retry_after_s("99999999") == webhook.MAX_RETRY_AFTER_S
    for junk in (None, "", "soon", "-5", "1e9", "٣"):
        assert webhook.retry_after_s(junk) is None, junk


async def test_webhook_waits_as_long_as_the_receiver_asks(nc: Client) -> None:
    """A 429 with ``Retry-After: 3`` is sent again after 3 s, not after the 1 s backoff
    step; then it is delivered."""
    seen: list[float] = []

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        seen.append(asyncio.get_running_loop().time())
        if len(seen) == 1:
            return web.Response(status=429, headers={"Retry-After": "3"})
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    settings = webhook.WebhookSettings(
        nats_url=SecretStr("nats://unused"),
        webhook_url=SecretStr(f"http://127.0.0.1:{port}/hook"),
        webhook_secret=SecretStr(secrets.token_hex(16)))
    await Publisher(nc.jetstream()).publish_all(
        [pred("busy", 0, 0, ("rain",), (0, 0, 0.9, 0))])
    async with aiohttp.ClientSession() as session:
        sink = webhook.WebhookSink.from_settings(settings, session)
        stop = asyncio.Event()
        task = asyncio.create_task(webhook.serve(nc, sink, stop))
        try:
            await wait_until(lambda: len(seen) >= 2, 20, "the batch sent again")
            await wait_until(lambda: settled(nc, SINK_WEBHOOK.durable), 20, "acked")
        finally:
            stop.set()
            await task
            await runner.cleanup()
    assert seen[1] - seen[0] >= 2.9, seen
    assert sink.stats.batches == 1


# -------------------------------------------------------------------- MQTT


@dataclass
class Mosquitto:
    """A mosquitto broker on a loopback port, with persistence (sessions and retained
    messages outlive a restart), started and stopped at will."""

    home: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        conf = self.home / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                        f"persistence true\npersistence_location {self.home}/\n"
                        f"user root\nlog_dest file {self.home}/mosquitto.log\n")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def listening() -> bool:
            assert self.proc is not None and self.proc.poll() is None, "mosquitto exited"
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0
        wait_for(listening, 10, "mosquitto listening")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path, free_port())
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@dataclass
class Listener:
    """What Home Assistant would see: every message under the two prefixes, over a
    persistent session that reconnects (and gets what it missed) after a restart."""

    port: int
    messages: list[tuple[str, Any]] = field(default_factory=list)
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, identifier="pytest-ha",
                                          clean_session=False, timeout=2) as client:
                    await client.subscribe([("homeassistant/#", 1), ("tidzam/#", 1)])
                    self.connected.set()
                    async for m in client.messages:
                        payload = m.payload if isinstance(m.payload, bytes) else b""
                        with contextlib.suppress(ValueError):
                            self.messages.append((str(m.topic), json.loads(payload)))
                            continue
                        self.messages.append((str(m.topic), payload.decode()))
            except aiomqtt.MqttError:
                self.connected.clear()
                await asyncio.sleep(0.2)

    def states(self, source: str, channel: int) -> list[dict[str, Any]]:
        return [m for t, m in self.messages if t == f"tidzam/{source}/{channel}/state"]

    def has_state(self, source: str, channel: int, **want: Any) -> bool:
        return any(all(s.get(k) == v for k, v in want.items())
                   for s in self.states(source, channel))


@contextlib.asynccontextmanager
async def listening(port: int) -> AsyncIterator[Listener]:
    listener = Listener(port)
    task = asyncio.create_task(listener.run())
    try:
        await asyncio.wait_for(listener.connected.wait(), 10)
        yield listener
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def retained_configs(port: int) -> dict[str, dict[str, Any]]:
    """The retained discovery configs a client that connects now is given."""
    out: dict[str, dict[str, Any]] = {}
    async with aiomqtt.Client("127.0.0.1", port, identifier="pytest-late", timeout=2) as c:
        await c.subscribe("homeassistant/#")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                async for m in c.messages:
                    assert m.retain and isinstance(m.payload, bytes)
                    out[str(m.topic)] = json.loads(m.payload)
    return out


async def test_mqtt_states_and_discovery_survive_a_broker_restart(
        nc: Client, mosquitto: Mosquitto) -> None:
    settings = mqtt_sink.MqttSettings(
        nats_url=SecretStr("nats://unused"),
        mqtt_url=SecretStr(f"mqtt://127.0.0.1:{mosquitto.port}"), privacy="mask",
        mqtt_timeout_s=2.0, mqtt_client_id="pytest-sink")
    sink = mqtt_sink.MqttSink.from_settings(settings)
    pub = Publisher(nc.jetstream())
    private = pred("pond", 0, 4, ("speech",), (0.1, 0, 0, 0.9))
    before: list[Event] = [
        health("pond", 0, 0, -20.5), health("pond", 1, 0, -30.25),
        pred("pond", 0, 0, ("birds-american_robin",), (0.91, 0.1, 0, 0)),
        pred("pond", 1, 0, ("rain", "birds-blue_jay"), (0, 0.6, 0.8, 0)),
        pred("pond", 0, 2, ("unknown",), (0.3, 0.2, 0.1, 0)), private]
    async with listening(mosquitto.port) as ha:
        stop = asyncio.Event()
        task = asyncio.create_task(mqtt_sink.serve(nc, sink, stop))
        try:
            await pub.publish_all(before)
            await wait_until(lambda: ha.has_state("pond", 0, label="unknown", level_dbfs=-20.5,
                                                  start=iso_utc(T0_NS + 2 * SEC)), 20,
                             "pond/0's latest state")
            assert ha.has_state("pond", 0, label="birds-american_robin", confidence=0.91)
            assert ha.has_state("pond", 1, label="rain", confidence=0.8, level_dbfs=-30.25)
            await wait_until(lambda: settled(nc, SINK_MQTT.durable), 20, "all acked")

            mosquitto.stop()
            after: list[Event] = [pred("pond", 0, 6, ("birds-blue_jay",), (0, 0.7, 0, 0)),
                                  health("pond", 1, 6, -12.0)]
            await pub.publish_all(after)
            await wait_until(lambda: sink.stats.failures >= 2, 20, "the sink failing")
            assert not await settled(nc, SINK_MQTT.durable)
            mosquitto.start()
            await wait_until(lambda: ha.has_state("pond", 0, label="birds-blue_jay",
                                                  confidence=0.7), 30, "pond/0 after")
            await wait_until(lambda: ha.has_state("pond", 1, level_dbfs=-12.0), 30,
                             "pond/1's level after")
            await wait_until(lambda: settled(nc, SINK_MQTT.durable), 20, "all acked")
        finally:
            stop.set()
            await task
        await wait_until(lambda: ("tidzam/status", "offline") in ha.messages, 10,
                         "offline after a clean stop")
    for ch, starts in ((0, (0, 2, 6)), (1, (0,))):  # every window that is not private
        seen = {s["start"] for s in ha.states("pond", ch)}
        assert {iso_utc(T0_NS + t * SEC) for t in starts} <= seen
    assert not any(s["start"] == iso_utc(private.window_start_ns) or s["label"] == "speech"
                   for ch in (0, 1) for s in ha.states("pond", ch))
    assert sink.stats.connects >= 2 and sink.stats.private >= 1

    configs = await retained_configs(mosquitto.port)
    assert set(configs) == {f"homeassistant/sensor/tidzam_pond_{ch}_{s}/config"
                            for ch in (0, 1) for s in ("label", "confidence", "level_dbfs")}
    level = configs["homeassistant/sensor/tidzam_pond_1_level_dbfs/config"]
    assert level["device"]["identifiers"] == ["tidzam_pond_1"]
    assert level["state_topic"] == "tidzam/pond/1/state"
    assert (level["unit_of_measurement"], level["unique_id"]) == ("dBFS",
                                                                  "tidzam_pond_1_level_dbfs")
    assert level["value_template"] == "{{ value_json.level_dbfs }}"
    assert ("tidzam/status", "online") in ha.messages

