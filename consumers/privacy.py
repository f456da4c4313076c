"""Privacy: speech is never extracted, and, when the site asks, never heard or kept.

One rule decides what is private (``is_private``): a window the classifier decided as
speech, or whose speech class scores at least ``TIDZAM_PRIVACY_SPEECH_SCORE`` (0.5).
The extractor never saves such a window, whatever the setting. With
``TIDZAM_PRIVACY=mask`` (off by default) the outputs also silence it:

- the Icecast relay and the JACK output hold each channel's audio until the
  predictions covering it have arrived (a delay of about the classifier's lag), then
  hand it out with the speech windows replaced by silence;
- the archiver keeps, for those windows, the raw audio (``TIDZAM_PRIVACY_ARCHIVE=raw``),
  silence (``masked``, the default when privacy is on) or nothing (``none``: the file
  stops before the set and a new one starts after it, named by its first sample);
- the gain controller publishes a ``SpeechMasked`` event per private window, which
  ``tidzam_ctl mixer ls`` counts per channel.

Audio no prediction covers within ``TIDZAM_PRIVACY_WAIT_S`` (the classifier is down
or far behind; the end of a stream shorter than a window) is silenced entirely: with
privacy on, undecided audio is private. The archiver waits ten times as long.

``PrivacyGate`` is the one implementation of the holding and masking, pure and
tested without a bus; ``follow_predictions`` feeds it from the EVENTS stream.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import numpy as np
from nats.aio.client import Client
from pydantic import Field

from bus.runner import Ack, ConsumerRunner, Delivery, Outcome
from bus.settings import TidzamSettings
from bus_schemas import AudioChunk, Prediction, pcm
from bus_schemas.streams import EVENTS, privacy_predictions

log = logging.getLogger(__name__)

SEC = 1_000_000_000
Key = tuple[str, int]  # (source, channel)


def is_private(prediction: Prediction, speech_score: float) -> bool:
    """Decided as speech, or a speech class scoring at least ``speech_score``."""
    if any(label.startswith("speech") for label in prediction.result):
        return True
    return any(label.startswith("speech") and score >= speech_score
               for label, score in zip(prediction.labels, prediction.scores, strict=True))


class PrivacySettings(TidzamSettings):
    """The site's privacy choices (``TIDZAM_PRIVACY*``), read alike by every process."""

    privacy: Literal["off", "mask"] = "off"
    privacy_speech_score: float = Field(0.5, ge=0.0, le=1.0)
    privacy_archive: Literal["raw", "masked", "none"] = "masked"
    privacy_wait_s: float = Field(30.0, gt=0.0, le=3_600.0)

    @property
    def masking(self) -> bool:
        return self.privacy == "mask"


PRIVACY_FIELDS = tuple(PrivacySettings.model_fields)  # what `tidzam_ctl up` hands down


@dataclass
class _Grid:
    """One session's window grid as far as it is known without a gap: ``frontier`` is
    the start of the latest window whose predecessors all arrived (predictions may
    come out of order: several classifier processes), ``later`` the windows seen
    beyond a gap (start -> end, private)."""

    grid_start: int
    frontier: int
    frontier_end: int
    frontier_private: bool
    later: dict[int, tuple[int, bool]] = field(default_factory=dict)
    hop_ns: int = 0  # the smallest step between two window starts seen

    def add(self, start: int, end: int, private: bool) -> None:
        if start < self.grid_start:  # an earlier window, late: the run grows backwards
            step = self.grid_start - start
            self.hop_ns = step if self.hop_ns == 0 else min(self.hop_ns, step)
            if 2 * step <= 3 * self.hop_ns:
                self.grid_start = start
            return
        if start <= self.frontier:
            if start == self.frontier:  # another model on the same window
                self.frontier_private |= private
            return
        step = start - self.frontier
        self.hop_ns = step if self.hop_ns == 0 else min(self.hop_ns, step)
        seen = self.later.get(start)
        self.later[start] = (end, private or (seen is not None and seen[1]))
        self._advance()

    def _advance(self) -> None:
        while self.later:  # move on while the next window follows within 1.5 hops
            nxt = min(self.later)
            if 2 * (nxt - self.frontier) > 3 * self.hop_ns:
                break
            self.frontier_end, self.frontier_private = self.later.pop(nxt)
            self.frontier = nxt

    def skip_gap(self) -> None:
        """Windows that never came (their audio dead-lettered, say): go on after them."""
        if self.later:
            self.frontier = min(self.later)
            self.frontier_end, self.frontier_private = self.later.pop(self.frontier)
            self._advance()


@dataclass
class _Channel:
    spans: list[tuple[int, int]] = field(default_factory=list)  # private windows, by start
    grids: dict[int | None, _Grid] = field(default_factory=dict)  # by session (origin_ns)
    held: deque[tuple[float, AudioChunk]] = field(default_factory=deque)


@dataclass(frozen=True)
class Released:
    """A chunk handed out: its audio as heard (gain, mute) with private spans silenced,
    and how many of its samples were silenced."""

    chunk: AudioChunk
    samples: pcm.Samples
    masked: int


