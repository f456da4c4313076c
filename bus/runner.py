"""The one pull-consumer runner every consumer and projection uses.

Commit order, written down and followed:
  1. fetch a batch; decode each message by its header type. A message that
     cannot be decoded, or whose body belongs on another subject (a prediction of
     source A published on source B's subject), goes to the DLQ with the reason,
     then ``term``.
  2. hand the decoded batch to the handler; while it works, ``in_progress``
     keeps the messages from being redelivered.
  3. the handler commits its side effect (rows, published events) and returns
     one ``Outcome`` per delivery; only then are messages acked.
  4. a ``TransientError`` is retried for ever (it never dead-letters); any other
     exception is retried message by message to isolate the poison one, which
     goes to the DLQ and is terminated: at once for a ``PoisonError`` (the handler
     knows it can never succeed), after ``poison_after`` failures for any other.

Unordered runners (the classifier) retry through the server: ``nak`` with a
delay. Ordered runners (projections) never ``nak``: a failed batch is retried in
this process, with backoff and heartbeats, so nothing after it is handled before
it is committed (the next batch is fetched while it commits). Their durable is
re-created at start from the position the caller committed (``start_after``), so
messages that a killed process left unacked can never be overtaken by newer ones;
they ack a committed batch with one ack, its last message's (``AckPolicy.ALL``).
The server never gives up on a message (``max_deliver`` -1 by default): the runner
decides what is poison.
SIGTERM/SIGINT set the stop event: the current batch finishes, then we drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from bus.publisher import Publisher, PublishError
from bus.pull import Puller
from bus_schemas import DecodeError, Event, decode
from bus_schemas import subjects as subj
from bus_schemas.codec import MSG_ID_HEADER
from bus_schemas.errors import TidzamError
from bus_schemas.streams import (
    DLQ_CONSUMER,
    DLQ_REASON,
    DLQ_STREAM_SEQ,
    DLQ_SUBJECT,
    ConsumerSpec,
)

log = logging.getLogger(__name__)


class TransientError(TidzamError, RuntimeError):
    """A failure that retrying later can fix (database down, bus unreachable)."""


class PoisonError(TidzamError, ValueError):
    """The messages handled can never succeed (a value the database refuses, say).

    Raised for a batch, the runner handles its messages one by one; raised for one
    message, it is dead-lettered at once, without the retries an unknown failure gets.
    """


@dataclass(frozen=True)
class Delivery:
    msg: Msg
    event: Event
    stream_seq: int
    num_delivered: int
    subject: str


@dataclass(frozen=True)
class Ack:
    pass


@dataclass(frozen=True)
class Nak:
    delay_s: float


@dataclass(frozen=True)
class Poison:
    reason: str


@dataclass(frozen=True)
class Hold:
    """The handler keeps the message and settles it itself later (ack, nak or
    ``in_progress`` meanwhile): the classifier holding a live session's newest
    chunk until its successor arrives."""


Outcome = Ack | Nak | Poison | Hold
Handler = Callable[[Sequence[Delivery]], Awaitable[Sequence[Outcome]]]


@dataclass
class RunnerStats:
    batches: int = 0
    acked: int = 0
    nakked: int = 0
    dead_lettered: int = 0
    held: int = 0  # handed to the handler to settle
    retries: int = 0
    errors: list[str] = field(default_factory=list)


class _Stopped(TidzamError):
    """The stop event was set while a batch was being retried."""


class ConsumerRunner:
    def __init__(
        self,
        nc: Client,
        spec: ConsumerSpec,
        handler: Handler,
        *,
        ordered: bool = False,
        poison_after: int = 5,
        fetch_timeout_s: float = 0.2,
        start_after: int | None = None,
        start_time: datetime | None = None,
        before_fetch: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream()
        self._pub = Publisher(self._js)
        self.spec = spec
        self._handler = handler
        self._ordered = ordered
        self._poison_after = poison_after
        self._fetch_timeout = fetch_timeout_s
        self._start_after = start_after
        self._start_time = start_time
        self._before_fetch = before_fetch  # e.g. a background consumer giving way
        self._stop = asyncio.Event()
        self.stats = RunnerStats()

    def consumer_config(self) -> ConsumerConfig:
        spec = self.spec
        # No server-side backoff: the server would use its first step as the ack
        # wait, redelivering work still in hand; the runner sets each nak's delay.
        config = ConsumerConfig(
            durable_name=spec.durable,
            deliver_policy=DeliverPolicy.ALL,
            # an ordered runner commits whole batches in order: one ack, the last, acks all
            ack_policy=AckPolicy.ALL if self._ordered else AckPolicy.EXPLICIT,
            ack_wait=spec.ack_wait_s,
            max_deliver=spec.max_deliver,
            max_ack_pending=spec.max_ack_pending,
            filter_subjects=list(spec.filter_subjects),
        )
        if self._start_after is not None:
            config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = self._start_after + 1
        elif self._start_time is not None:
            config.deliver_policy = DeliverPolicy.BY_START_TIME
            config.opt_start_time = self._start_time
        return config

    async def ensure_consumer(self) -> None:
        """Create the durable, or update it to the spec; ordered runners re-create it
        at their committed position."""
        if self._start_after is not None or self._start_time is not None:
            with contextlib.suppress(NotFoundError):
                await self._js.delete_consumer(self.spec.stream, self.spec.durable)
        await self._js.add_consumer(self.spec.stream, self.consumer_config())

    async def run(self, stop: asyncio.Event) -> RunnerStats:
        """Consume until ``stop`` is set; the batch in hand is always finished."""
        self._stop = stop
        await self.ensure_consumer()
        puller = Puller(self._nc, self.spec.stream, self.spec.durable)
        await puller.start()
        ahead: asyncio.Task[list[Msg]] | None = None
        try:
            while not stop.is_set():
                if self._before_fetch is not None:
                    await self._before_fetch()
                    if stop.is_set():
                        break
                if ahead is not None:
                    msgs, ahead = await ahead, None
                else:
                    msgs = await puller.fetch(self.spec.batch, self._fetch_timeout)
                if not msgs:
                    continue
                if self._ordered and len(msgs) >= self.spec.batch:
                    # a backlog (a full batch): the next one comes in while this one
                    # commits. Not live, where it would linger for the fetch timeout
                    # and hold back what arrives while this one commits.
                    ahead = asyncio.create_task(puller.fetch(self.spec.batch,
                                                             self._fetch_timeout))
                await self.process(msgs)
        finally:
            if ahead is not None:  # fetched, not handled: redelivered after the ack wait
                ahead.cancel()
                with contextlib.suppress(BaseException):
                    await ahead
            with contextlib.suppress(Exception):
                await puller.stop()
        return self.stats

    async def process(self, msgs: Sequence[Msg]) -> None:
        """Decode, handle, settle one fetched batch."""
        deliveries: list[Delivery] = []
        for msg in msgs:
            meta = msg.metadata
            try:
                event = decode(msg.headers, msg.data)
                where = subj.subject_for(event)
                if where != msg.subject:  # a forgery, or a publisher of someone else's
                    raise DecodeError(f"the body belongs on {where}, not {msg.subject}")
            except DecodeError as exc:
                await self.dead_letter(msg, exc.reason)
                continue
            deliveries.append(Delivery(msg, event, meta.sequence.stream,
                                       meta.num_delivered, msg.subject))
        if deliveries:
            try:
                if self._ordered:
                    await self._handle_ordered(deliveries)
                else:
                    await self._handle(deliveries)
            except _Stopped:
                log.info("%s: stopping with a batch unfinished; it will be redelivered",
                         self.spec.durable)
        self.stats.batches += 1
        await self._nc.flush()

    # -------------------------------------------------------------- unordered

    async def _handle(self, deliveries: list[Delivery]) -> None:
        try:
            async with self._heartbeat(deliveries):
                outcomes = await self._handler(deliveries)
        except TransientError as exc:
            log.warning("%s: transient failure, retrying later: %s", self.spec.durable, exc)
            await self._nak_all(deliveries)
            return
        except Exception as exc:
            log.exception("%s: handler failed on a batch of %d", self.spec.durable,
                          len(deliveries))
            self.stats.errors.append(f"{type(exc).__name__}: {exc}")
            for delivery in deliveries:  # find the poison one
                await self._handle_one(delivery)
            return
        await self._settle(deliveries, outcomes)

    async def _handle_one(self, delivery: Delivery) -> None:
        try:
            outcomes = await self._handler([delivery])
        except TransientError:
            await self._nak_all([delivery])
        except PoisonError as exc:
            await self.dead_letter(delivery.msg, f"cannot succeed: {exc}")
        except Exception as exc:
            if delivery.num_delivered >= self._poison_after:
                await self.dead_letter(delivery.msg, self._poison_reason(exc,
                                                                         delivery.num_delivered))
            else:
                await self._nak_all([delivery])
        else:
            await self._settle([delivery], outcomes)

    # ---------------------------------------------------------------- ordered

    async def _handle_ordered(self, deliveries: list[Delivery]) -> None:
        """Commit the batch, in order, before anything else is fetched."""
        async with self._heartbeat(deliveries):
            attempt = 0
            while True:
                try:
                    outcomes = await self._handler(deliveries)
                except TransientError as exc:
                    attempt += 1
                    log.warning("%s: transient failure (try %d), retrying: %s",
                                self.spec.durable, attempt, exc)
                    await self._pause(attempt)
                    continue
                except PoisonError as exc:  # expected: find the one, no traceback
                    log.warning("%s: a batch of %d holds a message that cannot succeed (%s):"
                                " handling them one by one", self.spec.durable,
                                len(deliveries), exc)
                    self.stats.errors.append(f"{type(exc).__name__}: {exc}")
                    for delivery in deliveries:
                        await self._ordered_one(delivery)
                    return
                except Exception as exc:
                    log.exception("%s: handler failed on a batch of %d", self.spec.durable,
                                  len(deliveries))
                    self.stats.errors.append(f"{type(exc).__name__}: {exc}")
                    for delivery in deliveries:
                        await self._ordered_one(delivery)
                    return
                await self._settle(deliveries, outcomes)
                return

    async def _ordered_one(self, delivery: Delivery) -> None:
        """Retry one message here until it commits, or dead-letter it as poison."""
        failures = 0
        while True:
            try:
                outcomes = await self._handler([delivery])
            except TransientError:
                failures = 0
                await self._pause(1)
                continue
            except PoisonError as exc:
                await self.dead_letter(delivery.msg, f"cannot succeed: {exc}")
                return
            except Exception as exc:
                failures += 1
                if failures >= self._poison_after:
                    await self.dead_letter(delivery.msg, self._poison_reason(exc, failures))
                    return
                await self._pause(failures)
                continue
            await self._settle([delivery], outcomes)
            return

    async def _pause(self, attempt: int) -> None:
        self.stats.retries += 1
        delay = self._delay(attempt)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)
        if self._stop.is_set():
            raise _Stopped

    # ----------------------------------------------------------------- common

    @staticmethod
    def _poison_reason(exc: BaseException, failures: int) -> str:
        return f"handler failed {failures} times: {type(exc).__name__}: {exc}"

    async def _settle(self, deliveries: Sequence[Delivery],
                      outcomes: Sequence[Outcome]) -> None:
        if len(outcomes) != len(deliveries):
            raise RuntimeError("handler must return one outcome per delivery")
        if self._ordered and all(isinstance(o, Ack) for o in outcomes):
            await deliveries[-1].msg.ack()  # AckPolicy.ALL: every one before it too
            self.stats.acked += len(deliveries)
            return
        for delivery, outcome in zip(deliveries, outcomes, strict=True):
            match outcome:
                case Ack():
                    await delivery.msg.ack()
                    self.stats.acked += 1
                case Nak(delay_s=delay):
                    await delivery.msg.nak(delay=delay)
                    self.stats.nakked += 1
                case Poison(reason=reason):
                    await self.dead_letter(delivery.msg, reason)
                case Hold():
                    self.stats.held += 1

    async def _nak_all(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            await delivery.msg.nak(delay=self._delay(delivery.num_delivered))
            self.stats.nakked += 1

    def _delay(self, attempt: int) -> float:
        steps = self.spec.backoff_s or (1.0,)
        return steps[min(max(attempt, 1) - 1, len(steps) - 1)]

    async def dead_letter(self, msg: Msg, reason: str) -> None:
        """Copy the raw message to the DLQ with the reason, then terminate it. If the
        DLQ cannot be written, the message is nak'd: nothing is dropped unrecorded."""
        meta = msg.metadata
        headers = dict(msg.headers or {})
        headers.pop(MSG_ID_HEADER, None)
        headers.update({
            DLQ_REASON: reason[:4000],
            DLQ_SUBJECT: msg.subject,
            DLQ_STREAM_SEQ: str(meta.sequence.stream),
            DLQ_CONSUMER: self.spec.durable,
            MSG_ID_HEADER: f"dlq.{self.spec.durable}.{meta.sequence.stream}",
        })
        log.error("%s: dead-lettering %s #%d: %s", self.spec.durable, msg.subject,
                  meta.sequence.stream, reason)
        try:
            await self._pub.publish_raw(subj.dlq(msg.subject), msg.data or b"", headers)
        except PublishError as exc:
            log.error("%s: the DLQ is unavailable (%s); keeping #%d", self.spec.durable, exc,
                      meta.sequence.stream)
            await msg.nak(delay=self._delay(meta.num_delivered))
            self.stats.nakked += 1
            return
        await msg.term()
        self.stats.dead_lettered += 1

    @contextlib.asynccontextmanager
    async def _heartbeat(self, deliveries: Sequence[Delivery]) -> AsyncIterator[None]:
        """Tell the server the batch is still being worked on (long inference/commit)."""
        period = max(self.spec.ack_wait_s / 3.0, 0.2)

        async def beat() -> None:
            while True:
                await asyncio.sleep(period)
                for delivery in deliveries:
                    await delivery.msg.in_progress()

        task = asyncio.create_task(beat())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
