"""The classifier consumer: AudioChunk events in, Prediction events out.

For a batch of chunks (any sources and channels, from the shared durable
consumer): fetch the next chunk of each where a window crosses its end, cut the
windows the chunk owns (``windowing``), compute features for all of them at once
(``inference.features``), run ONE batched inference, decide, publish every
prediction and wait for the acks; only then are the chunks acked. A redelivered
chunk gives the same predictions with the same ``Nats-Msg-Id``, stored once.

The scorer is a ``inference.cascade.Cascade`` in the service (the selector and
the experts that refine its classes, one score vector with every class of all
of them, one version naming them all) or any single model: both are a
``Scorer``. Features are computed once per window with the scorer's parameters.

Switching models (``swap``, called by the classifier service on a deploy of the
selector or of an expert; either way the whole cascade is swapped): a batch
is scored by the scorer it started with, so the switch falls between two
batches and every window (owned by exactly one chunk) is scored by exactly one
model version; no chunk is held back or dropped. The ``Nats-Msg-Id`` of a
prediction names the model version, so a chunk scored again by ANOTHER version
would give the window a second prediction, not a de-duplicated copy. This
happens only to a redelivered chunk whose predictions were published before the
switch and not acked (a failed publish, a lost ack): the classifier remembers
which scorer scored its recent chunks (by AUDIO stream sequence) and scores
such a chunk again with that same scorer, so the copies are identical and stored
once. Not covered: a chunk redelivered to another instance or after a restart
(its earlier scorer is not known there); both predictions are then stored, each
under its own version. A swap is refused (``ModelRefused``) when the model's
window length or sample rate differs from the running windowing: the window
grid and the chunks' rate cannot change without a restart.

Audio experts (BirdNET, ``inference.cascade.AudioExpert``): when the scorer is a
cascade whose experts hear raw audio around a window (``Cascade.context_samples``
> 0), the classifier also fetches the audio before each chunk (``_preceding``:
the previous chunks of its session, looked up in the stream, so every instance
and every redelivery sees the same) and looks further ahead, and hands the
cascade the windows' contexts (``inference.contexts``: centred on each window,
shifted at a session's edges). Without such an expert nothing changes: no
look-back, no longer look-ahead.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
from nats.aio.client import Client
from nats.js.api import RawStreamMsg
from nats.js.errors import NotFoundError

from bus.publisher import Publisher, PublishError
from bus.runner import Ack, Delivery, Nak, Outcome, Poison, TransientError
from bus_schemas import AudioChunk, DecodeError, Prediction, decode
from bus_schemas.streams import AUDIO
from bus_schemas.subjects import audio as audio_subject
from inference.cascade import Cascade
from inference.contexts import Span, SpanContexts, audio_needed_after, audio_needed_before
from inference.features import FeatureParams, window_features
from inference.scoring import Scorer
from inference.windows import Windows, cut, samples_needed_after

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]


@dataclass
class ClassifierStats:
    chunks: int = 0
    windows: int = 0
    predictions: int = 0
    waits: int = 0


def context_samples(scorer: Scorer) -> int:
    """Raw audio around each window that ``scorer`` needs (0: its features only)."""
    return scorer.context_samples if isinstance(scorer, Cascade) else 0


@dataclass(frozen=True)
class _Job:
    """A chunk ready to score: its windows, the scorer that scores it, and (for a
    scorer with audio experts) the contiguous audio around it."""

    stream_seq: int  # in AUDIO
    chunk: AudioChunk
    windows: Windows
    scorer: Scorer
    span: Span | None


class ChunkNotReady(Exception):
    """The next chunk of a live source has not arrived yet."""


class ModelRefused(ValueError):
    """A model this classifier cannot switch to while running."""


class Classifier:
    RETRY_S = 0.2  # how soon a chunk waiting for its successor comes back
    MAX_FOREIGN = 64  # chunks of other sessions to skip while looking for the next one
    REMEMBERED = 16_384  # recently scored chunks whose scorer is kept for redeliveries

    def __init__(self, nc: Client, scorer: Scorer, publisher: Publisher, *,
                 overlap: float = 0.25, stall_s: float = 10.0) -> None:
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        self._js = nc.jetstream()
        self.scorer = scorer
        self._pub = publisher
        params = scorer.features
        self.window = params.window_samples
        self.hop = max(1, round(self.window * (1.0 - overlap)))
        self._stall_s = stall_s  # a successor this late means the session ended
        self._scored_by: OrderedDict[int, Scorer] = OrderedDict()  # AUDIO seq → scorer
        self.stats = ClassifierStats()

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
        """Score the next batches with ``scorer``; returns the one it replaces. Raises
        ModelRefused for a model the running windowing cannot serve."""
        reason = self.refusal(scorer.model_id, scorer.features)
        if reason is not None:
            raise ModelRefused(reason)
        previous, self.scorer = self.scorer, scorer
        return previous

    async def handle(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        """Runner handler: one inference for the whole batch."""
        scorer = self.scorer  # the whole batch is scored by one version (see swap)
        outcomes: list[Outcome] = [Ack()] * len(deliveries)
        jobs: list[tuple[int, AudioChunk]] = []
        for i, delivery in enumerate(deliveries):
            event = delivery.event
            if not isinstance(event, AudioChunk):
                outcomes[i] = Poison(f"classifier got a {event.event_type}, not an AudioChunk")
            elif event.sample_rate != scorer.features.sample_rate:
                outcomes[i] = Poison(
                    f"chunk at {event.sample_rate} Hz; model {scorer.model_id} needs "
                    f"{scorer.features.sample_rate} Hz (producers resample)")
            else:
                jobs.append((i, event))
        # a chunk this process scored before (a redelivery) keeps its earlier scorer, so
        # that its predictions keep their message ids (see swap)
        scorers = [self._scored_by.get(deliveries[i].stream_seq, scorer) for i, _ in jobs]
        arounds = await asyncio.gather(*(self._around(deliveries[i].stream_seq, c,
                                                      context_samples(s))
                                         for (i, c), s in zip(jobs, scorers, strict=True)),
                                       return_exceptions=True)
        ready: list[_Job] = []
        for (i, chunk), chosen, around in zip(jobs, scorers, arounds, strict=True):
            seq = deliveries[i].stream_seq
            if isinstance(around, ChunkNotReady):
                # Live edge: come back shortly rather than hold up the ready chunks of
                # the batch (and the next fetch) while this one's successor arrives.
                self.stats.waits += 1
                if self._age_s(deliveries[i]) < self._stall_s:
                    outcomes[i] = Nak(delay_s=self.RETRY_S)
                    continue
                # The source stalled for good: the windows crossing this end are lost
                # with the audio that never came; the others are classified.
                log.warning("no chunk after %s.%d seq %d: closing its windows",
                            chunk.source, chunk.channel, chunk.seq)
                before = await self._preceding_or_transient(seq, chunk, context_samples(chosen),
                                                            chunk.end_sample)
                ready.append(self._job(seq, chunk, chosen, before, None))
            elif isinstance(around, BaseException):
                raise TransientError(f"looking up the next chunk failed: {around}")
            else:
                ready.append(self._job(seq, chunk, chosen, *around))
        groups = self._by_scorer(ready)
        predictions = await asyncio.to_thread(self._predict_groups, groups)
        self._remember(groups)  # before publishing: a partly failed publish counts
        try:
            await self._pub.publish_all(predictions)
        except PublishError as exc:
            raise TransientError(str(exc)) from exc
        self.stats.chunks += len(ready)
        self.stats.predictions += len(predictions)
        return outcomes

    def _job(self, stream_seq: int, chunk: AudioChunk, scorer: Scorer, before: F32 | None,
             after: F32 | None) -> _Job:
        """The windows a chunk owns and, for a scorer with audio experts, the span of
        its session's audio from ``before`` through ``after`` it."""
        samples = chunk.to_float32()
        windows = cut(samples, chunk.first_sample, after, self.hop, self.window)
        span = None
        if context_samples(scorer):
            parts = [p for p in (before, samples, after) if p is not None]
            first = chunk.first_sample - (0 if before is None else before.shape[0])
            span = Span(np.concatenate(parts), first)
        return _Job(stream_seq, chunk, windows, scorer, span)

    async def _around(self, stream_seq: int, chunk: AudioChunk, context: int
                      ) -> tuple[F32 | None, F32 | None]:
        """(samples before, samples after) ``chunk`` that its windows and their
        ``context``-sample contexts need (0: no context, nothing before)."""
        first, n = chunk.first_sample, chunk.n_samples
        if not context:
            need = samples_needed_after(first, n, self.hop, self.window)
            return None, await self._following(stream_seq, chunk, need)
        need = audio_needed_after(first, n, self.hop, self.window, context)
        after = await self._following(stream_seq, chunk, need)
        end = chunk.end_sample + (0 if after is None else after.shape[0])
        return await self._preceding(stream_seq, chunk, context, end), after

    async def _following(self, stream_seq: int, chunk: AudioChunk, need: int) -> F32 | None:
        """``need`` samples right after ``chunk``, from the next chunks of its session
        (several if chunks are short); None or fewer at the end of a session or a
        gap."""
        if chunk.final or need == 0:
            return None
        subject = audio_subject(chunk.source, chunk.channel)
        parts: list[F32] = []
        got, cursor, seq, first = 0, stream_seq, chunk.seq + 1, chunk.end_sample
        foreign = 0
        while got < need:
            raw = await self._next_on_subject(cursor, subject)
            if raw is None:  # not published yet: the handler decides to wait or not
                raise ChunkNotReady(f"{subject} seq {seq}")
            cursor = raw.seq or cursor + 1
            nxt = self._decode_chunk(raw.headers, raw.data or b"")
            if nxt is None or nxt.origin_ns != chunk.origin_ns:
                foreign += 1  # another session of this source, interleaved
                if foreign > self.MAX_FOREIGN:
                    break
                continue
            if nxt.seq != seq or nxt.first_sample != first:
                break  # a gap: the session ended here
            samples = nxt.to_float32()
            parts.append(samples)
            got += samples.shape[0]
            seq, first = seq + 1, nxt.end_sample
            if nxt.final:
                break
        return np.concatenate(parts) if parts else None

    async def _preceding(self, stream_seq: int, chunk: AudioChunk, context: int,
                         span_end: int) -> F32 | None:
        """Samples right before ``chunk``, as far back as the ``context`` of its first
        window needs them (the session's audio known up to ``span_end``), from the
        previous chunks of its session; None or fewer at the start of a session,
        after a gap, or where the stream no longer holds them."""
        need = audio_needed_before(chunk.first_sample, chunk.n_samples, self.hop, self.window,
                                   context, span_end)
        if need == 0:  # a session's first chunk, or its windows' contexts lie inside it
            return None
        subject = audio_subject(chunk.source, chunk.channel)
        parts: list[F32] = []
        got, cursor, back, foreign = 0, stream_seq, 1, 0
        seq, end = chunk.seq - 1, chunk.first_sample  # what the previous chunk must be
        while got < need and end > 0:
            raw = await self._previous_on_subject(cursor, subject, back)
            if raw is None or not raw.seq:
                break
            back, cursor = max(1, cursor - raw.seq), raw.seq  # the next one back: as far
            prev = self._decode_chunk(raw.headers, raw.data or b"")
            if prev is None or prev.origin_ns != chunk.origin_ns:
                foreign += 1  # another session of this source
                if foreign > self.MAX_FOREIGN:
                    break
                continue
            if prev.seq != seq or prev.end_sample != end:
                break  # a gap: the session's audio before it is lost
            parts.append(prev.to_float32())
            got += parts[-1].shape[0]
            seq, end = seq - 1, prev.first_sample
        return np.concatenate(parts[::-1]) if parts else None

    async def _preceding_or_transient(self, stream_seq: int, chunk: AudioChunk,
                                      context: int, span_end: int) -> F32 | None:
        if not context:
            return None
        try:
            return await self._preceding(stream_seq, chunk, context, span_end)
        except Exception as exc:  # the bus failed us (timeout, reconnect): retry later
            raise TransientError(f"looking up the previous chunk failed: {exc}") from exc

    async def _previous_on_subject(self, before_seq: int, subject: str,
                                   back: int) -> RawStreamMsg | None:
        """The last message on ``subject`` stored before stream sequence ``before_seq``
        (None: none). JetStream only looks forward (next by subject), so look ``back``
        sequences back, doubling until one turns up, then step forward to the last:
        a few gets however many other channels are interleaved, ``back`` being a
        guess of how many."""
        while True:
            low = max(1, before_seq - back)
            raw = await self._next_on_subject(low - 1, subject)
            if raw is not None and raw.seq and raw.seq < before_seq:
                while True:
                    nxt = await self._next_on_subject(raw.seq, subject)
                    if nxt is None or not nxt.seq or nxt.seq >= before_seq:
                        return raw
                    raw = nxt
            if low == 1:
                return None
            back *= 2

    @staticmethod
    def _age_s(delivery: Delivery) -> float:
        """Seconds since the chunk was stored in the stream."""
        stored = delivery.msg.metadata.timestamp
        return (datetime.now(UTC) - stored).total_seconds() if stored else 0.0

    async def _next_on_subject(self, after_seq: int, subject: str) -> RawStreamMsg | None:
        try:
            raw: RawStreamMsg = await self._js.get_msg(AUDIO.name, seq=after_seq + 1,
                                                       subject=subject, next=True)
        except NotFoundError:
            return None
        return raw

    @staticmethod
    def _decode_chunk(headers: dict[str, str] | None, data: bytes) -> AudioChunk | None:
        try:
            event = decode(headers, data)
        except DecodeError:
            return None
        return event if isinstance(event, AudioChunk) else None

    @staticmethod
    def _by_scorer(ready: list[_Job]) -> list[tuple[Scorer, list[_Job]]]:
        """The chunks of a batch grouped by the scorer that scores them."""
        groups: dict[int, tuple[Scorer, list[_Job]]] = {}
        for job in ready:
            groups.setdefault(id(job.scorer), (job.scorer, []))[1].append(job)
        return list(groups.values())

    def _remember(self, groups: list[tuple[Scorer, list[_Job]]]) -> None:
        """Which scorer scored each chunk (by AUDIO stream sequence), for redeliveries."""
        for scorer, jobs in groups:
            for job in jobs:
                self._scored_by[job.stream_seq] = scorer
                self._scored_by.move_to_end(job.stream_seq)
        while len(self._scored_by) > self.REMEMBERED:
            self._scored_by.popitem(last=False)

    def _predict_groups(self, groups: list[tuple[Scorer, list[_Job]]]) -> list[Prediction]:
        """Worker thread: one inference per scorer (one, but around a switch)."""
        return [p for scorer, jobs in groups for p in self._predict(jobs, scorer)]

    def _scores(self, ready: list[_Job], scorer: Scorer, windows: F32) -> F32:
        """One inference for the windows (N, window) of ``ready``, with the audio around
        them for a scorer with audio experts."""
        features = window_features(windows, scorer.features)
        if not isinstance(scorer, Cascade) or not scorer.context_samples:
            return scorer.predict(features)
        spans = [job.span for job in ready if job.span is not None]
        if len(spans) != len(ready):
            raise RuntimeError("a chunk scored with audio experts has no audio around it")
        span_of = np.concatenate([np.full(j.windows.starts.shape, k, dtype=np.int64)
                                  for k, j in enumerate(ready)])
        starts = np.concatenate([j.windows.starts for j in ready])
        start_ns = np.array([j.chunk.time_of(s) for j in ready
                             for s in j.windows.starts.tolist()], dtype=np.int64)
        return scorer.predict(features, SpanContexts(self.window, spans, span_of, starts,
                                                     start_ns))

    def _predict(self, ready: list[_Job], scorer: Scorer) -> list[Prediction]:
        """Features + one inference for every window of ``ready``."""
        total = sum(j.windows.samples.shape[0] for j in ready)
        if total == 0:
            return []
        windows = np.concatenate([j.windows.samples for j in ready
                                  if j.windows.samples.shape[0]])
        scores = self._scores(ready, scorer, windows)
        out: list[Prediction] = []
        row = 0
        s = scorer
        for job in ready:
            chunk = job.chunk
            for start in job.windows.starts.tolist():
                vector = scores[row]
                row += 1
                t0 = chunk.time_of(start)
                out.append(Prediction(
                    source=chunk.source, channel=chunk.channel, window_start_ns=t0,
                    window_end_ns=chunk.time_of(start + self.window), model_id=s.model_id,
                    model_version=s.version, labels=s.labels,
                    scores=tuple(float(x) for x in vector), result=s.decide(vector)))
        self.stats.windows += total
        return out
