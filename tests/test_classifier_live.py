"""The classifier at the live edge, on a real nats-server: held chunks instead of nak
loops, a NATS outage, junk on a live source's subject."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import msgpack
from nats.aio.client import Client

from bus.connect import connect, ensure_streams
from bus.publisher import Publisher
from bus.runner import ConsumerRunner
from bus_schemas import AudioChunk, Prediction
from bus_schemas.codec import HEADER_TYPE, HEADER_VERSION
from bus_schemas.streams import classifier_consumer
from consumers.classifier.classifier import Classifier
from inference.placeholder import LoudnessScorer
from producers.replay import Replayer, ReplayItem
from tests.audio_files import expected_windows, write_wav
from tests.bus_reading import read_predictions
from tidzam_ctl.stack.nats import NatsServer

RATE, WINDOW, HOP = 48_000, 24_000, 18_000  # overlap 0.25
START = datetime(2024, 5, 1, 4, 0, tzinfo=UTC)
DURABLE = "classifier-placeholder"


class Instance:
    """One classifier consuming until stopped."""

    def __init__(self, nc: Client, stall_s: float = 10.0) -> None:
        self.clf = Classifier(nc, LoudnessScorer(), Publisher(nc.jetstream()), overlap=0.25,
                              stall_s=stall_s)
        self.stop = asyncio.Event()
        runner = ConsumerRunner(nc, classifier_consumer("placeholder"), self.clf.handle)
        self.task = asyncio.create_task(self.clf.consume(runner, self.stop))

    async def close(self) -> None:
        self.stop.set()
        await self.task


async def _wait_windows(nc: Client, source: str, expected: int, timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while len(await read_predictions(nc, source)) < expected:
            await asyncio.sleep(0.2)


def _once(preds: list[Prediction]) -> set[tuple[int, int]]:
    keys = [(p.channel, p.window_start_ns) for p in preds]
    assert len(keys) == len(set(keys)), "a window was predicted twice"
    return set(keys)


async def _redelivered(nc: Client) -> int:
    return int((await nc.jetstream().consumer_info("AUDIO", DURABLE)).num_redelivered)


async def test_live_speed_holds_instead_of_redelivering_across_a_restart_and_two_instances(
        nc: Client, tmp_path: Path) -> None:
    """A 2-channel source at real time: one instance, then (restarted) two. In steady
    state no chunk is ever redelivered (the newest chunk of each channel is held, not
    nak'd); the restart hands back only the chunks held at that moment; every window
    is predicted once."""
    wav = write_wav(tmp_path / "live.wav", seconds=9.0, channels=2, seed=5)
    replay = asyncio.create_task(Replayer(Publisher(nc.jetstream()), speed=1.0).replay(
        [ReplayItem(wav, "live", START)]))
    first = Instance(nc)
    await _wait_windows(nc, "live", 2 * expected_windows(3 * RATE, WINDOW, HOP) - 4, 30)
    assert await _redelivered(nc) == 0
    assert first.clf.stats.scans == 0  # alone: everything came through its deliveries
    held = first.clf.stats.held
    await first.close()  # SIGTERM: the held chunks go back at once
    second, third = Instance(nc), Instance(nc)
    await replay
    total = 2 * expected_windows(9 * RATE, WINDOW, HOP)
    try:
        await _wait_windows(nc, "live", total, 30)
        await asyncio.sleep(1.0)  # anything predicted twice would show by now
    finally:
        await second.close()
        await third.close()
    assert len(_once(await read_predictions(nc, "live"))) == total
    assert held > 0 and await _redelivered(nc) <= held  # only what the restart handed back


@contextlib.asynccontextmanager
async def _own_server(home: Path
                      ) -> AsyncIterator[tuple[NatsServer, list[subprocess.Popen[bytes]]]]:
    server = NatsServer.load_or_init(home)
    procs = [server.spawn()]
    server.wait_ready(procs[0])
    try:
        yield server, procs
    finally:
        for proc in procs:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


async def test_a_nats_outage_longer_than_the_stall_loses_no_window(tmp_path: Path) -> None:
    """The server is stopped mid-replay for longer than the stall time, then restarted
    on the same store. The classifier must not take the outage for a stalled source:
    the windows across the chunks stored after the outage are predicted, every one
    once, as in a run without an outage."""
    async with _own_server(tmp_path / "nats") as (server, procs):
        nc = await connect(server.url, "pytest-outage")
        await ensure_streams(nc.jetstream())
        wav = write_wav(tmp_path / "out.wav", seconds=16.0, channels=2, seed=9)
        replay = asyncio.create_task(Replayer(Publisher(nc.jetstream(), retries=12),
                                              speed=2.0).replay([ReplayItem(wav, "out", START)]))
        clf = Instance(nc, stall_s=1.5)
        await _wait_windows(nc, "out", 10, 30)
        procs[0].terminate()
        procs[0].wait(timeout=10)
        await asyncio.sleep(4.0)  # the outage: > stall_s of wall clock
        procs.append(server.spawn())
        server.wait_ready(procs[-1])
        reports = await replay
        assert not reports[0].errors, reports[0].errors
        total = 2 * expected_windows(16 * RATE, WINDOW, HOP)
        try:
            await _wait_windows(nc, "out", total, 60)
            await asyncio.sleep(1.0)
        finally:
            await clf.close()
        assert len(_once(await read_predictions(nc, "out"))) == total
        await nc.drain()


async def test_junk_on_a_live_sources_subject_costs_none_of_its_windows(
        nc: Client, tmp_path: Path) -> None:
    """While a source plays, another producer floods its subject: chunks of other
    sessions (other origins, random seqs, never final) and bodies that are not events.
    Every window of the real session is predicted once; the undecodable messages are
    dead-lettered and counted."""
    wav = write_wav(tmp_path / "mic.wav", seconds=8.0, channels=1, seed=2)
    replay = asyncio.create_task(Replayer(Publisher(nc.jetstream()), speed=4.0).replay(
        [ReplayItem(wav, "mic", START)]))
    clf = Instance(nc)
    js, garbage = nc.jetstream(), 0
    junk = Publisher(js)
    for k in range(120):
        if k % 3 == 0:
            await js.publish("tidzam.audio.mic.0", msgpack.packb({"samples": k}),
                             headers={HEADER_TYPE: "AudioChunk", HEADER_VERSION: "1"})
            garbage += 1
        else:
            origin = 2 * 10**18 + k * 10**12  # another session each time, far from the real one
            seq = (k * 7) % 13
            await junk.publish_now(AudioChunk(
                source="mic", channel=0, seq=seq, first_sample=seq * 4_800,
                start_ns=origin + seq * 10**8, sample_rate=RATE, samples=b"\x01\x00" * 4_800))
        await asyncio.sleep(0.01)
    await replay
    real = expected_windows(8 * RATE, WINDOW, HOP)
    try:
        async with asyncio.timeout(30):
            while len([p for p in await read_predictions(nc, "mic")
                       if p.window_start_ns < 2 * 10**18]) < real:
                await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)
    finally:
        await clf.close()
    genuine = [p for p in await read_predictions(nc, "mic") if p.window_start_ns < 2 * 10**18]
    assert len(_once(genuine)) == real
    assert (await js.stream_info("DLQ")).state.messages == garbage
