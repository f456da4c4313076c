"""Reading a stream's history without a consumer: the few events of a subject
(deploys, rule sets), one get each (answered by the leader), in stream order; and the
audio of a channel between two times, found in the AUDIO stream with a few direct gets
(the stream's ``allow_direct``: each chunk comes back raw, not as base64 JSON; any
replica may answer, which is fine for audio stored seconds before it is asked for)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import numpy as np
import numpy.typing as npt
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from bus.connect import BusError
from bus_schemas import AudioChunk, DecodeError, Event, ExtractionRulesSet, ModelDeployed, decode
from bus_schemas import subjects as subj
from bus_schemas.streams import AUDIO, CONTROL

log = logging.getLogger(__name__)
E = TypeVar("E", bound=Event)


async def read_subject(js: JetStreamContext, stream: str, subject: str,
                       kind: type[E], after: int = 0) -> tuple[list[tuple[int, E]], int]:
    """Every event of type ``kind`` on ``subject`` (a filter) of ``stream`` after
    sequence ``after``, in stream order with its sequence, and the last sequence read
    (``after``: none). For subjects with few events (deploys, rule sets, mixer
    commands): one direct get each, no consumer left behind; an unreadable message is
    logged and skipped."""
    found: list[tuple[int, E]] = []
    seq = after
    while True:
        try:
            raw = await js.get_msg(stream, seq=seq + 1, subject=subject, next=True)
        except NotFoundError:
            return found, seq
        seq = raw.seq if raw.seq else seq + 1
        try:
            event = decode(raw.headers, raw.data or b"")
        except DecodeError as exc:
            log.warning("%s seq %d on %s is unreadable (%s): skipped", stream, seq,
                        raw.subject, exc.reason)
            continue
        if isinstance(event, kind):
            found.append((seq, event))


async def settle_read(read: Callable[[], Awaitable[bool]],
                      delays_s: tuple[float, ...] = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)) -> None:
    """Read what a core NATS wake-up announced (``read`` says whether it found anything
    new). The message can reach a subscriber before its stream has stored it, so a read
    that found nothing is tried again a few times, a few seconds in all."""
    if await read():
        return
    for delay in delays_s:
        await asyncio.sleep(delay)
        if await read():
            return


async def read_deployments(js: JetStreamContext, model_id: str | None = None
                           ) -> tuple[list[tuple[int, ModelDeployed]], int]:
    """Every ``ModelDeployed`` in CONTROL for ``model_id`` (None: every model)."""
    return await read_subject(js, CONTROL.name, subj.model_deployed(model_id), ModelDeployed)


async def read_rule_sets(js: JetStreamContext
                         ) -> tuple[list[tuple[int, ExtractionRulesSet]], int]:
    """Every ``ExtractionRulesSet`` ever published, oldest first: the last is in force."""
    return await read_subject(js, CONTROL.name, subj.RULES, ExtractionRulesSet)


# --------------------------------------------------------------- audio by time


@dataclass(frozen=True)
class AudioSpan:
    """The audio of one channel between two times of one session (int16 samples).

    ``start_ns`` is the time of the first sample; ``complete`` is False when the
    session's audio did not yet reach the asked end (more may come), True when it
    did or when the session ended (``final``) before it."""

    source: str
    channel: int
    start_ns: int
    sample_rate: int
    samples: npt.NDArray[np.int16]
    complete: bool

    @property
    def end_ns(self) -> int:
        return self.start_ns + len(self.samples) * 1_000_000_000 // self.sample_rate


@dataclass(frozen=True)
class _Seen:
    """A chunk read before: where it is in the stream, and the step to the next chunk
    of its subject (other channels' chunks lie between them)."""

    seq: int
    origin_ns: int
    start_ns: int
    duration_ns: int
    stride: int


class AudioCursor:
    """Where each channel's last read ended, so that the next read of the same session
    (a consumer reads windows in time order) guesses its start's stream sequence
    from there: usually one read instead of a search. Only a hint: a wrong guess
    falls back to the search."""

    def __init__(self) -> None:
        self._seen: dict[str, _Seen] = {}
        self.hits = 0
        self.misses = 0

    def note(self, subject: str, read: list[tuple[int, AudioChunk]]) -> None:
        """The chunks a read went through, of one session, with their sequences."""
        if len(read) >= 2 and read[-1][1].n_samples:
            (before, _), (seq, last) = read[-2:]
            self._seen[subject] = _Seen(seq, last.origin_ns, last.start_ns,
                                        last.n_samples * 1_000_000_000 // last.sample_rate,
                                        max(1, seq - before))

    def stride(self, subject: str) -> int | None:
        """The last step seen between two of ``subject``'s chunks in the stream."""
        seen = self._seen.get(subject)
        return seen.stride if seen is not None else None

    async def seek(self, js: JetStreamContext, subject: str, start_ns: int,
                   origin_ns: int | None) -> tuple[int, AudioChunk] | None:
        """The chunk holding ``start_ns`` and its stream sequence (None: no guess)."""
        seen = self._seen.get(subject)
        if seen is None or origin_ns != seen.origin_ns or start_ns < seen.start_ns:
            return None
        guess = seen.seq + (start_ns - seen.start_ns) // seen.duration_ns * seen.stride
        for _ in range(3):
            found = await _chunk_from(js, subject, guess)
            if found is None or found[1].origin_ns != origin_ns:
                break
            seq, chunk = found
            if chunk.start_ns > start_ns:  # too far: step back (not before the known one)
                if guess <= seen.seq:
                    break
                guess = max(seen.seq, guess - seen.stride)
            elif chunk.time_of(chunk.end_sample) <= start_ns:  # not far enough
                guess = seq + max(1, (start_ns - chunk.start_ns) // seen.duration_ns) \
                    * seen.stride
            else:
                self.hits += 1
                return found
        self.misses += 1
        return None


async def _chunk_stored_at(nc: Client, subject: str, when: datetime
                           ) -> tuple[int, AudioChunk] | None:
    """The first audio chunk on ``subject`` stored at or after ``when`` (one request:
    JetStream's message get by start time, which returns the message itself)."""
    request = {"start_time": when.astimezone(UTC).isoformat().replace("+00:00", "Z"),
               "next_by_subj": subject}
    reply = await nc.request(f"$JS.API.DIRECT.GET.{AUDIO.name}",
                             json.dumps(request).encode(), timeout=5.0)
    headers = dict(reply.headers or {})
    if not reply.data and headers.get("Status"):
        if headers["Status"] == "404":
            return None
        raise BusError(f"{AUDIO.name}: {headers['Status']} {headers.get('Description', '')}")
    seq = int(headers["Nats-Sequence"])
    try:
        event = decode(headers, reply.data)
    except DecodeError:
        event = None
    if isinstance(event, AudioChunk):
        return seq, event
    return await _chunk_from(nc.jetstream(), subject, seq + 1)


async def _chunk_from(js: JetStreamContext, subject: str, seq: int
                      ) -> tuple[int, AudioChunk] | None:
    """The first audio chunk on ``subject`` at or after stream sequence ``seq``."""
    while True:
        try:
            raw = await js.get_msg(AUDIO.name, seq=max(seq, 1), subject=subject, next=True,
                                   direct=True)
        except NotFoundError:
            return None
        found = raw.seq if raw.seq is not None else seq
        try:
            event = decode(raw.headers, raw.data or b"")
        except DecodeError:
            event = None  # a dead letter's business, not ours: look further
        if isinstance(event, AudioChunk):
            return found, event
        seq = found + 1


async def _next_chunk(js: JetStreamContext, subject: str, seq: int, chunk: AudioChunk,
                      stride: int | None) -> tuple[int, AudioChunk] | None:
    """The first audio chunk on ``subject`` after stream sequence ``seq`` (which holds
    ``chunk``). With a ``stride`` (the step between this subject's chunks seen so
    far), the message ``seq + stride`` is asked for first: when it is the next chunk
    of the session, the server fetched one message instead of scanning the other
    channels' ones for the subject. Anything else falls back to the scan."""
    if stride is not None and stride > 1:
        try:
            raw = await js.get_msg(AUDIO.name, seq=seq + stride, direct=True)
        except NotFoundError:
            raw = None
        if raw is not None and raw.subject == subject:
            try:
                event = decode(raw.headers, raw.data or b"")
            except DecodeError:
                event = None
            if (isinstance(event, AudioChunk) and event.origin_ns == chunk.origin_ns
                    and event.seq == chunk.seq + 1):
                return seq + stride, event  # nothing of the subject can lie between
    return await _chunk_from(js, subject, seq + 1)


async def _last_chunk(js: JetStreamContext, subject: str) -> tuple[int, AudioChunk] | None:
    """The newest message on ``subject``, if it is an audio chunk."""
    try:
        raw = await js.get_msg(AUDIO.name, subject=subject, direct=True)
    except NotFoundError:
        return None
    try:
        event = decode(raw.headers, raw.data or b"")
    except DecodeError:
        return None
    return (raw.seq or 0, event) if isinstance(event, AudioChunk) else None


async def read_audio(nc: Client, source: str, channel: int, start_ns: int, end_ns: int,
                     stored_before: datetime, *, origin_ns: int | None = None,
                     anchor_ns: int | None = None,
                     max_lookback_s: float = AUDIO.max_age_s,
                     cursor: AudioCursor | None = None) -> AudioSpan | None:
    """The audio of ``source``/``channel`` from ``start_ns`` to ``end_ns`` (audio time),
    read back from the AUDIO stream; None when the stream no longer holds it.

    ``stored_before`` is when a consumer saw something computed from it (a
    prediction's store time): the audio was stored before. The audio comes from one
    session: ``origin_ns`` when known (``Prediction.origin_ns``), else the first
    session with a chunk holding ``anchor_ns`` (default ``start_ns``); context is cut
    where that session began or ended.

    The start is found with few reads whatever the stream's size (each read is a
    whole chunk): a look-back by store time (30 s, then 4× further) until a chunk
    starts at or before the wanted time, then a search over stream sequences for
    the last chunk starting at or before it (audio time grows with the sequence
    within a session: each step guesses by interpolation, every other one halves,
    so it is never slower than a bisection), then the chunks are read forward.
    Should the search land past the session's wanted start (two sessions of the
    source overlap in time), the session is read from the look-back's start instead.
    With a ``cursor`` (and ``origin_ns``), a read that follows an earlier one of the
    same session starts from the cursor's guess: no look-back, no search.
    """
    js = nc.jetstream()
    subject = subj.audio(source, channel)
    anchor = start_ns if anchor_ns is None else anchor_ns
    if cursor is not None:
        found = await cursor.seek(js, subject, start_ns, origin_ns)
        if found is not None:
            span, _ = await _collect(js, subject, found, start_ns, end_ns, anchor, origin_ns,
                                     cursor)
            return span
    lookback = 30.0
    earlier: int | None = None
    while True:
        first = await _chunk_stored_at(nc, subject, stored_before - timedelta(seconds=lookback))
        if first is None:
            return None
        if (first[1].start_ns <= start_ns or lookback >= max_lookback_s
                or first[0] == earlier):  # no further back: the subject's oldest chunk
            break
        earlier = first[0]
        lookback = min(lookback * 4, max_lookback_s)
    lo_seq, lo_t, lo_chunk = first[0], first[1].start_ns, first[1]
    after = await _chunk_stored_at(nc, subject, stored_before)  # not ours: stored later
    last = await _last_chunk(js, subject) if after is None else None
    hi_seq, hi_t = ((after[0] - 1, after[1].start_ns) if after else
                    (last[0], last[1].start_ns) if last else (first[0], None))
    step = 0
    while lo_t <= start_ns and lo_seq < hi_seq:  # invariant: the chunk at lo starts ≤ start
        step += 1
        if hi_t is not None and hi_t > lo_t and step % 2:
            guess = lo_seq + int((start_ns - lo_t) / (hi_t - lo_t) * (hi_seq - lo_seq))
            guess = min(max(guess, lo_seq + 1), hi_seq)
        else:
            guess = (lo_seq + hi_seq + 1) // 2
        found = await _chunk_from(js, subject, guess)
        if found is None or found[0] > hi_seq or found[1].start_ns > start_ns:
            hi_seq = guess - 1  # ours in [guess, hi] all start after start_ns
            if found is not None:
                hi_t = found[1].start_ns  # about the time at hi: enough to interpolate
        else:
            lo_seq, lo_t, lo_chunk = found[0], found[1].start_ns, found[1]
    span, head = await _collect(js, subject, (lo_seq, lo_chunk), start_ns, end_ns, anchor,
                                origin_ns, cursor)
    if (span is not None and head is not None and lo_seq != first[0]
            and head.start_ns > start_ns and head.first_sample > 0):
        span, _ = await _collect(js, subject, first, start_ns, end_ns, anchor, origin_ns,
                                 cursor)
    return span


async def _collect(js: JetStreamContext, subject: str, start: tuple[int, AudioChunk],
                   start_ns: int, end_ns: int, anchor_ns: int, origin_ns: int | None,
                   cursor: AudioCursor | None = None
                   ) -> tuple[AudioSpan | None, AudioChunk | None]:
    """Read forward from ``start`` (a chunk already read, with its sequence): the chunks
    of one session (``origin_ns``, or the first holding ``anchor_ns``) overlapping
    [start_ns, end_ns); and the first chunk of that session read (to tell whether its
    wanted start was passed). The last chunks read are noted in ``cursor``."""
    chunks: list[AudioChunk] = []
    read: list[tuple[int, AudioChunk]] = []
    session = origin_ns
    head: AudioChunk | None = None
    complete = False
    stride = cursor.stride(subject) if cursor is not None else None
    found: tuple[int, AudioChunk] | None = start
    while True:
        if found is None:
            (seq, chunk), before = read[-1], (read[-2][0] if len(read) > 1 else None)
            found = await _next_chunk(js, subject, seq, chunk,
                                      seq - before if before is not None else stride)
            if found is None:
                break
        chunk = found[1]
        read.append(found)
        found = None
        if session is None and chunk.start_ns <= anchor_ns < chunk.time_of(chunk.end_sample):
            session = chunk.origin_ns
            chunks = [c for c in chunks if c.origin_ns == session]
            head = chunks[0] if chunks else chunk
        if session is None:
            if chunk.time_of(chunk.end_sample) > start_ns and chunk.n_samples:
                chunks.append(chunk)
            continue
        if chunk.origin_ns != session:
            if head is not None:
                complete = True  # another session follows ours: ours ended
                break
            continue
        head = head or chunk
        if chunk.start_ns >= end_ns:
            complete = True
            break
        if chunk.time_of(chunk.end_sample) > start_ns and chunk.n_samples:
            chunks.append(chunk)
        if chunk.final or chunk.time_of(chunk.end_sample) >= end_ns:
            complete = True  # the session ended, or the span is covered: no read more
            break
    chunks = [c for c in chunks if session is not None and c.origin_ns == session]
    if cursor is not None:
        cursor.note(subject, [(n, c) for n, c in read if c.origin_ns == session])
    if not chunks:
        return None, head
    rate = chunks[0].sample_rate
    audio = np.concatenate([np.asarray(c.pcm_samples(), dtype=np.int16) for c in chunks])
    first = chunks[0]
    lo = max(0, (start_ns - first.start_ns) * rate // 1_000_000_000)
    hi = min(len(audio), -(-(end_ns - first.start_ns) * rate // 1_000_000_000))
    last = chunks[-1]
    complete = complete or last.time_of(last.end_sample) >= end_ns
    return AudioSpan(first.source, first.channel, first.time_of(first.first_sample + lo), rate,
                     audio[lo:hi], complete), head


async def recent_audio(nc: Client, source: str, channel: int, seconds: float
                       ) -> AudioSpan | None:
    """The last ``seconds`` of a channel's newest session that the AUDIO stream holds
    (the dashboard's spectrogram and listening); None when it holds none."""
    last = await _last_chunk(nc.jetstream(), subj.audio(source, channel))
    if last is None:
        return None
    chunk = last[1]
    end_ns = chunk.time_of(chunk.end_sample)
    return await read_audio(nc, source, channel, end_ns - int(seconds * 1e9), end_ns,
                            datetime.now(UTC) + timedelta(seconds=1),
                            origin_ns=chunk.origin_ns)
