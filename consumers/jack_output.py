"""Every loaded channel as a JACK output port: ``python -m consumers.jack_output``.

Started by ``tidzam_ctl up --jack``. Like the Icecast relay it taps the AUDIO stream
from the live edge and, per source and channel, registers the output port
``tidzam-out:<source>-out_<channel>`` (the Icecast mount's name) on the stack's JACK
server, so that any JACK client (a recorder, a mixer, another analyser) can connect
to it. A port appears with the first chunk of its channel and goes away after the
channel's final chunk has played out, or after ``idle_s`` without audio.

Each port plays a FIFO filled from the bus and drained by JACK's process callback.
Playback starts once ``prefill_s`` of audio is queued (chunks arrive once per chunk
length, so this absorbs their jitter); an empty FIFO plays silence and waits for the
prefill again (an underrun, counted). The FIFO holds at most ``buffer_s``: audio that
arrives faster than real time (``replay --speed max``) drops its oldest samples,
counted, instead of growing without bound. Audio at another rate than JACK's is
resampled. The tap is best effort: it never holds up the pipeline. With
``TIDZAM_PRIVACY=mask`` each channel's audio waits for its predictions and its speech
plays as silence (``consumers.privacy``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import Field, SecretStr

from audio.resample import PcmResampler
from bus.connect import connect, ensure_streams
from bus.process import run_process
from bus.runner import Ack, ConsumerRunner, Delivery, Outcome
from bus_schemas import AudioChunk, pcm
from bus_schemas.streams import AUDIO, JACK_OUTPUT
from consumers.privacy import PrivacyGate, PrivacySettings, events_edge, follow_predictions

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]

CLIENT_NAME = "tidzam-out"
SPEC = JACK_OUTPUT


def port_name(source: str, channel: int) -> str:
    return f"{source}-out_{channel}"


class PortFifo:
    """Samples for one port: pushed by the event loop, pulled by JACK's callback."""

    def __init__(self, max_samples: int, prefill: int) -> None:
        self.max_samples = max(max_samples, prefill + 1)
        self.prefill = prefill
        self._lock = threading.Lock()
        self._blocks: deque[F32] = deque()
        self._head = 0  # samples of the first block already played
        self._size = 0
        self.playing = False
        self.dropped = 0  # samples dropped because the FIFO was full
        self.underruns = 0

    @property
    def size(self) -> int:
        return self._size

    def push(self, samples: F32) -> None:
        if samples.size == 0:
            return
        with self._lock:
            self._blocks.append(samples)
            self._size += samples.size
            while self._size > self.max_samples:
                excess = self._size - self.max_samples
                first = self._blocks[0]
                left = first.size - self._head
                if left <= excess:
                    self._blocks.popleft()
                    self._head = 0
                    self._size -= left
                    self.dropped += left
                else:
                    self._head += excess
                    self._size -= excess
                    self.dropped += excess

    def pull(self, out: F32, draining: bool = False) -> None:
        """Fill ``out`` (one JACK period): audio when playing, silence otherwise."""
        with self._lock:
            if not self.playing:
                if self._size < self.prefill and not (draining and self._size):
                    out[:] = 0.0
                    return
                self.playing = True
            filled = 0
            while filled < out.size and self._blocks:
                first = self._blocks[0]
                take = min(out.size - filled, first.size - self._head)
                out[filled:filled + take] = first[self._head:self._head + take]
                filled += take
                self._head += take
                self._size -= take
                if self._head == first.size:
                    self._blocks.popleft()
                    self._head = 0
            if filled < out.size:
                out[filled:] = 0.0
                self.playing = False
                if not draining:
                    self.underruns += 1


@dataclass
class OutPort:
    """One registered port and what feeds it."""

    port: Any  # jack.OwnPort
    fifo: PortFifo
    resampler: PcmResampler | None
    last: tuple[int, int] = (-1, -1)  # (session origin, seq) last queued
    last_seen: float = field(default_factory=time.monotonic)
    ending: bool = False  # its final chunk is queued: unregister once played out


