"""Sessions as lanes: the chunks of one session a classifier knows, and which of
its own are ready to score. Pure: no NATS, no model.

A *lane* is one session of one channel (source, channel, origin): its chunks by
``seq``, each with its samples, its stream sequence and the time the stream
stored it. Some are *owned* (delivered to this instance, to be scored and acked
by it), the others *borrowed* (read from the stream to complete a window or a
context; another instance, or an earlier run, owns them).

Which windows a chunk owns (grid ``s = i * hop``, window ``W``):

- a window belongs to the chunk it starts in, unless it crosses a *broken
  boundary*: then it belongs to the chunk right after the last broken boundary
  it crosses;
- the boundary before chunk ``k`` is broken when the stream stored ``k`` at
  least ``stall_ns`` after chunk ``k - 1``. It is a fact of the stream, the same
  for every instance and every redelivery: the owner of ``k - 1`` never gives its
  crossing windows away and the owner of ``k`` never takes them twice.

A chunk is scored once the audio its windows (and, with audio experts, their
contexts) need after it is known, or the lane says no more will come before
that point: the session's final chunk, a broken boundary, or a break declared
by the classifier (``declare_break``: the stream's clock passed the newest
chunk's time by ``stall_ns`` and the stream holds no successor; one that is
stored later is then necessarily ``stall_ns`` late, so its boundary is broken
and the windows this chunk leaves are produced by it when its audio arrives).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import numpy.typing as npt

from bus.runner import Delivery
from bus_schemas import AudioChunk, pcm
from bus_schemas.pcm import Samples
from inference.contexts import Span, audio_needed_after, audio_needed_before
from inference.windows import owned_starts, samples_needed_after

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
SessionKey = tuple[str, int, int]  # source, channel, origin_ns


def session_key(chunk: AudioChunk) -> SessionKey:
    return chunk.source, chunk.channel, chunk.origin_ns


@dataclass
class Piece:
    """One chunk of a lane: its ``samples`` (n,) mono at the chunk's rate, as they
    travel (``AudioChunk.pcm_samples``: int16 or float32)."""

    chunk: AudioChunk
    samples: Samples
    stored_ns: int  # when the stream stored it (its clock, not ours)
    stream_seq: int  # in AUDIO
    delivery: Delivery | None = None  # owned: ours to score and ack
    scored: bool = False
    scoring: bool = False  # its windows are being scored and published right now
    # the chunk's seq and samples [first, end) on the session's grid, read once
    seq: int = field(init=False, default=0)
    first: int = field(init=False, default=0)
    end: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.seq = self.chunk.seq
        self.first = self.chunk.first_sample
        self.end = self.chunk.end_sample

    @property
    def owned(self) -> bool:
        return self.delivery is not None


@dataclass(frozen=True)
class Ready:
    """An owned chunk whose windows can be scored now: the grid ``starts`` (N,) of
    the windows it owns, every one complete inside ``span`` (the lane's
    contiguous audio around it)."""

    piece: Piece
    starts: I64
    span: Span
    dropped: int  # its windows no audio can complete (a session's or a break's end)


@dataclass(frozen=True)
class Geometry:
    """The window grid the classifier runs: window and hop in samples, and the
    raw audio around each window its audio experts hear (0: none)."""

    window: int
    hop: int
    context: int = 0

    def need_after(self, piece: Piece) -> int:
        """Samples after ``piece`` its windows (and their contexts) need."""
        return self._after(piece.first, piece.end - piece.first)

    def head_end(self, piece: Piece) -> int:
        """Where the audio ends that the windows crossing into ``piece`` from before
        need (``piece``'s own when the boundary before it is broken): a window longer
        than a chunk reaches past ``piece`` too."""
        lo = max(0, piece.first - self.window + 1)
        return piece.first + self._after(lo, piece.first - lo)

    def _after(self, first: int, n: int) -> int:
        if self.context:
            return audio_needed_after(first, n, self.hop, self.window, self.context)
        return samples_needed_after(first, n, self.hop, self.window)

    def keep_before(self) -> int:
        """Samples a lane keeps before its oldest unscored chunk: the head of a
        window crossing a broken boundary, and a whole context (at a session's end
        a context shifts back by up to its length)."""
        return self.window + self.context


@dataclass
class Lane:
    """The chunks of one session this instance knows (module docstring)."""

    key: SessionKey
    geometry: Geometry
    stall_ns: int
    pieces: dict[int, Piece] = field(default_factory=dict)
    break_after: int | None = None  # seq after which a break was declared
    acked: deque[int] = field(default_factory=lambda: deque(maxlen=256))
    unavailable: set[int] = field(default_factory=set)  # seqs the stream does not hold
    scan_cursor: int = 0  # AUDIO sequence the next forward scan starts after
    scan_for: int = -1  # the seq that scan looks for
    scan_next_at: float = 0.0  # event loop time before which no hole triggers a scan
    scan_wait_s: float = 0.05  # the next empty scan's back-off
    scan_done_at: int = 0  # highest AUDIO sequence known when a scan last reached the end
    finished_at: float | None = None  # event loop time the ended session was all scored
    # what decides readiness changed since ``ready`` was last asked: a chunk came, a
    # break, a chunk the stream no longer holds, another geometry, a failed publish
    changed: bool = True
    # bumped by every change of the lane: ``pending`` and ``waiting_after``, asked
    # at every tick for every lane, are kept until the next change
    version: int = 0
    _pending: tuple[int, list[Piece]] = field(default_factory=lambda: (-1, []))
    _waiting: tuple[int, Piece | None] = (-1, None)

    # ------------------------------------------------------------------ state

    @property
    def newest(self) -> Piece | None:
        return self.pieces[max(self.pieces)] if self.pieces else None

    def contiguous_newest(self) -> Piece | None:
        """The newest chunk reachable from the oldest unscored owned one without a
        missing seq (what a successor must follow)."""
        pending = self.pending()
        if not pending:
            return self.newest
        piece = pending[0]
        while piece.seq + 1 in self.pieces:
            piece = self.pieces[piece.seq + 1]
        return piece

    def stream_gap(self) -> int:
        """Stream sequences from one chunk of the session to the next, as the two
        newest known chunks show (the other subjects' messages between them; 1 when
        unknown): where a look-up starts reading back."""
        seqs = sorted(self.pieces)[-2:]
        if len(seqs) < 2:
            return 1
        a, b = self.pieces[seqs[0]], self.pieces[seqs[1]]
        return max(1, (b.stream_seq - a.stream_seq) // (b.seq - a.seq))

    def pending(self) -> list[Piece]:
        """Owned chunks not yet scored nor being scored, oldest first."""
        version, pending = self._pending
        if version != self.version:
            pending = sorted((p for p in self.pieces.values()
                              if p.owned and not p.scored and not p.scoring),
                             key=lambda p: p.seq)
            self._pending = (self.version, pending)
        return list(pending)

    def _changed(self, readiness: bool = True) -> None:
        self.version += 1
        self.changed = self.changed or readiness

    def add(self, piece: Piece) -> str | None:
        """Put a chunk in the lane. Returns why it cannot be this session's (its
        samples do not continue their neighbours'), else None. A chunk already
        known is merged: a new delivery of it makes it owned again."""
        known = self.pieces.get(piece.seq)
        if known is not None:
            if (known.first, known.end) != (piece.first, piece.end):
                return (f"seq {piece.seq} covers samples {piece.first}..{piece.end}, but "
                        f"the session's seq {piece.seq} covers {known.first}..{known.end}")
            if piece.delivery is not None:
                known.delivery = piece.delivery
                known.stored_ns = piece.stored_ns
                self._changed()
            return None
        before, after = self.pieces.get(piece.seq - 1), self.pieces.get(piece.seq + 1)
        if before is not None and before.end != piece.first:
            return (f"seq {piece.seq} starts at sample {piece.first}, but seq "
                    f"{before.seq} ends at {before.end}")
        if after is not None and piece.end != after.first:
            return (f"seq {piece.seq} ends at sample {piece.end}, but seq {after.seq} "
                    f"starts at {after.first}")
        self.pieces[piece.seq] = piece
        self._changed()
        if self.break_after is not None and piece.seq > self.break_after:
            self.break_after = None  # the successor came: its boundary says the rest
        return None

    def broken_before(self, piece: Piece) -> bool | None:
        """Whether the boundary before ``piece`` is broken (None: not known here).

        Without its predecessor, any earlier chunk of the session stored less than
        the stall before ``piece`` proves it is not: a session's chunks are stored
        in order (the producer publishes a chunk only once the one before is
        stored), so the predecessor was stored between the two."""
        if piece.seq == 0:
            return False
        before = self.pieces.get(piece.seq - 1)
        if before is not None:
            return piece.stored_ns - before.stored_ns >= self.stall_ns
        earlier = [p for s, p in self.pieces.items() if s < piece.seq]
        if earlier and piece.stored_ns - max(p.stored_ns for p in earlier) < self.stall_ns:
            return False
        return None

    def missing_before(self, piece: Piece) -> int | None:
        """The seq to fetch before ``piece`` so it can be scored (None: nothing
        missing): its predecessor when nothing here says whether their boundary is
        broken, and with audio experts or a broken boundary the chunks back to what
        its windows hear."""
        if piece.seq == 0:
            return None
        broken = self.broken_before(piece)
        if broken is None:
            return piece.seq - 1
        reach = piece.first - self._before_need(piece, piece.end)
        cursor = piece
        while cursor.first > reach and cursor.seq > 0:
            prev = self.pieces.get(cursor.seq - 1)
            if prev is None:
                return cursor.seq - 1
            cursor = prev
        return None

    def declare_break(self, after_seq: int) -> None:
        """No successor of ``after_seq`` is in the stream and the stream's clock has
        passed its time by the stall: the chunks before it are scored with the
        audio there is."""
        if after_seq + 1 not in self.pieces:
            self.break_after = after_seq
            self._changed()

    def mark_unavailable(self, seq: int) -> None:
        """The stream no longer holds chunk ``seq``: nothing waits for it."""
        self.unavailable.add(seq)
        self._changed()

    def regrid(self, geometry: Geometry) -> None:
        """Another window geometry (a swap): what is awaited changes."""
        self.geometry = geometry
        self._changed()

    # ---------------------------------------------------------------- scoring

    def ready(self) -> list[Ready]:
        """Owned chunks that can be scored now, with their windows."""
        self.changed = False
        out = []
        for piece in self.pending():
            if self._waits_before(piece):
                continue
            end = self._available_end(piece)
            if end is not None:
                out.append(self._ready(piece, end))
        return out

    def waiting_after(self) -> Piece | None:
        """The newest contiguous chunk, when an unscored chunk waits for audio after
        it (what a forward scan looks for), else None."""
        version, last = self._waiting
        if version != self.version:
            last = None
            if any(not self._waits_before(p) and self._available_end(p) is None
                   for p in self.pending()):
                last = self.contiguous_newest()
                if last is not None and (last.chunk.final or self.break_after == last.seq):
                    last = None
            self._waiting = (self.version, last)
        return last

    def _waits_before(self, piece: Piece) -> bool:
        missing = self.missing_before(piece)
        return missing is not None and missing not in self.unavailable

    def _available_end(self, piece: Piece) -> int | None:
        """Where the audio usable by ``piece``'s windows ends (None: wait)."""
        need_end = piece.end + self.geometry.need_after(piece)
        if self.broken_before(piece):  # its head windows may reach past it
            need_end = max(need_end, self.geometry.head_end(piece))
        prev, cursor = piece, piece.end
        while cursor < need_end:
            if prev.chunk.final or self.break_after == prev.seq:
                return cursor
            nxt = self.pieces.get(prev.seq + 1)
            if nxt is None:
                return None
            if nxt.stored_ns - prev.stored_ns >= self.stall_ns:
                return cursor  # a broken boundary: the windows across it are nxt's
            prev, cursor = nxt, nxt.end
        return min(cursor, need_end)

    def _before_need(self, piece: Piece, span_end: int) -> int:
        """Samples before ``piece`` its windows need, the session's audio reaching
        ``span_end`` (a context at the end of the audio shifts back)."""
        g = self.geometry
        need = g.window - 1 if self.broken_before(piece) else 0
        if g.context:
            need = max(need, audio_needed_before(piece.first, piece.end - piece.first, g.hop,
                                                 g.window, g.context, span_end))
        return need

    def _span(self, piece: Piece, end: int) -> Span:
        """The contiguous audio from what ``piece``'s windows need before it to
        ``end``."""
        reach = piece.first - self._before_need(piece, end)
        parts = [piece.samples]
        first = piece.first
        cursor = self.pieces.get(piece.seq - 1)
        while cursor is not None and first > reach and cursor.end == first:
            parts.insert(0, cursor.samples)
            first = cursor.first
            cursor = self.pieces.get(cursor.seq - 1)
        nxt = self.pieces.get(piece.seq + 1)
        last = piece.end
        while nxt is not None and last < end and nxt.first == last:
            parts.append(nxt.samples[:end - last])  # only what the windows reach
            last = min(nxt.end, end)
            nxt = self.pieces.get(nxt.seq + 1)
        if len({p.dtype for p in parts}) > 1:  # a session that changed encoding
            parts = [pcm.as_float32(p) for p in parts]
        audio = parts[0] if len(parts) == 1 else cast(Samples, np.concatenate(parts))
        start = max(0, reach - first)
        stop = min(audio.shape[0], end - first)
        return Span(audio[start:stop], first + start)

    def _ready(self, piece: Piece, end: int) -> Ready:
        g = self.geometry
        starts = owned_starts(piece.first, piece.end - piece.first, g.hop)
        if self.broken_before(piece):  # the windows crossing into it are its own
            head = owned_starts(piece.first - g.window + 1, g.window - 1, g.hop)
            starts = np.concatenate([head[head >= 0], starts])
        span = self._span(piece, end)
        complete = (starts >= span.first_sample) & (starts + g.window <= span.end_sample)
        return Ready(piece, starts[complete], span, int((~complete).sum()))

    # ------------------------------------------------------------ bookkeeping

    def done(self, piece: Piece) -> None:
        """``piece`` was scored, published and acked."""
        piece.scored = True
        piece.delivery = None
        self._changed(readiness=False)
        self.acked.append(piece.seq)

    def disown(self, piece: Piece) -> None:
        """Its delivery went back to the server (nak): it is borrowed now."""
        piece.delivery = None
        self._changed(readiness=False)

    def set_scoring(self, piece: Piece, scoring: bool) -> None:
        """``piece``'s windows are being scored and published (True), or no more."""
        piece.scoring = scoring  # a failed publish marks the lane changed itself
        self._changed(readiness=False)

    def prune(self) -> None:
        """Forget the audio no unscored chunk can need; keep the newest chunk (its
        stored time decides the next boundary)."""
        if not self.pieces:
            return
        pending = self.pending()
        newest = max(self.pieces)
        anchor = pending[0] if pending else self.pieces[newest]
        keep_from = anchor.first - self.geometry.keep_before()
        for seq in [s for s, p in self.pieces.items()
                    if s != newest and p.end <= keep_from and not (p.owned and not p.scored)]:
            del self.pieces[seq]
            # a chunk gone may have been what proved a later boundary unbroken: the
            # chunk after it may now need its predecessor looked up
            self._changed()

    def finished(self) -> bool:
        """The session ended (its final chunk is known) and nothing of it is ours to
        score or ack any more: the lane can go (a late redelivery makes a new one,
        which looks up what it needs)."""
        newest = self.newest
        return (newest is not None and newest.chunk.final
                and not any(p.owned or p.scoring for p in self.pieces.values()))

    def note_finished(self, now: float) -> None:
        """After a scoring: the time the session was found over (``forget_lanes``)."""
        if self.finished_at is None and self.finished():
            self.finished_at = now

    def held(self) -> list[Delivery]:
        return [p.delivery for p in self.pieces.values() if p.delivery is not None]


MAX_LANES = 1024  # sessions remembered with nothing held (a few chunks each: ~300 MB)
# an ended session's lane is kept this long after its last chunk was scored: a chunk of
# it held by an instance that died comes back ack_wait later, and finds here the audio
# around it (a lane made anew would not know that its successors are stored)
FINISHED_KEEP_S = 300.0


def forget_lanes(lanes: OrderedDict[SessionKey, Lane], now: float,
                 keep_s: float = FINISHED_KEEP_S, most: int = MAX_LANES) -> None:
    """Drop the lanes of sessions that ended ``keep_s`` ago (memory does not grow with
    the sessions a site has seen), then the least recently used idle ones past
    ``most``."""
    for key, lane in list(lanes.items()):
        if lane.finished_at is None:
            continue
        if not lane.finished():
            lane.finished_at = None  # a chunk came back: it is not over
        elif now - lane.finished_at >= keep_s:
            del lanes[key]
    while len(lanes) > most:
        idle = next((k for k, v in lanes.items() if not v.pending()), None)
        if idle is None:
            break
        del lanes[idle]
