"""The webhook sink: detections POSTed, signed and in batches, to one URL.

``python -m consumers.sinks.webhook`` reads every ``Prediction`` of the EVENTS stream
(durable ``sink-webhook``), keeps the detections that pass the filters
(``TIDZAM_WEBHOOK_LABELS``, ``TIDZAM_WEBHOOK_SOURCES``: comma-separated shell-style
patterns, ``*`` by default; ``TIDZAM_WEBHOOK_MIN_CONFIDENCE``; ``unknown`` only when
a label pattern names it, see ``consumers.sinks.detections``) and POSTs those of each
fetched batch as one JSON document to ``TIDZAM_WEBHOOK_URL``::

    {"batch_id": "...", "detections": [{"source", "channel", "start", "end",
      "label", "confidence", "model_id", "model_version"}, ...]}

with ``start``/``end`` in ISO 8601 UTC. Headers: ``X-Tidzam-Signature:
sha256=<hex HMAC-SHA256 of the body>`` keyed by ``TIDZAM_WEBHOOK_SECRET`` (required
with a URL, never defaulted, never logged), and ``X-Tidzam-Batch``, the ``batch_id``:
derived from the EVENTS stream sequences of the predictions in the body, so a batch
sent again after a lost answer carries the same id and a receiver can drop it.
(A redelivery may group predictions differently, and so make another batch: a
receiver that must never see a detection twice also keys on (source, channel,
start, label, model_id).)

At least once: a batch's predictions are acked only after a 2xx answer. Anything
else is retried through the runner (``TransientError`` → ``nak``) with the
exponential backoff of ``SINK_WEBHOOK`` (1 s doubling to a 60 s cap), for ever:

- connection refused, a timeout (``TIDZAM_WEBHOOK_TIMEOUT_S``), 5xx, 408 and 429:
  the receiver is down or busy; logged as a warning. A 429 or 503 with a
  ``Retry-After`` (seconds or an HTTP date) is sent again after that long instead of
  the backoff step (at most ``MAX_RETRY_AFTER_S``, an hour);
- any other answer (4xx, and 3xx: redirects are not followed, the signature is for
  one URL): the receiver refused this batch. It is logged as an ERROR, with the
  status and the start of the answer, and retried all the same. Dropping it would
  lose detections for good over what is most often a receiver's bug, an expired
  token or a schema it does not know yet, and is fixed on that side; retrying
  costs one request per backoff step (a minute at most). The log says so until
  someone fixes the receiver or narrows the filters.

With privacy on (``TIDZAM_PRIVACY=mask``), a private window (``is_private``) is
never sent, whatever the filters. Predictions with nothing to send are acked
without a request.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import aiohttp
from nats.aio.client import Client
from pydantic import Field, SecretStr, field_validator, model_validator

from bus.connect import connect, ensure_streams
from bus.runner import Ack, ConsumerRunner, Delivery, Nak, Outcome, TransientError
from bus_schemas import Prediction
from bus_schemas.streams import SINK_WEBHOOK, ConsumerSpec
from consumers.privacy import PrivacySettings, is_private
from consumers.sinks import detections
from consumers.sinks.detections import (
    Detection,
    DetectionFilter,
    Patterns,
    SinkConfigError,
    run_sink,
)

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Tidzam-Signature"
BATCH_HEADER = "X-Tidzam-Batch"
MIN_SECRET_CHARS = 16
RETRYABLE_STATUS = frozenset({408, 429})
MAX_RETRY_AFTER_S = 3600.0


class RetryAfter(TransientError):
    """The receiver asked for the batch again after ``after_s`` seconds."""

    def __init__(self, message: str, after_s: float) -> None:
        super().__init__(message)
        self.after_s = after_s


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """A ``Retry-After`` header in seconds from now (0 to ``MAX_RETRY_AFTER_S``), or None
    when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        seconds = float(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


class WebhookConfigError(SinkConfigError):
    """The webhook sink cannot start as configured."""


class WebhookSettings(PrivacySettings):
    nats_url: SecretStr
    webhook_url: SecretStr | None = None  # may carry a token: a secret
    webhook_secret: SecretStr | None = None
    webhook_labels: Patterns = ("*",)
    webhook_sources: Patterns = ("*",)
    webhook_min_confidence: float = Field(0.0, ge=0.0, le=1.0)
    webhook_timeout_s: float = Field(10.0, gt=0.0, le=300.0)

    @field_validator("webhook_url")
    @classmethod
    def _http(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None and urlsplit(url.get_secret_value()).scheme not in ("http", "https"):
            raise ValueError("TIDZAM_WEBHOOK_URL must be an http:// or https:// URL")
        return url

    @model_validator(mode="after")
    def _signed(self) -> WebhookSettings:
        if self.webhook_url is None:
            return self
        secret = self.webhook_secret.get_secret_value() if self.webhook_secret else ""
        if len(secret) < MIN_SECRET_CHARS:
            raise ValueError(
                f"TIDZAM_WEBHOOK_SECRET must be set (at least {MIN_SECRET_CHARS} "
                "characters) when TIDZAM_WEBHOOK_URL is: every POST is signed with it; "
                "share it with the receiver (e.g. `openssl rand -hex 32`)")
        return self

    def detection_filter(self) -> DetectionFilter:
        return DetectionFilter(self.webhook_labels, self.webhook_min_confidence,
                               self.webhook_sources)


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Tidzam-Signature`` value of a body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def batch_id(stream_seqs: Sequence[int]) -> str:
    """A batch's id from its predictions' EVENTS sequences: the same set, the same id."""
    seqs = sorted(set(stream_seqs))
    digest = hashlib.sha256(",".join(map(str, seqs)).encode()).hexdigest()[:16]
    return f"{seqs[0]}-{seqs[-1]}-{digest}"


@dataclass
class WebhookStats:
    batches: int = 0  # answered 2xx
    detections: int = 0  # in those batches
    failures: int = 0  # every failed POST
    unreachable: int = 0  # of which: no answer (refused, timeout)
    refused: int = 0  # of which: a 4xx/3xx answer other than 408/429
    private: int = 0  # windows kept back by privacy


class WebhookSink:
    def __init__(self, session: aiohttp.ClientSession, url: str, secret: bytes,
                 filt: DetectionFilter, *, speech_score: float | None = None,
                 timeout_s: float = 10.0) -> None:
        self._session = session
        self._url = url
        self._secret = secret
        self.filter = filt
        self.speech_score = speech_score  # privacy on: private windows never sent
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.stats = WebhookStats()

    @classmethod
    def from_settings(cls, settings: WebhookSettings,
                      session: aiohttp.ClientSession) -> WebhookSink:
        if settings.webhook_url is None or settings.webhook_secret is None:
            raise WebhookConfigError("TIDZAM_WEBHOOK_URL is not set: the webhook sink has "
                                     "nowhere to send (set it, with TIDZAM_WEBHOOK_SECRET)")
        return cls(session, settings.webhook_url.get_secret_value(),
                   settings.webhook_secret.get_secret_value().encode(),
                   settings.detection_filter(),
                   speech_score=settings.privacy_speech_score if settings.masking else None,
                   timeout_s=settings.webhook_timeout_s)

    def _pick(self, p: Prediction) -> list[Detection]:
        if self.speech_score is not None and is_private(p, self.speech_score):
            self.stats.private += 1
            return []
        return self.filter.pick(p)

    async def handle(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        detections: list[Detection] = []
        seqs: list[int] = []
        for d in sorted(deliveries, key=lambda d: d.stream_seq):
            if isinstance(d.event, Prediction):
                picked = self._pick(d.event)
                if picked:
                    detections += picked
                    seqs.append(d.stream_seq)
        if detections:
            bid = batch_id(seqs)
            body = json.dumps({"batch_id": bid,
                               "detections": [x.as_json() for x in detections]},
                              separators=(",", ":")).encode()
            try:
                await self._post(bid, body)  # raises TransientError: nothing acked
            except RetryAfter as exc:
                log.warning("%s: sending it again in %.0f s, as the receiver asked", exc,
                            exc.after_s)
                return [Nak(delay_s=exc.after_s) for _ in deliveries]
            self.stats.batches += 1
            self.stats.detections += len(detections)
        return [Ack() for _ in deliveries]

    async def _post(self, bid: str, body: bytes) -> None:
        headers = {"Content-Type": "application/json", BATCH_HEADER: bid,
                   SIGNATURE_HEADER: sign(self._secret, body)}
        try:
            async with self._session.post(self._url, data=body, headers=headers,
                                          timeout=self._timeout,
                                          allow_redirects=False) as answer:
                status = answer.status
                wait_s = retry_after_s(answer.headers.get("Retry-After"))
                text = (await answer.content.read(300)).decode("utf-8", "replace")
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.stats.failures += 1
            self.stats.unreachable += 1
            raise TransientError(f"webhook unreachable for batch {bid}: "
                                 f"{type(exc).__name__}: {exc}") from exc
        if 200 <= status < 300:
            return
        self.stats.failures += 1
        if status in (429, 503) and wait_s is not None:
            raise RetryAfter(f"webhook answered {status} to batch {bid}", wait_s)
        if status >= 500 or status in RETRYABLE_STATUS:
            raise TransientError(f"webhook answered {status} to batch {bid}")
        self.stats.refused += 1
        log.error("the webhook REFUSED batch %s with HTTP %d (%r): it is kept and sent "
                  "again with backoff until the receiver accepts it; fix the receiver "
                  "or narrow TIDZAM_WEBHOOK_LABELS/SOURCES", bid, status, text[:200])
        raise TransientError(f"webhook refused batch {bid} with {status}")


async def serve(nc: Client, sink: WebhookSink, stop: asyncio.Event,
                spec: ConsumerSpec = SINK_WEBHOOK) -> None:
    """Consume predictions into ``sink`` until ``stop``."""
    log.info("webhook sink running (labels %s, sources %s, confidence ≥ %.2f%s)",
             ",".join(sink.filter.labels), ",".join(sink.filter.sources),
             sink.filter.min_confidence,
             ", private windows kept back" if sink.speech_score is not None else "")
    await ConsumerRunner(nc, spec, sink.handle).run(stop)
    s = sink.stats
    log.info("webhook sink stopped: %d batch(es), %d detection(s) sent, %d failed "
             "request(s)", s.batches, s.detections, s.failures)


async def run(settings: WebhookSettings, stop: asyncio.Event) -> None:
    nc = await connect(settings.nats_url.get_secret_value(), "tidzam-sink-webhook")
    await ensure_streams(nc.jetstream())
    try:
        async with aiohttp.ClientSession() as session:
            await serve(nc, WebhookSink.from_settings(settings, session), stop)
    finally:
        await nc.drain()


def load_settings() -> WebhookSettings:
    return detections.load_settings(WebhookSettings, "webhook sink", "webhook_url",
                                    WebhookConfigError)


def main() -> None:
    run_sink(load_settings, run)


if __name__ == "__main__":
    main()
