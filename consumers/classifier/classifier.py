"""The classifier consumer: AudioChunk events in, Prediction events out.

Read ``README.md`` beside this file first: it states what the classifier owns,
when it acks, how redeliveries and model swaps are handled.

Hot path (one instance, chunks arriving in order): each delivered chunk joins
the lane of its session (``lanes``); the chunks whose windows are complete are
scored together (features for all windows at once, ONE batched inference),
their predictions published and acked; the newest chunk of each session is
*held* (not acked, kept alive with ``in_progress``) until the chunk after it
arrives, because its last windows run into it. No nak, no lookup in the stream.

Everything else reads the stream (``lookup``), never the wall clock:

- a chunk whose predecessor this instance has not seen (another instance took
  it, a restart) looks it up: its stored time says whether the boundary between
  them is broken, and its audio completes the windows and contexts that need it;
- a held chunk whose successor went to another instance is found by a forward
  scan of its subject, done only when the deliveries show a hole (sequences this
  instance did not get) after it, or when held chunks fill half of ``max_ack_pending``;
- a session that stops without a final chunk: once the stream's own clock (the
  stored times it shows us) has passed the newest chunk's time by ``stall_s``
  while the consumer has no backlog, and a scan finds no successor, the lane
  breaks there (``Lane.declare_break``) and the chunks before it are scored with
  the audio there is. A successor stored later is ``stall_s`` late by
  construction, so it owns the windows the break left and scores them when it
  arrives: an outage of NATS (no stored times at all) never closes a window
  early, and a late chunk never loses one.

Chunks on a source's subject that belong to another session (junk, a second
producer under the same name) make their own lanes and never end another
session's windows; chunks that claim a session's seq but not its samples are
dead-lettered. Both are counted (``ClassifierStats``) and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from nats.aio.client import Client

from bus.publisher import Publisher, PublishError
from bus.runner import Ack, ConsumerRunner, Delivery, Hold, Outcome, Poison
from bus_schemas import AudioChunk, Prediction
from bus_schemas.errors import TidzamError
from bus_schemas.streams import CLASSIFIER_MAX_ACK_PENDING
from consumers.classifier.lanes import (
    Geometry,
    Lane,
    Piece,
    Ready,
    SessionKey,
    forget_lanes,
    session_key,
)
from consumers.classifier.lookup import StreamLookup, stored_ns
from inference.cascade import Cascade
from inference.contexts import SpanContexts
from inference.features import FeatureParams, span_features
from inference.scoring import Scorer
from inference.windows import hop_samples

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]


@dataclass
class ClassifierStats:
    chunks: int = 0  # scored and acked
    windows: int = 0
    predictions: int = 0
    held: int = 0  # held now
    scans: int = 0  # forward scans of a subject (another instance, a restart)
    lookups: int = 0  # predecessors looked up
    breaks: int = 0  # sessions broken by the stall rule
    dropped_windows: int = 0  # windows no audio completed (a session's or a break's end)
    foreign: int = 0  # messages of other sessions met while scanning
    inconsistent: int = 0  # chunks dead-lettered: a session's seq with other samples
    publish_failures: int = 0


def context_samples(scorer: Scorer) -> int:
    """Raw audio around each window that ``scorer`` needs (0: its features only)."""
    return scorer.context_samples if isinstance(scorer, Cascade) else 0


class ModelRefused(TidzamError, ValueError):
    """A model this classifier cannot switch to while running."""


class Classifier:
    TICK_S = 0.05  # how often held chunks are checked against the stream
    IDLE_S = 0.25  # no delivery for this long: ask the consumer's state (at most this often)
    SCAN_BUDGET = 32  # stream reads per lane per tick
    JOBS = 2  # batches scored and published at once (one infers while one publishes)

    def __init__(self, nc: Client, scorer: Scorer, publisher: Publisher, *,
                 overlap: float = 0.25, stall_s: float = 10.0, ack_wait_s: float = 30.0,
                 max_ack_pending: int = CLASSIFIER_MAX_ACK_PENDING) -> None:
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        self.scorer = scorer
        self._pub = publisher
        self._lookup = StreamLookup(nc)
        self.window = scorer.features.window_samples
        self.hop = hop_samples(self.window, overlap)
        self._stall_ns = int(stall_s * 1e9)
        self._heartbeat_s = max(ack_wait_s / 3.0, 0.2)
        self._high_water = max(1, max_ack_pending // 2)
        self._lanes: OrderedDict[SessionKey, Lane] = OrderedDict()
        self._lock = asyncio.Lock()
        self._stream_ns = 0  # the stream's clock: the newest stored time seen
        self._max_seq = 0  # highest AUDIO sequence delivered here
        self._holes: list[tuple[int, int]] = []  # AUDIO sequences delivered elsewhere
        self._backlog = 0  # the consumer's pending count at the last delivery
        self._consumer: tuple[str, str] | None = None  # (stream, durable) when consuming
        self._last_delivery = 0.0  # event loop time
        self._last_info = 0.0
        self._scorer_of: dict[int, Scorer] = {}  # id(piece) → scorer of a failed publish
        self._slots = asyncio.Semaphore(self.JOBS)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="classifier-scoring")
        self._inferred: asyncio.Future[None] | None = None  # the last job's inference
        self._jobs: set[asyncio.Task[None]] = set()
        self.stats = ClassifierStats()

    # ------------------------------------------------------------- models

    def geometry(self) -> Geometry:
        return Geometry(self.window, self.hop, context_samples(self.scorer))

    def refusal(self, model_id: str, params: FeatureParams) -> str | None:
        """Why a model with these feature parameters cannot replace the running one
        (None: it can). Other parameters (mels, FFT, band) may change: features are
        computed with each model's own."""
        running = self.scorer
        if model_id != running.model_id:
            return f"model {model_id} is not {running.model_id}, the model this classifier runs"
        if params.sample_rate != running.features.sample_rate:
            return (f"sample rate {params.sample_rate} Hz differs from the running "
                    f"{running.features.sample_rate} Hz")
        if params.window_samples != self.window:
            return (f"window of {params.window_samples} samples differs from the running "
                    f"{self.window} (restart the classifiers to change the window)")
        return None

    def swap(self, scorer: Scorer) -> Scorer:
        """Score the next chunks with ``scorer``; returns the one it replaces. Raises
        ModelRefused for a model the running windowing cannot serve. Chunks are
        scored whole by one scorer, so the switch falls between two chunks of every
        session: each window is scored by exactly one model version."""
        reason = self.refusal(scorer.model_id, scorer.features)
        if reason is not None:
            raise ModelRefused(reason)
        previous, self.scorer = self.scorer, scorer
        geometry = self.geometry()
        for lane in self._lanes.values():
            lane.regrid(geometry)  # an audio expert's context changes what is awaited
        return previous

    # ----------------------------------------------------------- the runner

    async def handle(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        """Runner handler: every valid chunk is held, then scored and acked here as
        soon as its windows are complete (maybe in this very call)."""
        outcomes: list[Outcome] = []
        async with self._lock:
            touched: dict[SessionKey, Lane] = {}
            for delivery in deliveries:
                outcome, lane = self._take(delivery)
                outcomes.append(outcome)
                if lane is not None:
                    touched[lane.key] = lane
            await self._complete(list(touched.values()))
        return outcomes

    def _take(self, delivery: Delivery) -> tuple[Outcome, Lane | None]:
        event = delivery.event
        scorer = self.scorer
        if not isinstance(event, AudioChunk):
            return Poison(f"classifier got a {event.event_type}, not an AudioChunk"), None
        if event.sample_rate != scorer.features.sample_rate:
            return Poison(f"chunk at {event.sample_rate} Hz; model {scorer.model_id} needs "
                          f"{scorer.features.sample_rate} Hz (producers resample)"), None
        stored = self._observe(delivery)
        lane = self._lane(session_key(event))
        if event.seq in lane.acked:
            return Ack(), None  # scored and acked before: our ack was lost
        piece = Piece(event, event.heard_samples(), stored, delivery.stream_seq, delivery)
        reason = lane.add(piece)
        if reason is not None:
            self.stats.inconsistent += 1
            return Poison(f"{delivery.subject}: {reason}: not this session's audio"), None
        return Hold(), lane

    def _observe(self, delivery: Delivery) -> int:
        """The stream's clock and the sequences other instances got."""
        meta = delivery.msg.metadata
        stored = stored_ns(meta.timestamp) or self._stream_ns
        self._stream_ns = max(self._stream_ns, stored)
        self._backlog = int(meta.num_pending or 0)
        self._last_delivery = asyncio.get_running_loop().time()
        seq = delivery.stream_seq
        if self._max_seq and seq > self._max_seq + 1:
            self._holes.append((self._max_seq + 1, seq - 1))
        self._max_seq = max(self._max_seq, seq)
        return stored

    def _lane(self, key: SessionKey) -> Lane:
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = Lane(key, self.geometry(), self._stall_ns)
        self._lanes.move_to_end(key)
        return lane

    # ------------------------------------------------------------- ticking

    async def consume(self, runner: ConsumerRunner, stop: asyncio.Event) -> None:
        """Run ``runner`` (whose handler is ``self.handle``) and the ticks together
        until ``stop``; the held chunks go back to the server at the end."""
        self._consumer = (runner.spec.stream, runner.spec.durable)
        await asyncio.gather(runner.run(stop), self.run(stop))

    async def run(self, stop: asyncio.Event) -> None:
        """Check held chunks against the stream and keep them alive until ``stop``;
        then hand the held ones back to the server for another instance."""
        beat = 0.0
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.TICK_S)
            try:
                async with self._lock:
                    await self.tick()
                    if loop.time() - beat >= self._heartbeat_s:
                        beat = loop.time()
                        await self._heartbeat()
            except Exception:  # the bus failed us mid-tick: the next tick retries
                log.exception("classifier tick failed")
        await self.release()

    async def tick(self) -> None:
        """Scans and lookups the held chunks need, then whatever became ready.
        Call with the lock held."""
        forget_lanes(self._lanes, asyncio.get_running_loop().time())
        lanes = [lane for lane in self._lanes.values() if lane.pending()]
        if not lanes:
            return
        await self._consumer_state()
        crowded = sum(len(lane.held()) for lane in lanes) >= self._high_water
        if crowded:  # deliveries may be blocked on max_ack_pending: ask the stream
            self._stream_ns = max(self._stream_ns, await self._lookup.stream_last_ns())
        for lane in lanes:
            await self._scan(lane, crowded)
        await self._complete([lane for lane in lanes if lane.changed])
        self._forget()

    async def _consumer_state(self) -> None:
        """While no delivery comes, ask the consumer what it delivered (to another
        instance: a hole after our last) and what is left (the backlog)."""
        now = asyncio.get_running_loop().time()
        if (self._consumer is None or now - self._last_delivery < self.IDLE_S
                or now - self._last_info < self.IDLE_S):
            return
        self._last_info = now
        info = await self._lookup.consumer_info(*self._consumer)
        delivered = int(info.delivered.stream_seq or 0) if info.delivered else 0
        if delivered > self._max_seq:
            self._holes.append((self._max_seq + 1, delivered))
            self._max_seq = delivered
        self._backlog = int(info.num_pending or 0)

    async def _scan(self, lane: Lane, crowded: bool) -> None:
        """Read the stream after the chunk a held one waits for, when another
        instance may have its successor, or the stall rule asks."""
        last = lane.waiting_after()
        if last is None:
            return
        wanted = last.seq + 1
        newest = lane.newest
        behind = newest is not None and newest.seq > last.seq  # a redelivery: it went on
        hole = any(b > max(last.stream_seq, lane.scan_done_at) for _, b in self._holes)
        stalled = (self._backlog == 0
                   and self._stream_ns - last.stored_ns >= lane.stall_ns)
        now = asyncio.get_running_loop().time()
        if not (behind or crowded or stalled) and (not hole or now < lane.scan_next_at):
            return
        self.stats.scans += 1
        resume = lane.scan_for == wanted and lane.scan_cursor > last.stream_seq
        start = lane.scan_cursor if resume else last.stream_seq
        found, reached_end, foreign = await self._lookup.scan(lane, start, wanted,
                                                              self.SCAN_BUDGET)
        self.stats.foreign += foreign
        if found:
            lane.scan_wait_s = self.TICK_S
        if found or not reached_end:
            return
        lane.scan_done_at = self._max_seq
        # not there yet: wait longer before a hole sends the next scan (50 ms … 1 s)
        lane.scan_next_at = now + lane.scan_wait_s
        lane.scan_wait_s = min(2 * lane.scan_wait_s, 1.0)
        if behind:  # the session went on, but the stream no longer holds this chunk
            lane.declare_break(last.seq)
            log.warning("%s.%d: seq %d is no longer in the stream: the windows that "
                        "needed it are dropped", lane.key[0], lane.key[1], wanted)
            return
        # the scan began after we saw the stream's clock pass the stall: a successor
        # stored from now on is late by the stall, so the boundary is broken for all
        if stalled and self._stream_ns - last.stored_ns >= lane.stall_ns:
            lane.declare_break(last.seq)
            self.stats.breaks += 1
            log.warning("%s.%d: no chunk after seq %d for %.0f s of the stream's time: "
                        "scoring the session's windows up to there", lane.key[0],
                        lane.key[1], last.seq, (self._stream_ns - last.stored_ns) / 1e9)

    def _forget(self) -> None:
        """Drop the holes no lane can still wait on."""
        oldest = min((p.stream_seq for lane in self._lanes.values() for p in lane.pending()),
                     default=self._max_seq)
        self._holes = [h for h in self._holes if h[1] >= oldest]

    async def _heartbeat(self) -> None:
        for lane in self._lanes.values():
            for delivery in lane.held():
                await delivery.msg.in_progress()

    async def release(self) -> None:
        """Hand every held chunk back (nak, no delay): another instance, or the next
        run, takes it at once instead of after ``ack_wait``."""
        await self.settle()
        async with self._lock:
            for lane in self._lanes.values():
                for piece in lane.pending():
                    if piece.delivery is not None:
                        with contextlib.suppress(Exception):
                            await piece.delivery.msg.nak(delay=0)
                        lane.disown(piece)

    # ---------------------------------------------------------------- scoring

    async def _complete(self, lanes: list[Lane]) -> None:
        """Look up the predecessors the touched lanes miss, score what is ready,
        publish, ack."""
        for lane in lanes:
            await self._look_up(lane)
        ready = [(lane, r) for lane in lanes for r in lane.ready()]
        if not ready:
            self._count_held()
            return
        for lane, r in ready:
            lane.set_scoring(r.piece, True)
        await self._slots.acquire()  # at most JOBS scored and published at once
        # A job's scorer is the one running when it is made or, while an inference
        # is under way, when that inference ends: a swap made during a batch (or
        # between two calls) takes effect at the next one, and the runner never
        # waits for an inference to fetch the next chunks.
        previous, self._inferred = self._inferred, asyncio.get_running_loop().create_future()
        groups = self._groups(ready) if previous is None or previous.done() else None
        job = asyncio.create_task(self._score(ready, groups, previous, self._inferred))
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    async def _look_up(self, lane: Lane) -> None:
        """Fetch what the lane's chunks miss before them, until nothing is missing:
        a chunk found may show that its own predecessor is needed (a context reaching
        further back). Each fetch settles its seq (found, or marked unavailable)."""
        while True:
            wanted = [(piece, missing) for piece in lane.pending()
                      if (missing := lane.missing_before(piece)) is not None
                      and missing not in lane.unavailable]
            if not wanted:
                return
            for piece, missing in wanted:
                if missing in lane.pieces or missing in lane.unavailable:
                    continue  # settled by an earlier fetch of this round
                self.stats.lookups += 1
                self.stats.foreign += await self._lookup.fetch_before(lane, piece, missing)

    async def settle(self) -> None:
        """Wait until every chunk being scored is published and acked (or back to
        held after a failed publish)."""
        while self._jobs:
            await asyncio.gather(*list(self._jobs), return_exceptions=True)

    def _groups(self, ready: list[tuple[Lane, Ready]]) -> list[tuple[Scorer, list[Ready]]]:
        """The ready chunks by the scorer that scores them: the running one, or for a
        chunk whose publish failed, the one it had then."""
        groups: dict[int, tuple[Scorer, list[Ready]]] = {}
        for _, r in ready:
            scorer = self._scorer_of.get(id(r.piece), self.scorer)
            groups.setdefault(id(scorer), (scorer, []))[1].append(r)
        return list(groups.values())

    async def _score(self, ready: list[tuple[Lane, Ready]],
                     chosen: list[tuple[Scorer, list[Ready]]] | None,
                     previous: asyncio.Future[None] | None,
                     inferred: asyncio.Future[None]) -> None:
        """Score (on the classifier's one scoring thread, jobs in order), publish,
        ack: the runner fetches and decodes the next chunks meanwhile."""
        try:
            try:
                if chosen is None:  # an inference was under way: its end decides
                    assert previous is not None
                    await asyncio.shield(previous)
                    chosen = self._groups(ready)
                groups = chosen
                predictions = await asyncio.get_running_loop().run_in_executor(
                    self._executor, lambda: [p for s, rs in groups for p in self._predict(rs, s)])
            finally:
                inferred.set_result(None)  # the next job may choose its scorer
            try:
                await self._pub.publish_all(predictions)
            except PublishError as exc:
                self.stats.publish_failures += 1
                for scorer, rs in groups:
                    for r in rs:
                        self._scorer_of[id(r.piece)] = scorer
                self._retry(ready)
                log.warning("publishing %d predictions failed (%s): the chunks stay held "
                            "and are scored again", len(predictions), exc)
                return
            for lane, r in ready:
                assert r.piece.delivery is not None
                await r.piece.delivery.msg.ack()
                self._scorer_of.pop(id(r.piece), None)
                lane.done(r.piece)
                self.stats.chunks += 1
                self.stats.dropped_windows += r.dropped
            for lane in {id(lane): lane for lane, _ in ready}.values():
                lane.prune()
            self.stats.predictions += len(predictions)
            self.stats.windows += len(predictions)
        except Exception:
            self._retry(ready)
            log.exception("scoring %d chunks failed: they stay held and are scored again",
                          len(ready))
        finally:
            for lane, r in ready:
                lane.set_scoring(r.piece, False)
                lane.note_finished(asyncio.get_running_loop().time())  # once all are done
            self._slots.release()
            self._count_held()

    @staticmethod
    def _retry(ready: list[tuple[Lane, Ready]]) -> None:
        """Chunks whose scoring failed: the next tick looks at their lanes again."""
        for lane, _ in ready:
            lane.changed = True

    def _count_held(self) -> None:
        self.stats.held = sum(len(lane.held()) for lane in self._lanes.values())

    def _predict(self, ready: list[Ready], scorer: Scorer) -> list[Prediction]:
        """Worker thread: features + one inference for every window of ``ready``."""
        counts = [r.starts.shape[0] for r in ready]
        total = sum(counts)
        if total == 0:
            return []
        features = span_features([(r.span.samples, r.starts - r.span.first_sample)
                                  for r in ready], scorer.features)
        if context_samples(scorer):
            assert isinstance(scorer, Cascade)
            span_of = np.repeat(np.arange(len(ready), dtype=np.int64), counts)
            starts = np.concatenate([r.starts for r in ready])
            start_ns = np.array([r.piece.chunk.time_of(s) for r in ready
                                 for s in r.starts.tolist()], dtype=np.int64)
            scores = scorer.predict(features, SpanContexts(
                self.window, [r.span for r in ready], span_of, starts, start_ns))
        else:
            scores = scorer.predict(features)
        labels = tuple(scorer.labels)
        if scores.shape != (total, len(labels)):
            raise ValueError(f"{scorer.model_id} gave scores {scores.shape} for {total} "
                             f"windows of {len(labels)} labels")
        rows: list[list[float]] = scores.tolist()
        out: list[Prediction] = []
        row = 0
        for r in ready:
            chunk = r.piece.chunk
            for start in r.starts.tolist():
                # built unvalidated: every field comes from a validated chunk or the
                # loaded model, the lengths are checked above, the window ends after it starts
                out.append(Prediction.model_construct(
                    source=chunk.source, channel=chunk.channel,
                    window_start_ns=chunk.time_of(start),
                    window_end_ns=chunk.time_of(start + self.window),
                    model_id=scorer.model_id, model_version=scorer.version,
                    labels=labels, scores=tuple(rows[row]), result=scorer.decide(scores[row]),
                    origin_ns=chunk.origin_ns))
                row += 1
        return out