class JackOutput:
    """Registers, feeds and retires the output ports of one JACK client."""

    def __init__(self, client: Any, *, buffer_s: float = 4.0, prefill_s: float = 1.3,
                 idle_s: float = 10.0, gate: PrivacyGate | None = None) -> None:
        self.client = client
        self.gate = gate  # privacy on: chunks wait for their predictions
        self.rate = int(client.samplerate)
        self.buffer_s, self.prefill_s, self.idle_s = buffer_s, prefill_s, idle_s
        self.ports: dict[tuple[str, int], OutPort] = {}
        # What the real-time callback iterates: replaced whole, never mutated in place.
        self._live: tuple[OutPort, ...] = ()
        self.failures = 0
        client.set_process_callback(self._process)

    def _process(self, frames: int) -> None:
        for out in self._live:
            out.fifo.pull(out.port.get_array(), draining=out.ending)

    def _publish_ports(self) -> None:
        self._live = tuple(self.ports.values())

    async def handle(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        for delivery in deliveries:
            chunk = delivery.event
            if not isinstance(chunk, AudioChunk):
                continue
            if self.gate is None:
                self.feed(chunk)
            else:
                self.gate.hold(chunk)
        self.release()
        return [Ack()] * len(deliveries)

    def release(self) -> None:
        """Play the chunks the privacy gate lets out (none without one)."""
        if self.gate is not None:
            for out in self.gate.release():
                self.feed(out.chunk, out.samples)

    def feed(self, chunk: AudioChunk, heard: pcm.Samples | None = None) -> None:
        """Queue one chunk (as heard: gain and mute applied, or ``heard``)."""
        key = (chunk.source, chunk.channel)
        out = self.ports.get(key)
        if out is None:
            out = self._register(chunk)
            if out is None:
                return
        out.last_seen = time.monotonic()
        position = (chunk.origin_ns, chunk.seq)
        if position <= out.last:  # redelivered or late: never played twice
            return
        out.last = position
        # the mixer's gain and mute applied (and the speech masked, with a privacy gate)
        samples = pcm.as_float32(chunk.heard_samples() if heard is None else heard)
        if out.resampler is not None:
            samples = out.resampler.push(pcm.to_int16(samples))
        out.fifo.push(samples.astype(np.float32, copy=False))
        if chunk.final:
            if out.resampler is not None:
                out.fifo.push(out.resampler.flush())
            out.ending = True

    def _register(self, chunk: AudioChunk) -> OutPort | None:
        name = port_name(chunk.source, chunk.channel)
        try:
            port = self.client.outports.register(name)
        except Exception as exc:  # port limit reached, bad name: this channel alone
            self.failures += 1
            log.warning("cannot register JACK port %s: %s", name, exc)
            return None
        resampler = None
        if chunk.sample_rate != self.rate:
            resampler = PcmResampler(chunk.sample_rate, self.rate)
        out = OutPort(port, PortFifo(round(self.buffer_s * self.rate),
                                     round(self.prefill_s * self.rate)), resampler)
        self.ports[(chunk.source, chunk.channel)] = out
        self._publish_ports()
        log.info("JACK port %s:%s open", self.client.name, name)
        return out

    async def retire_due(self, now: float | None = None) -> list[str]:
        """Unregister ports whose audio ended or stopped coming; returns their names."""
        now = time.monotonic() if now is None else now
        due = [key for key, out in self.ports.items()
               if (out.ending and out.fifo.size == 0)
               or (now - out.last_seen > self.idle_s and out.fifo.size == 0)]
        if not due:
            return []
        gone = [self.ports.pop(key) for key in due]
        self._publish_ports()
        # The callback may still hold the old snapshot for the current period.
        await asyncio.sleep(4 * self.client.blocksize / self.rate)
        names = []
        for out in gone:
            names.append(out.port.shortname)
            for label, count in (("dropped samples", out.fifo.dropped),
                                 ("underruns", out.fifo.underruns)):
                if count:
                    log.info("JACK port %s: %d %s", out.port.shortname, count, label)
            with contextlib.suppress(Exception):
                out.port.unregister()
        return names

    def close(self) -> None:
        self._live = ()
        self.ports.clear()


class JackOutputSettings(PrivacySettings):
    nats_url: SecretStr
    jack_out_buffer_s: float = Field(4.0, gt=0.5, le=120)
    jack_out_prefill_s: float = Field(1.3, ge=0.0, le=60)
    jack_out_idle_s: float = Field(10.0, gt=0, le=3600)


async def run(settings: JackOutputSettings, stop: asyncio.Event) -> None:
    import jack

    client = jack.Client(CLIENT_NAME, no_start_server=True)
    gate = PrivacyGate(settings.privacy_speech_score, settings.privacy_wait_s) \
        if settings.masking else None
    output = JackOutput(client, buffer_s=settings.jack_out_buffer_s,
                        prefill_s=settings.jack_out_prefill_s, idle_s=settings.jack_out_idle_s,
                        gate=gate)
    loop = asyncio.get_running_loop()
    server_gone = threading.Event()

    def on_shutdown(status: Any, reason: str) -> None:
        server_gone.set()  # exit, and `tidzam_ctl check` restarts us with jackd
        loop.call_soon_threadsafe(stop.set)

    client.set_shutdown_callback(on_shutdown)
    client.activate()
    nc = await connect(settings.nats_url.get_secret_value(), "tidzam-jack-output")
    js = nc.jetstream()
    await ensure_streams(js)
    tasks = []
    # read before the audio's live edge: no prediction of the audio handed out is older
    predicted = await events_edge(nc) if gate is not None else 0
    live_edge = (await js.stream_info(AUDIO.name)).state.last_seq
    if gate is not None:
        tasks.append(asyncio.create_task(follow_predictions(nc, gate, SPEC.durable, stop,
                                                            after=predicted)))
    runner = ConsumerRunner(nc, SPEC, output.handle, start_after=live_edge)

    async def retire() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5 if gate else 1.0)
            output.release()  # what waited too long for its predictions, silenced
            for name in await output.retire_due():
                log.info("JACK port %s:%s closed", CLIENT_NAME, name)

    tasks.append(asyncio.create_task(retire()))
    log.info("JACK output ports on client %s at %d Hz%s", CLIENT_NAME, output.rate,
             ", speech masked" if gate else "")
    try:
        await runner.run(stop)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        output.close()
        if not server_gone.is_set():
            client.deactivate()
            client.close()
        await nc.drain()
    if server_gone.is_set():
        raise SystemExit("the JACK server went away")
    log.info("JACK output drained: exiting")


def main() -> None:
    settings = JackOutputSettings()
    run_process(lambda stop: run(settings, stop))


if __name__ == "__main__":
    main()
