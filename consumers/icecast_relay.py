"""The Icecast relay: every channel of every source as its own mono Ogg stream.

``python -m consumers.icecast_relay``. It taps the AUDIO stream from the live edge
(a relay has no use for a backlog) and feeds, per source and channel, one ffmpeg
encoder (PCM s16le → Ogg Vorbis) whose output it sends to Icecast at mount
``/<source>-out_<channel>.ogg`` (the original's names) with an HTTP PUT. The source
password travels in that request's header, never in a command line. The relay is
best effort: a slow or failed encoder or Icecast never holds up the pipeline.
With ``TIDZAM_PRIVACY=mask`` each channel's audio waits for its predictions and its
speech is relayed as silence (``consumers.privacy``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Sequence

import numpy as np
from pydantic import Field, SecretStr

from audio.icecast import IcecastRefused, IcecastTarget
from bus.connect import connect, ensure_streams
from bus.process import run_process
from bus.runner import Ack, ConsumerRunner, Delivery, Outcome
from bus_schemas import AudioChunk, pcm
from bus_schemas.errors import TidzamError
from bus_schemas.streams import AUDIO, ICECAST_RELAY
from consumers.privacy import PrivacyGate, PrivacySettings, events_edge, follow_predictions

log = logging.getLogger(__name__)

SPEC = ICECAST_RELAY


class RelayError(TidzamError, RuntimeError):
    """Icecast refused a mount or an encoder could not start."""


def mount_of(source: str, channel: int) -> str:
    return f"/{source}-out_{channel}.ogg"


class ChannelStream:
    """One encoder process and one Icecast connection for one channel."""

    def __init__(self, target: IcecastTarget, source: str, channel: int, rate: int) -> None:
        self.target, self.source, self.channel, self.rate = target, source, channel, rate
        self.mount = mount_of(source, channel)
        self._proc: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pump: asyncio.Task[None] | None = None
        self.last: tuple[int, int] = (-1, -1)  # (session origin, seq) last written
        self.last_seen = time.monotonic()

    async def start(self) -> None:
        writer = await self.target.open(self.mount, f"{self.source} channel {self.channel}")
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            raise RelayError("ffmpeg is not installed (Debian: apt-get install ffmpeg)")
        self._proc = await asyncio.create_subprocess_exec(
            ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "s16le", "-ar", str(self.rate),
            "-ac", "1", "-i", "pipe:0", "-c:a", "libvorbis", "-b:a", "96k", "-f", "ogg",
            "pipe:1", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        self._writer = writer
        self._pump = asyncio.create_task(self._copy(self._proc, writer))
        log.info("relaying %s.%d to %s", self.source, self.channel, self.mount)

    @staticmethod
    async def _copy(proc: asyncio.subprocess.Process, writer: asyncio.StreamWriter) -> None:
        assert proc.stdout is not None
        while data := await proc.stdout.read(16_384):
            writer.write(data)
            await writer.drain()

    async def write(self, pcm: bytes) -> None:
        if self._proc is None or self._proc.stdin is None or self._pump is None:
            raise RelayError("stream not started")
        if self._pump.done():
            raise RelayError(f"{self.mount}: Icecast connection lost")
        self._proc.stdin.write(pcm)
        await asyncio.wait_for(self._proc.stdin.drain(), 5)

    async def close(self) -> None:
        if self._proc is not None and self._proc.stdin is not None:
            with contextlib.suppress(Exception):
                self._proc.stdin.close()
                await asyncio.wait_for(self._proc.wait(), 5)
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
        if self._pump is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pump, 5)
        if self._writer is not None:
            self._writer.close()


class IcecastRelay:
    def __init__(self, target: IcecastTarget, idle_s: float = 30.0,
                 gate: PrivacyGate | None = None) -> None:
        self.target = target
        self.gate = gate  # privacy on: chunks wait for their predictions
        self._releasing = asyncio.Lock()  # batches and the timer release in order
        self.idle_s = idle_s  # a channel without audio this long is closed
        self.streams: dict[tuple[str, int], ChannelStream] = {}
        self.failures = 0

    async def handle(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        for delivery in deliveries:
            chunk = delivery.event
            if not isinstance(chunk, AudioChunk):
                continue
            if self.gate is None:
                await self.relay(chunk)
            else:
                self.gate.hold(chunk)
        await self.release()
        return [Ack()] * len(deliveries)

    async def release(self) -> None:
        """Relay the chunks the privacy gate lets out (none without one)."""
        if self.gate is not None:
            async with self._releasing:
                for out in self.gate.release():
                    await self.relay(out.chunk, out.samples)

    async def relay(self, chunk: AudioChunk, heard: pcm.Samples | None = None) -> None:
        """Send one chunk (as heard: gain and mute applied, or ``heard``)."""
        key = (chunk.source, chunk.channel)
        stream = self.streams.get(key)
        try:
            if stream is None:
                stream = ChannelStream(self.target, chunk.source, chunk.channel,
                                       chunk.sample_rate)
                self.streams[key] = stream
                await stream.start()
            stream.last_seen = time.monotonic()
            position = (chunk.origin_ns, chunk.seq)
            if position > stream.last:  # a redelivered or late chunk is not played twice
                if heard is None:
                    heard = chunk.heard_samples()  # the mixer's gain and mute applied
                data = heard.astype("<i2", copy=False).tobytes() if heard.dtype == np.int16 \
                    else pcm.from_float32(heard)
                await stream.write(data)
                stream.last = position
            if chunk.final:
                await self.drop(key)
        except (OSError, RelayError, IcecastRefused, TimeoutError) as exc:
            self.failures += 1
            log.warning("relay of %s.%d failed: %s", chunk.source, chunk.channel, exc)
            await self.drop(key)  # the next chunk starts it again

    async def drop(self, key: tuple[str, int]) -> None:
        stream = self.streams.pop(key, None)
        if stream is not None:
            await stream.close()

    async def close_idle(self, now: float | None = None) -> list[str]:
        """Close the channels that went quiet without a final chunk (a source that
        stopped, a killed player): their encoder and mount go away."""
        now = time.monotonic() if now is None else now
        idle = [key for key, s in self.streams.items() if now - s.last_seen > self.idle_s]
        for key in idle:
            await self.drop(key)
        return [mount_of(*key) for key in idle]

    async def close(self) -> None:
        for key in list(self.streams):
            await self.drop(key)


class RelaySettings(PrivacySettings):
    nats_url: SecretStr
    icecast_host: str = "127.0.0.1"
    icecast_port: int = Field(8000, ge=1, le=65535)
    icecast_source_password: SecretStr
    relay_idle_s: float = Field(30.0, gt=0, le=86_400)


async def run(settings: RelaySettings, stop: asyncio.Event) -> None:
    nc = await connect(settings.nats_url.get_secret_value(), "tidzam-icecast-relay")
    js = nc.jetstream()
    await ensure_streams(js)
    gate = PrivacyGate(settings.privacy_speech_score, settings.privacy_wait_s) \
        if settings.masking else None
    relay = IcecastRelay(IcecastTarget(settings.icecast_host, settings.icecast_port,
                                       settings.icecast_source_password.get_secret_value()),
                         idle_s=settings.relay_idle_s, gate=gate)
    tasks = []
    # read before the audio's live edge: no prediction of the audio handed out is older
    predicted = await events_edge(nc) if gate is not None else 0
    live_edge = (await js.stream_info(AUDIO.name)).state.last_seq
    if gate is not None:
        tasks.append(asyncio.create_task(follow_predictions(nc, gate, SPEC.durable, stop,
                                                            after=predicted)))
    runner = ConsumerRunner(nc, SPEC, relay.handle, start_after=live_edge)
    log.info("relaying to Icecast on %s:%d%s", settings.icecast_host, settings.icecast_port,
             ", speech masked" if gate else "")

    async def idle_checks() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5 if gate else min(5.0, relay.idle_s / 2))
            await relay.release()  # what waited too long for its predictions, silenced
            for mount in await relay.close_idle():
                log.info("%s closed: no audio for %.0f s", mount, relay.idle_s)

    tasks.append(asyncio.create_task(idle_checks()))
    try:
        await runner.run(stop)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    await relay.close()
    await nc.drain()
    log.info("relay drained: exiting")


def main() -> None:
    settings = RelaySettings()
    run_process(lambda stop: run(settings, stop))


if __name__ == "__main__":
    main()
