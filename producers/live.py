"""Live streams pushed by a phone or a browser (PCM16, any rate), through the gateway.

The original protocol, served on the gateway's socket.io: a client emits ``audio`` with
``{"buffer": <int16 PCM>, "samplerate": <Hz>}``; a live stream opens on its first
buffer (or on ``sys {"sys": {"add_livestream": ""}}``, answered with its port name)
and closes on ``sys {"sys": {"del_livestream": ""}}`` or when the client disconnects.
The gateway hands each request over the bus (``bus_schemas.live``) to ``LiveInputs``
here, which keeps the sessions. Unlike the original, the audio is resampled to the
pipeline rate. Each stream is a source ``live-<id>`` with one channel; its opening and
closing are events.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from audio.resample import PcmResampler
from bus.publisher import Publisher
from bus_schemas import LiveStreamClosed, LiveStreamOpened, pcm
from bus_schemas.errors import TidzamError
from bus_schemas.live import LiveRequest
from producers.chunker import Chunker, Mixer

log = logging.getLogger(__name__)


class LiveInputError(TidzamError, ValueError):
    """A client sent audio we cannot take; the message is sent back to it."""


def parse_audio(data: Any) -> tuple[npt.NDArray[np.int16], int]:
    """(int16 samples, rate) of an ``audio`` message, or LiveInputError saying why."""
    if not isinstance(data, dict):
        raise LiveInputError("audio must be {'buffer': int16 PCM, 'samplerate': Hz}")
    rate = data.get("samplerate")
    if not isinstance(rate, int) or not 1_000 <= rate <= 384_000:
        raise LiveInputError(f"samplerate must be an integer in Hz (1000-384000), got {rate!r}")
    buffer = data.get("buffer")
    if isinstance(buffer, bytes | bytearray):
        if len(buffer) % 2:
            raise LiveInputError("buffer has an odd number of bytes: PCM16 needs 2 per sample")
        return np.frombuffer(bytes(buffer), dtype="<i2"), rate
    if isinstance(buffer, list) and all(isinstance(x, int) for x in buffer):
        return pcm.clip_int16(buffer), rate
    raise LiveInputError("buffer must be PCM16 bytes or a list of integers")


@dataclass
class LiveSession:
    source: str
    client: str
    rate: int
    chunker: Chunker
    resampler: PcmResampler
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    samples_in: int = 0
    opened: float = field(default_factory=time.monotonic)

    def ahead_s(self, more: int) -> float:
        """How far the stream would run ahead of the wall clock with ``more`` samples."""
        return (self.samples_in + more) / self.rate - (time.monotonic() - self.opened)


# What one client may cost: a message holds at most MAX_MESSAGE_S of audio (at 1 kHz a
# full buffer was 384 s, resampled to 18 million samples), and a stream may run at most
# AHEAD_S ahead of real time (a phone's buffering, not a file pushed at full speed).
MAX_MESSAGE_S = 5.0
AHEAD_S = 10.0


class LiveInputs:
    """The live streams of every client, whatever carries their requests (the gateway,
    over ``bus_schemas.live``): ``open``, ``audio``, ``close``; a stream without audio
    for ``idle_s`` is closed (its client or gateway went away without a word)."""

    def __init__(self, publisher: Publisher, *, sample_rate: int = 48_000,
                 chunk_s: float = 1.0, max_streams: int = 10, idle_s: float = 60.0,
                 mixer: Mixer | None = None) -> None:
        self._pub = publisher
        self._mixer = mixer
        self.sample_rate = sample_rate
        self.chunk_samples = round(chunk_s * sample_rate)
        self.max_streams = max_streams
        self.idle_s = idle_s
        self.sessions: dict[str, LiveSession] = {}
        self._last_heard: dict[str, float] = {}
        # requests may run concurrently: one lock per client keeps its buffers in order
        # and its session created once
        self._client_locks: dict[str, asyncio.Lock] = {}

    def _lock(self, client: str) -> asyncio.Lock:
        return self._client_locks.setdefault(client, asyncio.Lock())

    @staticmethod
    def portname(client: str) -> str:
        sid = client.rsplit(":", 1)[-1]
        return "live-" + (re.sub(r"[^A-Za-z0-9]", "", sid)[:12] or "client")

    async def handle(self, request: LiveRequest) -> dict[str, Any]:
        """One request, answered as the seed answers its socket.io client."""
        client = request.client
        if request.op == "open":
            return {"sys": {"portname": self.portname(client),
                            "samplerate": self.sample_rate}}
        if request.op == "close":
            async with self._lock(client):
                await self.close(client, request.reason or "closed by the client")
            self._client_locks.pop(client, None)
            return {"sys": {"del_livestream": self.portname(client)}}
        async with self._lock(client):
            try:
                pcm, rate = parse_audio({"buffer": request.buffer,
                                         "samplerate": request.samplerate})
                if pcm.size > MAX_MESSAGE_S * rate:
                    raise LiveInputError(f"at most {MAX_MESSAGE_S:g} s of audio per message "
                                         f"(got {pcm.size / rate:.1f} s)")
                session = await self._session(client, rate)
                if session.ahead_s(pcm.size) > AHEAD_S:
                    raise LiveInputError("live audio comes faster than real time: "
                                         f"{session.ahead_s(pcm.size):.0f} s ahead; "
                                         "replay recordings with `tidzam_ctl replay`")
            except LiveInputError as exc:
                return {"error": str(exc)}
            async with session.lock:
                block = await asyncio.to_thread(session.resampler.push, pcm)
                session.samples_in += pcm.size
                self._last_heard[client] = time.monotonic()
                await self._publish(session, block)
        return {"ok": True}

    async def close_idle(self) -> list[str]:
        """Close the streams that sent nothing for ``idle_s``; their names."""
        now = time.monotonic()
        gone = [c for c in self.sessions if now - self._last_heard.get(c, now) > self.idle_s]
        for client in gone:
            async with self._lock(client):
                await self.close(client, f"no audio for {self.idle_s:.0f} s")
        return [self.portname(c) for c in gone]

    async def _session(self, sid: str, rate: int) -> LiveSession:
        session = self.sessions.get(sid)
        if session is not None and session.rate != rate:
            await self.close(sid, f"sample rate changed to {rate} Hz")
            session = None
        if session is None:
            if len(self.sessions) >= self.max_streams:
                raise LiveInputError(f"too many live streams ({self.max_streams}); try later")
            name = self.portname(sid)
            session = LiveSession(
                source=name, client=sid, rate=rate,
                chunker=Chunker(name, (0,), self.sample_rate, time.time_ns(),
                                self.chunk_samples, mixer=self._mixer),
                resampler=PcmResampler(rate, self.sample_rate))
            self.sessions[sid] = session
            await self._pub.publish_now(LiveStreamOpened(source=name, client=sid,
                                                         sample_rate=rate,
                                                         at_ns=time.time_ns()))
            log.info("live stream %s opened at %d Hz", name, rate)
        return session

    async def _publish(self, session: LiveSession, block: npt.NDArray[np.float32]) -> None:
        for chunk_set in session.chunker.push(block.reshape(1, -1)):
            await self._pub.publish_all(chunk_set.events)

    async def close(self, sid: str, reason: str) -> None:
        """Flush what is buffered (the last chunk is final) and announce the end."""
        self._last_heard.pop(sid, None)
        session = self.sessions.pop(sid, None)
        if session is None:
            return
        async with session.lock:
            await self._publish(session, session.resampler.flush())
            for chunk_set in session.chunker.finish():
                await self._pub.publish_all(chunk_set.events)
        await self._pub.publish_now(LiveStreamClosed(source=session.source, reason=reason,
                                                     at_ns=time.time_ns()))
        log.info("live stream %s closed: %s", session.source, reason)

    async def close_all(self) -> None:
        for sid in list(self.sessions):
            await self.close(sid, "server stopping")
