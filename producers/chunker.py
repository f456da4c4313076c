"""Cut decoded blocks into gapless, fixed-length ``AudioChunk`` events per channel,
each with its ``ChannelHealth``: health is measured here, once, where audio enters."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt

from audio.health import block_health
from bus_schemas import AudioChunk, ChannelHealth, Event, MixerApplied, pcm
from bus_schemas.mixer import DEFAULT, ChannelState

F32 = npt.NDArray[np.float32]
I16 = npt.NDArray[np.int16]
Block = F32 | I16  # (channels, n): float in [-1, 1], or int16 PCM as it will travel


Mixer = Callable[[str, int, int], ChannelState]  # (source, channel, chunk start) → state


@dataclass(frozen=True)
class ChunkSet:
    """One chunk per channel, same samples and times, each stamped with its channel's
    mixer state; each channel's health over them (raw, before the mixer; none for an
    empty closing chunk); the mixer states that changed with these chunks."""

    chunks: list[AudioChunk]
    health: list[ChannelHealth]
    applied: list[MixerApplied]

    @property
    def events(self) -> list[Event]:
        """What to publish: the audio, then its health and mixer changes."""
        return [*self.chunks, *self.health, *self.applied]


@dataclass
class ChannelCursor:
    seq: int = 0
    first_sample: int = 0


class Chunker:
    """Accumulate (channels, n) blocks; emit chunks of ``chunk_samples``.

    Blocks are float32 in [-1, 1] (converted by ``pcm.to_int16``) or int16 PCM
    (``AudioStream.pcm16_blocks``, published as they are); one kind per chunker.

    Each chunk's ``start_ns`` is ``origin_ns`` plus its sample offset, so times
    come from the recording, and ``seq``/``first_sample`` are gapless. The last
    chunk (``finish``) may be shorter and carries ``final=True``.
    """

    def __init__(self, source: str, channels: Iterable[int], sample_rate: int,
                 origin_ns: int, chunk_samples: int, mixer: Mixer | None = None,
                 stage: str = "producer") -> None:
        self.source = source
        self.channels = tuple(channels)
        self.sample_rate = sample_rate
        self.chunk_samples = chunk_samples
        self._origin_ns = origin_ns
        self._buf: deque[Block] = deque()  # blocks (channels, n), oldest first
        self._buffered = 0
        self._emitted_samples = 0
        self._seq = 0
        self._mixer = mixer
        self._stage = stage
        self._stamped: dict[int, ChannelState] = {}  # the state each channel was given

    def _time_offset_ns(self, samples: int) -> int:
        return samples * 1_000_000_000 // self.sample_rate

    def push(self, block: Block) -> Iterator[ChunkSet]:
        """Add a (channels, n) block; yield every complete set of chunks (one per channel)."""
        self._buf.append(block)
        self._buffered += block.shape[1]
        while self._buffered >= self.chunk_samples * 2:
            yield self._emit(self.chunk_samples, final=False)

    def finish(self) -> list[ChunkSet]:
        """Flush the rest: one or two chunk sets, the last one marked final."""
        out: list[ChunkSet] = []
        if self._buffered > self.chunk_samples:
            out.append(self._emit(self.chunk_samples, final=False))
        out.append(self._emit(self._buffered, final=True))
        return out

    def _take(self, n: int) -> Block:
        """The first ``n`` buffered samples (channels, n), out of the buffer; the
        rest stays as it is (no copy of what is not emitted)."""
        parts: list[Block] = []
        need = n
        while need > 0:
            block = self._buf[0]
            if block.shape[1] <= need:
                parts.append(self._buf.popleft())
                need -= block.shape[1]
            else:
                parts.append(block[:, :need])
                self._buf[0] = block[:, need:]
                need = 0
        self._buffered -= n
        if not parts:
            return np.zeros((len(self.channels), 0), dtype=np.float32)
        if len(parts) == 1:
            return parts[0]
        return cast(Block, np.concatenate(parts, axis=1))

    def _emit(self, n: int, *, final: bool) -> ChunkSet:
        head = self._take(n)
        start_ns = self._origin_ns + self._time_offset_ns(self._emitted_samples)
        pcm16 = cast(I16, head) if head.dtype == np.int16 else pcm.to_int16(head)
        samples = pcm16.astype("<i2", copy=False)
        states = [self._mixer(self.source, ch, start_ns) if self._mixer else DEFAULT
                  for ch in self.channels]
        chunks = [
            AudioChunk(source=self.source, channel=ch, seq=self._seq,
                       first_sample=self._emitted_samples, start_ns=start_ns,
                       sample_rate=self.sample_rate, samples=samples[i].tobytes(), final=final,
                       gain_db=state.gain_db, muted=state.muted)
            for i, (ch, state) in enumerate(zip(self.channels, states, strict=True))
        ]
        self._seq += 1
        self._emitted_samples += n
        return ChunkSet(chunks, self._health(samples, start_ns) if n else [],
                        self._changes(states, start_ns))

    def _changes(self, states: list[ChannelState], start_ns: int) -> list[MixerApplied]:
        """A ``MixerApplied`` for each channel whose state differs from its last chunk's
        (from the session's start: from 0 dB, not muted)."""
        out = []
        for ch, state in zip(self.channels, states, strict=True):
            if not state.same_sound(self._stamped.get(ch, DEFAULT)):
                out.append(MixerApplied(
                    command_id=state.command_id, source=self.source, channel=ch,
                    muted=state.muted, gain_db=state.gain_db, origin=state.origin,
                    reason=state.reason, by=state.by, stage=self._stage, from_ns=start_ns,
                    at_ns=time.time_ns()))
            self._stamped[ch] = state
        return out

    def _health(self, samples: I16, start_ns: int) -> list[ChannelHealth]:
        end_ns = start_ns + max(1, self._time_offset_ns(samples.shape[1]))
        return [ChannelHealth(source=self.source, channel=ch, start_ns=start_ns, end_ns=end_ns,
                              rms_dbfs=h.rms_dbfs, peak_dbfs=h.peak_dbfs,
                              clip_ratio=h.clip_ratio, noise_floor_dbfs=h.noise_floor_dbfs,
                              dc_offset=h.dc_offset, hum_db=h.hum_db,
                              hum_hz=50 if h.hum_hz == 50 else 60, dead=h.dead,
                              origin_ns=self._origin_ns)
                for ch, h in zip(self.channels, block_health(samples, self.sample_rate),
                                 strict=True)]