class PrivacyGate:
    """Each channel's private windows, from the predictions, and the audio held until
    they are known (in arrival order per channel; ``wait_s``: then silenced)."""

    def __init__(self, speech_score: float = 0.5, wait_s: float = 30.0) -> None:
        self.speech_score = speech_score
        self.wait_s = wait_s
        self.channels: dict[Key, _Channel] = {}
        self.masked_samples = 0
        self.expired_chunks = 0
        self._lock = threading.Lock()  # the archiver masks in a worker thread

    def _channel(self, source: str, channel: int) -> _Channel:
        return self.channels.setdefault((source, channel), _Channel())

    def prediction(self, p: Prediction) -> None:
        private = is_private(p, self.speech_score)
        with self._lock:
            ch = self._channel(p.source, p.channel)
            grid = ch.grids.get(p.origin_ns)
            if grid is None:  # the first window seen of a session starts its grid
                if len(ch.grids) >= 8:  # sessions long gone
                    del ch.grids[next(iter(ch.grids))]
                ch.grids[p.origin_ns] = _Grid(p.window_start_ns, p.window_start_ns,
                                              p.window_end_ns, private)
            else:
                grid.add(p.window_start_ns, p.window_end_ns, private)
            if private:
                bisect.insort(ch.spans, (p.window_start_ns, p.window_end_ns))

    def _grid(self, chunk: AudioChunk) -> _Grid | None:
        ch = self.channels.get((chunk.source, chunk.channel))
        if ch is None:
            return None
        # predictions without a session (v1 events) share one grid
        return ch.grids.get(chunk.origin_ns) or ch.grids.get(None)

    def decided(self, chunk: AudioChunk) -> bool:
        """Every window that overlaps the chunk is known: the next window of the grid
        starts at or after its end, or, for the last chunk of a session, no other
        window fits before its end (its tail, shorter than a hop, is in no window: it
        takes the last window's verdict)."""
        grid = self._grid(chunk)
        if grid is None or grid.hop_ns == 0 or grid.grid_start > chunk.start_ns:
            return False  # the grid is not known yet, or not from the chunk's start
        end = chunk.time_of(chunk.end_sample)
        following = grid.frontier + grid.hop_ns  # where the next window starts
        length = grid.frontier_end - grid.frontier
        return following >= end or (chunk.final and following + length > end)

    def mask(self, chunk: AudioChunk, samples: pcm.Samples, expired: bool = False
             ) -> tuple[pcm.Samples, int]:
        """``samples`` (the chunk's, raw or heard) with the private spans silenced, and
        the number of samples silenced; prunes the spans that end before the chunk.
        ``expired`` (the chunk waited too long for its windows): all of it silenced, and
        its session's grid goes on after the windows that never came."""
        n = len(samples)
        if expired:
            self.expired_chunks += 1
            self.masked_samples += n
            with self._lock:
                grid = self._grid(chunk)
                if grid is not None:
                    grid.skip_gap()
            return np.zeros_like(samples), n
        start, end = chunk.start_ns, chunk.start_ns + n * SEC // chunk.sample_rate
        with self._lock:
            ch = self.channels.get((chunk.source, chunk.channel))
            if ch is None:
                return samples, 0
            keep = bisect.bisect_left(ch.spans, (start - 60 * SEC, 0))
            del ch.spans[:keep]  # windows are never a minute long: these are behind us
            spans = list(ch.spans)
            grid = self._grid(chunk)
            if chunk.final and grid is not None and grid.frontier_private \
                    and grid.frontier_end < end:
                spans.append((grid.frontier_end, end))  # the tail after the last window
        silent = np.zeros(n, dtype=bool)
        for a, b in spans:
            if a >= end:
                break
            if b <= start:
                continue
            i0 = max(0, -(-(a - start) * chunk.sample_rate // SEC))
            i1 = min(n, -(-(b - start) * chunk.sample_rate // SEC))
            silent[i0:i1] = True
        count = int(silent.sum())
        if count == 0:
            return samples, 0
        self.masked_samples += count
        out = samples.copy()
        out[silent] = 0
        return out, count

    # -- holding, for the live outputs

    def hold(self, chunk: AudioChunk, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._channel(chunk.source, chunk.channel).held.append((now, chunk))

    def release(self, now: float | None = None) -> list[Released]:
        """The held chunks whose windows are known or whose wait ran out, in order per
        channel, as heard and masked."""
        now = time.monotonic() if now is None else now
        out: list[Released] = []
        for ch in self.channels.values():
            while ch.held:
                since, chunk = ch.held[0]
                expired = now - since >= self.wait_s
                if not (expired or self.decided(chunk)):
                    break
                ch.held.popleft()
                undecided = not self.decided(chunk)
                if undecided:
                    log.warning("%s.%d: no prediction for %.0f s: silenced", chunk.source,
                                chunk.channel, self.wait_s)
                samples, n = self.mask(chunk, chunk.heard_samples(), undecided)
                out.append(Released(chunk, samples, n))
        return out

    def held(self) -> int:
        return sum(len(ch.held) for ch in self.channels.values())


async def events_edge(nc: Client) -> int:
    """The EVENTS stream's last sequence. A live output reads it before the AUDIO
    stream's live edge: the predictions of every chunk after that edge come after it."""
    return int((await nc.jetstream().stream_info(EVENTS.name)).state.last_seq)


async def follow_predictions(nc: Client, gate: PrivacyGate, of: str, stop: asyncio.Event,
                             since: datetime | None = None, after: int | None = None) -> None:
    """Feed ``gate`` every prediction stored from ``since``, or after EVENTS sequence
    ``after`` (neither: from now on), until ``stop``; ``of`` names the consumer (its
    durable is ``<of>-privacy``)."""

    async def handle(deliveries: Sequence[Delivery]) -> list[Outcome]:
        for d in deliveries:
            if isinstance(d.event, Prediction):
                gate.prediction(d.event)
        return [Ack()] * len(deliveries)

    spec = privacy_predictions(of)
    if since is not None:
        runner = ConsumerRunner(nc, spec, handle, start_time=since)
    else:
        if after is None:
            after = await events_edge(nc)
        runner = ConsumerRunner(nc, spec, handle, start_after=after)
    await runner.run(stop)
