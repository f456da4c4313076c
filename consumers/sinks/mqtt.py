"""The MQTT sink: each channel's latest label, confidence and level for Home Assistant.

``python -m consumers.sinks.mqtt`` reads every ``Prediction`` and ``ChannelHealth`` of
the EVENTS stream (durable ``sink-mqtt``) and publishes, per source and channel, a
JSON state on ``tidzam/<source>/<channel>/state`` (QoS 1)::

    {"label": "birds-american_robin", "confidence": 0.91, "level_dbfs": -31.2,
     "start": "...Z", "end": "...Z", "model_id": "...", "measured": "...Z"}

``label``/``confidence``: the window's decided label with the best score (``unknown``
included: Home Assistant shows what the channel hears), ``start``/``end`` its window;
``level_dbfs``: the RMS level of the latest ``ChannelHealth`` (``measured``: when),
null when not known yet or not finite. Every event publishes its channel's state,
carrying the latest of both; after an outage, redelivered events may publish an
older window's state again (its ``start`` says which).

Home Assistant discovery: one device per channel (``identifiers:
["tidzam_<source>_<channel>"]``) with three sensors, ``label``, ``confidence`` and
``level_dbfs``, whose retained configs go to
``<TIDZAM_MQTT_DISCOVERY_PREFIX>/sensor/<unique_id>/config`` before the channel's
first state. They are sent once per channel per connection: a process start is a new
connection, and a broker that restarted without persistence lost its retained
messages. ``tidzam/status`` (retained) is ``online`` while connected, ``offline``
after a clean stop or, as the broker's will, a lost connection: the sensors'
availability. One sink per broker: a second one with the same
``TIDZAM_MQTT_CLIENT_ID`` would take the connection over.

``TIDZAM_MQTT_URL``: ``mqtt://user:pass@host:1883`` (``mqtts://`` for TLS, port 8883
by default); credentials come only from it, from the environment, and are never
logged. At least once: a batch's messages are acked only after the broker
acknowledged every publish (QoS 1 PUBACK, within ``TIDZAM_MQTT_TIMEOUT_S``). A broker
that is down or times out is a transient failure: the connection is dropped, the
batch nak'd with the capped exponential backoff of ``SINK_MQTT``, and the next batch
connects again. With privacy on (``TIDZAM_PRIVACY=mask``), a private window
(``is_private``) is never published: its channel keeps its previous label.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import aiomqtt
from nats.aio.client import Client
from pydantic import Field, SecretStr, field_validator

from bus.connect import connect, ensure_streams
from bus.runner import Ack, ConsumerRunner, Delivery, Outcome, TransientError
from bus_schemas import ChannelHealth, Prediction
from bus_schemas.streams import SINK_MQTT, ConsumerSpec
from consumers.privacy import PrivacySettings, is_private
from consumers.sinks import detections
from consumers.sinks.detections import SinkConfigError, confidence, iso_utc, run_sink

log = logging.getLogger(__name__)

Key = tuple[str, int]  # (source, channel)
SENSORS: dict[str, dict[str, object]] = {  # sensor → its discovery fields
    "label": {"name": "Label", "icon": "mdi:waveform"},
    "confidence": {"name": "Confidence", "state_class": "measurement", "icon": "mdi:gauge"},
    "level_dbfs": {"name": "Level", "unit_of_measurement": "dBFS",
                   "state_class": "measurement", "icon": "mdi:volume-high"},
}


class MqttConfigError(SinkConfigError):
    """The MQTT sink cannot start as configured."""


class MqttSettings(PrivacySettings):
    nats_url: SecretStr
    mqtt_url: SecretStr | None = None  # carries the broker's credentials
    mqtt_discovery_prefix: str = "homeassistant"
    mqtt_topic_prefix: str = "tidzam"
    mqtt_client_id: str = "tidzam-sink-mqtt"
    mqtt_timeout_s: float = Field(10.0, gt=0.0, le=300.0)

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None:
            parsed = urlsplit(url.get_secret_value())
            if parsed.scheme not in ("mqtt", "mqtts") or not parsed.hostname:
                raise ValueError("TIDZAM_MQTT_URL must look like mqtt://user:pass@host:1883 "
                                 "(or mqtts:// for TLS)")
        return url


@dataclass(frozen=True)
class Broker:
    """Where and as whom to connect; ``repr`` never shows the password."""

    host: str
    port: int
    username: str | None
    password: SecretStr | None
    tls: bool

    @classmethod
    def from_url(cls, url: str) -> Broker:
        u = urlsplit(url)
        tls = u.scheme == "mqtts"
        return cls(u.hostname or "localhost", u.port or (8883 if tls else 1883),
                   unquote(u.username) if u.username else None,
                   SecretStr(unquote(u.password)) if u.password else None, tls)


@dataclass
class ChannelState:
    label: str | None = None
    confidence: float | None = None
    start: str | None = None
    end: str | None = None
    model_id: str | None = None
    level_dbfs: float | None = None
    measured: str | None = None

    def as_json(self) -> dict[str, object]:
        return {"label": self.label, "confidence": self.confidence, "start": self.start,
                "end": self.end, "model_id": self.model_id, "level_dbfs": self.level_dbfs,
                "measured": self.measured}


@dataclass
class MqttStats:
    states: int = 0  # state messages acknowledged by the broker
    configs: int = 0  # discovery configs acknowledged
    connects: int = 0
    failures: int = 0  # failed batches (broker down, timeout)
    private: int = 0  # windows kept back by privacy


class MqttSink:
    def __init__(self, broker: Broker, *, discovery_prefix: str = "homeassistant",
                 topic_prefix: str = "tidzam", client_id: str = "tidzam-sink-mqtt",
                 timeout_s: float = 10.0, speech_score: float | None = None) -> None:
        self.broker = broker
        self.discovery_prefix = discovery_prefix
        self.topic_prefix = topic_prefix
        self.client_id = client_id
        self.timeout_s = timeout_s
        self.speech_score = speech_score  # privacy on: private windows never sent
        self.states: dict[Key, ChannelState] = {}
        self.stats = MqttStats()
        self._client: aiomqtt.Client | None = None
        self._announced: set[Key] = set()  # discovery sent on this connection

    @classmethod
    def from_settings(cls, settings: MqttSettings) -> MqttSink:
        if settings.mqtt_url is None:
            raise MqttConfigError("TIDZAM_MQTT_URL is not set: the MQTT sink has no broker")
        return cls(Broker.from_url(settings.mqtt_url.get_secret_value()),
                   discovery_prefix=settings.mqtt_discovery_prefix,
                   topic_prefix=settings.mqtt_topic_prefix,
                   client_id=settings.mqtt_client_id, timeout_s=settings.mqtt_timeout_s,
                   speech_score=settings.privacy_speech_score if settings.masking else None)

    # ---------------------------------------------------------------- topics

    @property
    def status_topic(self) -> str:
        return f"{self.topic_prefix}/status"

    def state_topic(self, key: Key) -> str:
        return f"{self.topic_prefix}/{key[0]}/{key[1]}/state"

    def config_topic(self, key: Key, sensor: str) -> str:
        return f"{self.discovery_prefix}/sensor/{unique_id(key, sensor)}/config"

    def discovery(self, key: Key, sensor: str) -> dict[str, object]:
        """The Home Assistant discovery config of one sensor of one channel."""
        source, channel = key
        return {**SENSORS[sensor], "unique_id": unique_id(key, sensor),
                "object_id": unique_id(key, sensor), "state_topic": self.state_topic(key),
                "value_template": f"{{{{ value_json.{sensor} }}}}",
                "availability_topic": self.status_topic,
                "device": {"identifiers": [f"tidzam_{source}_{channel}"],
                           "name": f"Tidzam {source} channel {channel}",
                           "manufacturer": "Tidzam", "model": "sound monitor"}}

    # ------------------------------------------------------------ connection

    async def _connected(self) -> aiomqtt.Client:
        if self._client is not None:
            return self._client
        b = self.broker
        client = aiomqtt.Client(
            b.host, b.port, username=b.username,
            password=b.password.get_secret_value() if b.password else None,
            identifier=self.client_id, timeout=self.timeout_s, keepalive=15,
            tls_context=ssl.create_default_context() if b.tls else None,
            will=aiomqtt.Will(self.status_topic, b"offline", qos=1, retain=True))
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as exc:
            raise TransientError(f"MQTT broker {b.host}:{b.port} unreachable: {exc}") from exc
        self._client, self._announced = client, set()
        self.stats.connects += 1
        log.info("connected to the MQTT broker %s:%d", b.host, b.port)
        await self._publish(self.status_topic, b"online", retain=True)
        return client

    async def close(self, *, goodbye: bool = False) -> None:
        """Disconnect; ``goodbye`` (a clean stop): first say ``offline``, which the
        broker's will only says for a lost connection."""
        client, self._client = self._client, None
        if client is None:
            return
        if goodbye:
            with contextlib.suppress(Exception):
                await client.publish(self.status_topic, b"offline", qos=1, retain=True,
                                     timeout=self.timeout_s)
        with contextlib.suppress(Exception):
            await client.__aexit__(None, None, None)

    async def _publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        client = self._client
        if client is None:
            raise TransientError("not connected to the MQTT broker")
        try:
            await client.publish(topic, payload, qos=1, retain=retain, timeout=self.timeout_s)
        except aiomqtt.MqttError as exc:
            await self.close()  # the next batch connects again
            raise TransientError(f"MQTT publish to {topic} failed: {exc}") from exc

    # -------------------------------------------------------------- handling

    def _apply(self, event: object) -> Key | None:
        """Update a channel's state from an event; its key if there is news to send."""
        if isinstance(event, Prediction):
            p = event
            if self.speech_score is not None and is_private(p, self.speech_score):
                self.stats.private += 1
                return None
            key = (p.source, p.channel)
            state = self.states.setdefault(key, ChannelState())
            label = max(p.result, key=lambda name: confidence(p, name))
            state.label, state.confidence = label, round(confidence(p, label), 6)
            state.start, state.end = iso_utc(p.window_start_ns), iso_utc(p.window_end_ns)
            state.model_id = p.model_id
            return key
        if isinstance(event, ChannelHealth):
            h = event
            key = (h.source, h.channel)
            state = self.states.setdefault(key, ChannelState())
            state.level_dbfs = round(h.rms_dbfs, 2) if math.isfinite(h.rms_dbfs) else None
            state.measured = iso_utc(h.end_ns)
            return key
        return None

    async def handle(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        try:
            return await self._handle(deliveries)
        except TransientError:
            self.stats.failures += 1
            raise

    async def _handle(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        await self._connected()
        sends: list[tuple[str, bytes]] = []
        for d in sorted(deliveries, key=lambda d: d.stream_seq):
            key = self._apply(d.event)
            if key is not None:
                sends.append((self.state_topic(key),
                              json.dumps(self.states[key].as_json()).encode()))
        keys = {(s.source, s.channel) for s in (d.event for d in deliveries)
                if isinstance(s, Prediction | ChannelHealth)}
        for key in sorted(keys - self._announced):
            await self._announce(key)
        # paho sends in call order on one connection; the PUBACKs are awaited together
        results = await asyncio.gather(*(self._publish(t, p) for t, p in sends),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        self.stats.states += len(sends)
        return [Ack() for _ in deliveries]

    async def _announce(self, key: Key) -> None:
        await asyncio.gather(*(
            self._publish(self.config_topic(key, sensor),
                          json.dumps(self.discovery(key, sensor)).encode(), retain=True)
            for sensor in SENSORS))
        self._announced.add(key)
        self.stats.configs += len(SENSORS)


def unique_id(key: Key, sensor: str) -> str:
    return f"tidzam_{key[0]}_{key[1]}_{sensor}"


async def serve(nc: Client, sink: MqttSink, stop: asyncio.Event,
                spec: ConsumerSpec = SINK_MQTT) -> None:
    """Consume predictions and health into ``sink`` until ``stop``."""
    log.info("MQTT sink running (broker %s:%d%s)", sink.broker.host, sink.broker.port,
             ", private windows kept back" if sink.speech_score is not None else "")
    try:
        await ConsumerRunner(nc, spec, sink.handle).run(stop)
    finally:
        await sink.close(goodbye=True)
    s = sink.stats
    log.info("MQTT sink stopped: %d state(s) and %d config(s) published, %d failed "
             "batch(es), %d connection(s)", s.states, s.configs, s.failures, s.connects)


async def run(settings: MqttSettings, stop: asyncio.Event) -> None:
    sink = MqttSink.from_settings(settings)
    nc = await connect(settings.nats_url.get_secret_value(), "tidzam-sink-mqtt")
    await ensure_streams(nc.jetstream())
    try:
        await serve(nc, sink, stop)
    finally:
        await nc.drain()


def load_settings() -> MqttSettings:
    return detections.load_settings(MqttSettings, "MQTT sink", "mqtt_url", MqttConfigError)


def main() -> None:
    run_sink(load_settings, run)


if __name__ == "__main__":
    main()
