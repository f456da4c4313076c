"""The one publisher: every event any process puts on the bus goes through it.

- deterministic ``Nats-Msg-Id`` from the event (the stream's duplicate window
  stores a retried or replayed publish once);
- a bounded number of publishes in flight (``max_pending``): ``publish`` waits
  when the bound is reached, so a fast producer cannot grow memory without end;
- retries with backoff on timeouts and lost connections: ``retries`` times, and for
  as long as ``outage_s`` (a replay rides out a server down for minutes);
- ``flush`` waits for every ack and raises ``PublishError`` if any event could not
  be stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from nats.errors import (
    ConnectionClosedError,
    ConnectionReconnectingError,
    NoRespondersError,
    OutboundBufferLimitError,
    TimeoutError,
)
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import APIError, NoStreamResponseError, ServiceUnavailableError

from bus_schemas import Event, encode
from bus_schemas.errors import TidzamError
from bus_schemas.subjects import subject_for

log = logging.getLogger(__name__)

# What a server back later cures: no answer, no responder, and while the client
# reconnects, its outbound buffer full (a fast replay fills it in a moment).
# NoStreamResponseError: no server answered for the stream (its leader is being elected
# after a node of a cluster died, or the server restarts): it comes back by itself
_RETRYABLE = (TimeoutError, NoRespondersError, ServiceUnavailableError, asyncio.TimeoutError,
              OutboundBufferLimitError, ConnectionReconnectingError, NoStreamResponseError)


class PublishError(TidzamError, RuntimeError):
    """An event could not be stored in JetStream after all retries."""


class ConflictError(PublishError):
    """A subject moved on since it was read: read it again, change, publish again."""


_WRONG_LAST_SEQUENCE = 10071  # JetStream's error code for a failed expectation
EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"


class Publisher:
    def __init__(
        self,
        js: JetStreamContext,
        *,
        max_pending: int = 256,
        retries: int = 6,
        timeout_s: float = 5.0,
        backoff_s: float = 0.2,
        outage_s: float = 0.0,
    ) -> None:
        self._js = js
        self._slots = asyncio.Semaphore(max_pending)
        self._retries = retries
        self._timeout = timeout_s
        self._backoff = backoff_s
        self._outage = outage_s
        self._pending: set[asyncio.Task[PubAck]] = set()
        self._errors: list[BaseException] = []
        self.published = 0
        self.duplicates = 0

    async def publish(self, event: Event) -> None:
        """Queue one event; returns once it is in flight (waits while the bound is full)."""
        if self._errors:
            await self.flush()
        await self._slots.acquire()
        task = asyncio.create_task(self._send(subject_for(event), event))
        self._pending.add(task)
        task.add_done_callback(self._done)

    async def publish_now(self, event: Event) -> PubAck:
        """Publish one event and wait for its ack."""
        async with self._slots:
            return await self._send(subject_for(event), event)

    async def publish_all(self, events: Iterable[Event]) -> None:
        """Publish events and wait until every one is stored. Only these events'
        failures are raised: callers sharing the publisher never see each other's.

        All are sent at once with JetStream's asynchronous publish (acks come back on
        one shared reply subject: no request or task per event); any whose ack fails
        or does not come within the timeout is sent again with the retrying path. A
        second send of a stored event is a duplicate by its message id, stored once."""
        items = [(subject_for(e), *encode(e)) for e in events]
        futures: list[asyncio.Future[PubAck] | None] = []
        for subject, headers, body in items:
            try:
                futures.append(await self._js.publish_async(subject, body, headers=headers))
            except Exception as exc:  # disconnected, buffer full: the retrying path decides
                log.debug("async publish to %s failed (%s): retrying", subject, exc)
                futures.append(None)
        waiting = [f for f in futures if f is not None]
        if waiting:
            _, late = await asyncio.wait(waiting, timeout=self._timeout)
            for pending in late:
                pending.cancel()
        retry = []
        for item, sent in zip(items, futures, strict=True):
            if sent is None or sent.cancelled() or sent.exception() is not None:
                retry.append(item)
                continue
            self.published += 1
            self.duplicates += int(bool(sent.result().duplicate))
        if retry:
            await self._publish_again(retry)

    async def _publish_again(self, items: list[tuple[str, dict[str, str], bytes]]) -> None:
        tasks: list[asyncio.Task[PubAck]] = []
        for subject, headers, body in items:
            await self._slots.acquire()
            task = asyncio.create_task(self._send_bytes(subject, body, headers))
            task.add_done_callback(lambda _t: self._slots.release())
            tasks.append(task)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise PublishError(f"{len(errors)} event(s) not stored: {errors[0]}") from errors[0]

    async def flush(self) -> None:
        """Wait for every publish in flight; raise if any of them failed."""
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
        if self._errors:
            first, count = self._errors[0], len(self._errors)
            self._errors.clear()
            raise PublishError(f"{count} event(s) not stored: {first}") from first

    def _done(self, task: asyncio.Task[PubAck]) -> None:
        self._pending.discard(task)
        self._slots.release()
        if task.cancelled():
            self._errors.append(PublishError("publish cancelled"))
        elif task.exception() is not None:
            self._errors.append(task.exception())  # type: ignore[arg-type]

    async def publish_if_last(self, event: Event, last_subject_seq: int) -> PubAck:
        """Publish ``event`` only if the last message on its subject is still the one at
        ``last_subject_seq`` (0: none yet), else ``ConflictError``: a read-change-write
        (a whole rule set, for instance) never overwrites a concurrent one unseen."""
        headers, body = encode(event)
        headers[EXPECTED_LAST_SUBJECT_SEQ] = str(last_subject_seq)
        try:
            async with self._slots:
                return await self._send_bytes(subject_for(event), body, headers)
        except PublishError as exc:
            cause = exc.__cause__
            if isinstance(cause, APIError) and cause.err_code == _WRONG_LAST_SEQUENCE:
                raise ConflictError(f"{subject_for(event)} changed since it was read "
                                    f"(expected last sequence {last_subject_seq})") from cause
            raise

    async def publish_raw(self, subject: str, body: bytes, headers: dict[str, str]) -> PubAck:
        """Publish bytes that are not an event of ours (dead letters), with retries."""
        async with self._slots:
            return await self._send_bytes(subject, body, headers)

    async def _send(self, subject: str, event: Event) -> PubAck:
        headers, body = encode(event)
        return await self._send_bytes(subject, body, headers)

    async def _send_bytes(self, subject: str, body: bytes, headers: dict[str, str]) -> PubAck:
        """Publish with retries: at least ``retries`` more tries, and more while the
        failures have lasted less than ``outage_s``."""
        delay = self._backoff
        first_failure: float | None = None
        attempt = 0
        while True:
            try:
                ack = await self._js.publish(subject, body, timeout=self._timeout,
                                             headers=headers)
            except _RETRYABLE as exc:
                now = asyncio.get_running_loop().time()
                first_failure = first_failure if first_failure is not None else now
                attempt += 1
                if attempt > self._retries and now - first_failure >= self._outage:
                    raise PublishError(f"{subject}: {type(exc).__name__} after {attempt} tries"
                                       f" in {now - first_failure:.0f} s") from exc
                log.warning("publish to %s failed (%s), retry %d", subject,
                            type(exc).__name__, attempt)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except (ConnectionClosedError, APIError) as exc:
                raise PublishError(f"{subject}: {exc}") from exc
            else:
                self.published += 1
                if ack.duplicate:
                    self.duplicates += 1
                return ack
