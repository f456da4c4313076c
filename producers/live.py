"""Live streams pushed over socket.io by a phone or a browser (PCM16, any rate).

The original protocol: a client emits ``audio`` with ``{"buffer": <int16 PCM>,
"samplerate": <Hz>}``; a live stream opens on its first buffer (or on
``sys {"sys": {"add_livestream": ""}}``, answered with its port name) and closes on
``sys {"sys": {"del_livestream": ""}}`` or when the client disconnects. Unlike the
original, the audio is resampled to the pipeline rate. Each stream is a source
``live-<id>`` with one channel; its opening and closing are events.
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
import socketio

from audio.resample import PcmResampler
from bus.publisher import Publisher
from bus_schemas import LiveStreamClosed, LiveStreamOpened, pcm
from bus_schemas.errors import TidzamError
from producers.chunker import Chunker, Mixer

log = logging.getLogger(__name__)

JSON_ERROR = {"error": "request must be a JSON."}


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


class LiveNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    """The ``audio`` and ``sys`` events of live clients."""

    def __init__(self, publisher: Publisher, *, sample_rate: int = 48_000,
                 chunk_s: float = 1.0, max_streams: int = 10, namespace: str = "/",
                 mixer: Mixer | None = None) -> None:
        super().__init__(namespace)
        self._pub = publisher
        self._mixer = mixer
        self.sample_rate = sample_rate
        self.chunk_samples = round(chunk_s * sample_rate)
        self.max_streams = max_streams
        self.sessions: dict[str, LiveSession] = {}
        # socket.io runs each event in its own task: one lock per client keeps its
        # buffers in order and its session created once; a gone client stays gone
        self._client_locks: dict[str, asyncio.Lock] = {}
        self._gone: set[str] = set()

    def _lock(self, sid: str) -> asyncio.Lock:
        return self._client_locks.setdefault(sid, asyncio.Lock())

    @staticmethod
    def portname(sid: str) -> str:
        return "live-" + (re.sub(r"[^A-Za-z0-9]", "", sid)[:12] or "client")

    async def on_audio(self, sid: str, data: Any) -> dict[str, Any]:
        async with self._lock(sid):
            if sid in self._gone:
                return {"error": "disconnected"}
            try:
                pcm, rate = parse_audio(data)
                session = await self._session(sid, rate)
            except LiveInputError as exc:
                await self.emit("sys", {"error": str(exc)}, to=sid)
                return {"error": str(exc)}
            async with session.lock:
                block = await asyncio.to_thread(session.resampler.push, pcm)
                session.samples_in += pcm.size
                await self._publish(session, block)
        return {"ok": True}

    async def on_sys(self, sid: str, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict) or not isinstance(data.get("sys"), dict):
            await self.emit("sys", JSON_ERROR, to=sid)
            return JSON_ERROR
        request = data["sys"]
        if "add_livestream" in request:
            reply = {"sys": {"portname": self.portname(sid), "samplerate": self.sample_rate}}
            await self.emit("sys", reply, to=sid)
            return reply
        if "del_livestream" in request:
            async with self._lock(sid):
                await self.close(sid, "closed by the client")
            return {"sys": {"del_livestream": self.portname(sid)}}
        error = {"error": f"unknown request {sorted(request)}"}
        await self.emit("sys", error, to=sid)
        return error

    async def on_disconnect(self, sid: str, *args: Any) -> None:
        async with self._lock(sid):
            self._gone.add(sid)
            await self.close(sid, "client disconnected")
        self._client_locks.pop(sid, None)

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
