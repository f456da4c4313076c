"""Play one session of a source into the bus: open, decode, chunk, publish, announce.

A session is one opening of a file or URL: ``seq`` and ``first_sample`` start at 0,
times start at ``origin_ns`` (the recording's clock). Decoding runs in a worker
thread feeding a bounded queue, so a slow bus slows the decoder instead of growing
memory; chunks of one channel are stored strictly in order (a set of chunks, one per
channel, is acked before the next is sent). ``speed`` paces publishing against the
wall clock (1.0 = real time, None = as fast as the bus takes it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from audio.decode import AudioDecodeError, AudioStream
from bus.publisher import Publisher, PublishError
from bus_schemas import AudioChunk, SourceFailed, SourceLoaded, SourceUnloaded
from producers.chunker import Chunker, ChunkSet, Mixer

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]  # (source, audio seconds just published)
# Asked once the stream's channels are known: an error text refuses the session.
Admit = Callable[["Session", tuple[int, ...]], str | None]
Kind = Literal["file", "url", "jack", "live", "archive"]


@dataclass(frozen=True)
class Session:
    source: str
    location: str
    origin_ns: int
    kind: Kind = "file"
    channels: tuple[int, ...] = ()  # the channels to publish; empty: all
    seek_s: float = 0.0
    permanent: bool = False
    attempt: int = 0


@dataclass
class SessionResult:
    seconds: float = 0.0
    chunks: int = 0
    channels: tuple[int, ...] = ()
    error: str | None = None
    stopped: bool = False  # ended by the stop event, not by the stream
    opened: bool = False


@dataclass
class _Opened:
    channels: int


@dataclass
class _Failed:
    error: AudioDecodeError


_END = object()


@dataclass
class Player:
    publisher: Publisher
    sample_rate: int = 48_000
    chunk_s: float = 1.0
    speed: float | None = None
    progress: Progress | None = None
    queue_sets: int = 8
    open_timeout_s: float = 15.0  # connecting to / reading from a URL
    mixer: Mixer | None = None  # the gain stage's state of a channel (GainStage.state)
    _never: asyncio.Event = field(default_factory=asyncio.Event)

    async def play(self, session: Session, stop: asyncio.Event | None = None, *,
                   will_retry: bool = False, announce_end: bool = True,
                   admit: Admit | None = None) -> SessionResult:
        """Play until the stream ends, fails, or ``stop`` is set; announce each step."""
        stop = stop or self._never
        sets: queue.Queue[object] = queue.Queue(maxsize=self.queue_sets)
        halt = threading.Event()
        thread = threading.Thread(target=self._decode, args=(session, sets, halt),
                                  name=f"decode-{session.source}", daemon=True)
        thread.start()
        result = SessionResult()
        last: list[AudioChunk] = []  # the last chunks published
        t0 = time.monotonic()
        try:
            while True:
                got = await self._next(sets, stop, thread)
                if got is None:
                    result.stopped = True
                    break
                if got is _END:
                    break
                if isinstance(got, _Failed):
                    result.error = str(got.error)
                    break
                if isinstance(got, _Opened):
                    result.channels = self._selected(session, got.channels)
                    refusal = admit(session, result.channels) if admit else None
                    if refusal is not None:
                        result.error = refusal
                        break
                    result.opened = True
                    await self.publisher.publish_now(SourceLoaded(
                        source=session.source, kind=session.kind, location=session.location,
                        channels=result.channels, sample_rate=self.sample_rate,
                        permanent=session.permanent, at_ns=time.time_ns(),
                        attempt=session.attempt))
                    continue
                assert isinstance(got, ChunkSet)
                await self._publish(session, got, result)
                last = got.chunks
                await self._pace(t0, result.seconds, stop)
        finally:
            halt.set()
            await asyncio.to_thread(thread.join, 5)  # a blocked read must not freeze the loop
        await self._close(last)
        await self._announce(session, result, will_retry, announce_end)
        return result

    async def _close(self, last: list[AudioChunk]) -> None:
        """A session that ends before its final chunk (a decoding error, a stop) gets an
        empty final chunk per channel, so consumers know its audio ends there instead
        of waiting for more (the classifier would hold its last chunk until the
        stream's clock says it stalled)."""
        if not last or last[0].final:
            return
        closing = [AudioChunk(source=c.source, channel=c.channel, seq=c.seq + 1,
                              first_sample=c.end_sample, start_ns=c.time_of(c.end_sample),
                              sample_rate=c.sample_rate, encoding=c.encoding, samples=b"",
                              final=True) for c in last]
        try:
            await self.publisher.publish_all(closing)
        except PublishError as exc:
            log.warning("could not close the session of %s: %s", last[0].source, exc)

    async def _publish(self, session: Session, chunk_set: ChunkSet,
                       result: SessionResult) -> None:
        await self.publisher.publish_all(chunk_set.events)
        chunks = chunk_set.chunks
        seconds = chunks[0].n_samples / self.sample_rate if chunks else 0.0
        result.seconds += seconds
        result.chunks += len(chunks)
        if self.progress:
            self.progress(session.source, seconds)

    async def _announce(self, session: Session, result: SessionResult, will_retry: bool,
                        announce_end: bool) -> None:
        if result.error is not None:
            await self.publisher.publish_now(SourceFailed(
                source=session.source, reason=result.error, at_ns=time.time_ns(),
                attempt=session.attempt, will_retry=will_retry))
        elif announce_end:
            reason = "stopped" if result.stopped else "end of stream"
            await self.publisher.publish_now(SourceUnloaded(
                source=session.source, reason=reason, at_ns=time.time_ns()))

    @staticmethod
    async def _next(sets: queue.Queue[object], stop: asyncio.Event,
                    thread: threading.Thread) -> object | None:
        """The next item from the decoder, or None once ``stop`` is set."""
        while not stop.is_set():
            if not thread.is_alive() and sets.empty():
                return _END
            try:
                return sets.get_nowait()
            except queue.Empty:
                pass
            try:
                return await asyncio.to_thread(sets.get, True, 0.1)
            except queue.Empty:
                continue
        return None

    async def _pace(self, t0: float, published_s: float, stop: asyncio.Event) -> None:
        if self.speed:
            ahead = t0 + published_s / self.speed - time.monotonic()
            if ahead > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), ahead)

    @staticmethod
    def _selected(session: Session, available: int) -> tuple[int, ...]:
        if not session.channels:
            return tuple(range(available))
        missing = [c for c in session.channels if c >= available]
        if missing:
            raise_text = (f"channel(s) {missing} asked for, but the stream has "
                          f"{available} channel(s) (0-{available - 1})")
            raise AudioDecodeError(session.location, raise_text)
        return session.channels

    def _decode(self, session: Session, sets: queue.Queue[object],
                halt: threading.Event) -> None:
        """Worker thread: open, decode, chunk; queue chunk sets; always ends with _END."""
        def put(obj: object) -> bool:
            while not halt.is_set():
                try:
                    sets.put(obj, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            with AudioStream(session.location, self.sample_rate,
                             timeout_s=self.open_timeout_s) as stream:
                chosen = self._selected(session, stream.info.channels)
                stream.seek(session.seek_s)
                if not put(_Opened(stream.info.channels)):
                    return
                chunker = Chunker(session.source, chosen, self.sample_rate,
                                  session.origin_ns, round(self.chunk_s * self.sample_rate),
                                  mixer=self.mixer)
                every = tuple(range(stream.info.channels))
                for block in stream.pcm16_blocks():
                    picked = block if chosen == every else block[list(chosen)]
                    for chunk_set in chunker.push(picked):
                        if not put(chunk_set):
                            return
                for chunk_set in chunker.finish():
                    if not put(chunk_set):
                        return
        except AudioDecodeError as exc:
            put(_Failed(exc))
        except Exception as exc:  # a bug or a library surprise: fail the session, loudly
            log.exception("decoding %s failed", session.location)
            put(_Failed(AudioDecodeError(session.location, f"{type(exc).__name__}: {exc}")))
        finally:
            put(_END)
