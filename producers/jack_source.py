"""Capture JACK ports into the bus: ``source add NAME --jack PATTERN``.

Every output port whose name matches the pattern (sorted: channel k is the k-th)
is connected to an input port of a client of ours; its process callback copies each
period into a bounded queue (never blocking JACK's real-time thread: when the bus
falls behind, periods are dropped and counted), and the event loop chunks and
publishes them like any other source. Times come from the capture clock.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import re
import time

import numpy as np
import numpy.typing as npt

from bus.publisher import Publisher
from bus_schemas import SourceAdded, SourceFailed, SourceLoaded
from producers.chunker import Chunker, Mixer

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]


async def capture(cfg: SourceAdded, publisher: Publisher, stop: asyncio.Event, *,
                  sample_rate: int, chunk_s: float, attempt: int,
                  mixer: Mixer | None = None) -> str | None:
    """Capture until ``stop``; returns an error text if the capture could not run."""
    import jack

    try:
        client = jack.Client(f"tidzam-{cfg.source}", no_start_server=True)
    except jack.JackOpenError as exc:
        return await _failed(publisher, cfg, attempt, f"no JACK server to capture from ({exc})")
    try:
        if client.samplerate != sample_rate:
            return await _failed(publisher, cfg, attempt, f"JACK runs at {client.samplerate} "
                                 f"Hz, the pipeline at {sample_rate} Hz")
        pattern = re.compile(cfg.location)
        sources = sorted(p.name for p in client.get_ports(is_output=True, is_audio=True)
                          if pattern.search(p.name))
        if not sources:
            return await _failed(publisher, cfg, attempt,
                                 f"no JACK output port matches {cfg.location!r}")
        periods: queue.Queue[F32] = queue.Queue(maxsize=512)
        dropped = [0]
        inputs = [client.inports.register(f"in_{k}") for k in range(len(sources))]

        @client.set_process_callback  # type: ignore[untyped-decorator]
        def process(frames: int) -> None:
            block = np.stack([p.get_array() for p in inputs]).astype(np.float32)
            try:
                periods.put_nowait(block)
            except queue.Full:
                dropped[0] += 1

        client.activate()
        for port, inp in zip(sources, inputs, strict=True):
            client.connect(port, inp)
        channels = tuple(range(len(sources)))
        await publisher.publish_now(SourceLoaded(
            source=cfg.source, kind="jack", location=cfg.location, channels=channels,
            sample_rate=sample_rate, permanent=cfg.permanent, at_ns=time.time_ns(),
            attempt=attempt))
        chunker = Chunker(cfg.source, channels, sample_rate, time.time_ns(),
                          round(chunk_s * sample_rate), mixer=mixer)
        while not stop.is_set():
            try:
                block = await asyncio.to_thread(periods.get, True, 0.2)
            except queue.Empty:
                continue
            for chunk_set in chunker.push(block):
                await publisher.publish_all(chunk_set.events)
        for chunk_set in chunker.finish():
            await publisher.publish_all(chunk_set.events)
        if dropped[0]:
            log.warning("%s: %d JACK periods dropped (the bus fell behind)", cfg.source,
                        dropped[0])
        return None
    finally:
        client.deactivate()
        client.close()


async def _failed(publisher: Publisher, cfg: SourceAdded, attempt: int, reason: str) -> str:
    await publisher.publish_now(SourceFailed(source=cfg.source, reason=reason,
                                             at_ns=time.time_ns(), attempt=attempt,
                                             will_retry=cfg.permanent))
    return reason
