"""Replay → classifier → predictions, on a real bus, with the placeholder model."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from nats.aio.client import Client

from bus.publisher import Publisher
from bus.runner import ConsumerRunner
from bus_schemas import AudioChunk, Prediction
from bus_schemas.streams import classifier_consumer
from consumers.classifier.classifier import Classifier
from consumers.classifier.lanes import FINISHED_KEEP_S, forget_lanes
from inference.placeholder import LoudnessScorer
from producers.replay import Replayer, plan
from tests.audio_files import expected_windows, write_wav
from tests.bus_reading import count_predictions, read_predictions


async def _classify(nc: Client, instances: int, expected: int, overlap: float
                    ) -> list[Classifier]:
    stop = asyncio.Event()
    tasks, made = [], []
    for _ in range(instances):
        clf = Classifier(nc, LoudnessScorer(), Publisher(nc.jetstream()), overlap=overlap)
        made.append(clf)
        spec = classifier_consumer("placeholder")
        runner = ConsumerRunner(nc, spec, clf.handle)
        tasks.append(asyncio.create_task(clf.consume(runner, stop)))
    js = nc.jetstream()
    try:
        async with asyncio.timeout(60):
            while (await count_predictions(js)) < expected:
                await asyncio.sleep(0.05)
            while (await js.consumer_info("AUDIO", "classifier-placeholder")).num_ack_pending:
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    return made


async def test_ended_sessions_leave_no_audio_behind(nc: Client, tmp_path: Path) -> None:
    """A site whose sessions end and start again (replays, a reloaded source, phones):
    the lane of an ended session is forgotten once its chunks are scored, so memory
    does not grow with the number of sessions seen (the soak showed +10 MB a minute
    at 32 channels restarting every minute)."""
    wav = write_wav(tmp_path / "short.wav", seconds=2.5, channels=2)
    pub = Publisher(nc.jetstream())
    for k in range(12):  # 12 sessions of 2 channels, one after the other
        await Replayer(pub, chunk_s=1.0).replay(plan([wav], source="again",
                                                      start=datetime(2025, 1, 1, 0, k,
                                                                     tzinfo=UTC)))
    per_channel = expected_windows(int(2.5 * 48_000), 24_000, 18_000)
    [clf] = await _classify(nc, instances=1, expected=24 * per_channel, overlap=0.25)
    assert await count_predictions(nc.jetstream()) == 24 * per_channel
    ended = [lane.finished_at for lane in clf._lanes.values()]
    assert len(ended) == 24 and None not in ended  # kept a while, for late redeliveries
    now = asyncio.get_running_loop().time()
    forget_lanes(clf._lanes, now)
    assert len(clf._lanes) == 24
    forget_lanes(clf._lanes, now + FINISHED_KEEP_S)
    assert clf._lanes == {}, list(clf._lanes)


async def test_every_window_once_across_chunk_boundaries(nc: Client, tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "two.wav", seconds=7.3, channels=2)
    pub = Publisher(nc.jetstream())
    reports = await Replayer(pub, chunk_s=1.0).replay(plan([wav], source="two"))
    assert reports[0].channels == 2 and not reports[0].errors
    n = int(7.3 * 48_000)
    hop = round(24_000 * 0.75)
    per_channel = expected_windows(n, 24_000, hop)
    await _classify(nc, instances=1, expected=2 * per_channel, overlap=0.25)
    preds = await read_predictions(nc)
    assert len(preds) == 2 * per_channel
    for ch in (0, 1):
        starts = sorted(p.window_start_ns for p in preds if p.channel == ch)
        steps = {b - a for a, b in itertools.pairwise(starts)}
        assert steps == {hop * 1_000_000_000 // 48_000}  # a regular grid, no gap, no double
    # channel 0 toggles each second, channel 1 each half second: labels follow the audio
    first = min(p.window_start_ns for p in preds)
    ch0 = {round((p.window_start_ns - first) / 1e9, 3): p.result[0] for p in preds
           if p.channel == 0}
    assert ch0[0.0] == "loud" and ch0[1.125] == "quiet"


@pytest.mark.parametrize("instances", [2, 3])
async def test_instances_share_work_without_duplicates(nc: Client, tmp_path: Path,
                                                       instances: int) -> None:
    wav = write_wav(tmp_path / "four.wav", seconds=12.0, channels=4, seed=3)
    await Replayer(Publisher(nc.jetstream()), chunk_s=0.5).replay(plan([wav], source="four"))
    per_channel = expected_windows(12 * 48_000, 24_000, 12_000)
    await _classify(nc, instances=instances, expected=4 * per_channel, overlap=0.5)
    preds = await read_predictions(nc)
    keys = [(p.channel, p.window_start_ns) for p in preds]
    assert len(keys) == len(set(keys)) == 4 * per_channel


async def test_more_channels_than_the_consumer_lets_it_hold(nc: Client, tmp_path: Path) -> None:
    """Each of 12 channels holds its newest chunk, waiting for the next, and the consumer
    delivers at most 8 unacked: deliveries stop. The classifier reads the successors
    from the stream instead (crowded), and every window comes, once."""
    wav = write_wav(tmp_path / "twelve.wav", seconds=6.0, channels=12, seed=5)
    await Replayer(Publisher(nc.jetstream()), chunk_s=0.5).replay(plan([wav], source="many"))
    per_channel = expected_windows(6 * 48_000, 24_000, 18_000)
    spec = dataclasses.replace(classifier_consumer("placeholder"), max_ack_pending=8, batch=4)
    clf = Classifier(nc, LoudnessScorer(), Publisher(nc.jetstream()), overlap=0.25,
                     max_ack_pending=8)
    stop = asyncio.Event()
    task = asyncio.create_task(clf.consume(ConsumerRunner(nc, spec, clf.handle), stop))
    js = nc.jetstream()
    try:
        async with asyncio.timeout(60):
            while (await count_predictions(js)) < 12 * per_channel:
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
    preds = await read_predictions(nc)
    keys = [(p.channel, p.window_start_ns) for p in preds]
    assert len(keys) == len(set(keys)) == 12 * per_channel
    assert clf.stats.scans > 0  # the crowded path was taken


def _dead_chunks(n: int, *, first: int = 0, final: bool = False) -> list[AudioChunk]:
    rng = np.random.default_rng(first)
    return [AudioChunk(source="dead", channel=0, seq=k, first_sample=k * 48_000,
                       start_ns=10**18 + k * 10**9, sample_rate=48_000, final=final and k == n - 1,
                       samples=(rng.normal(0, 0.1, 48_000) * 32767).astype("<i2").tobytes())
            for k in range(first, n)]


async def _other_traffic(nc: Client, seconds: float) -> None:
    """Another source keeps the stream's clock going (a 0.1 s chunk every 0.1 s)."""
    pub = Publisher(nc.jetstream())
    n = int(seconds / 0.1)
    for k in range(n):
        await pub.publish_now(AudioChunk(source="alive", channel=0, seq=k, first_sample=k * 4800,
                                         start_ns=10**18 + k * 10**8, sample_rate=48_000,
                                         samples=b"\x00\x00" * 4800, final=k == n - 1))
        await asyncio.sleep(0.1)


async def _dead_predictions(nc: Client) -> list[Prediction]:
    return [p for p in await read_predictions(nc) if p.source == "dead"]


async def test_a_stall_is_decided_by_the_streams_clock_and_late_audio_still_counts(
        nc: Client) -> None:
    """Three 1 s chunks and then nothing (no final flag: a live source died). While the
    stream stores nothing (a NATS outage looks the same) nothing is closed, however long
    the wall clock runs; once the stream's own clock has moved on by the stall, the
    windows inside the last chunk are classified; when the missing chunk finally
    arrives, the windows across the break are classified by it: none lost, none twice."""
    await Publisher(nc.jetstream()).publish_all(_dead_chunks(3))
    clf = Classifier(nc, LoudnessScorer(), Publisher(nc.jetstream()), overlap=0.25, stall_s=1.0)
    stop = asyncio.Event()
    task = asyncio.create_task(clf.consume(ConsumerRunner(
        nc, classifier_consumer("placeholder"), clf.handle), stop))
    inside = expected_windows(2 * 48_000 + 24_000, 24_000, 18_000)  # windows ending ≤ 2.5 s
    try:
        async with asyncio.timeout(30):
            while len(await _dead_predictions(nc)) < inside - 1:  # all but the held chunk's
                await asyncio.sleep(0.05)
            await asyncio.sleep(2.5)  # 2.5 s of wall clock, nothing stored: no stall
            assert clf.stats.breaks == 0 and clf.stats.held == 1
            await _other_traffic(nc, 2.0)
            while len(await _dead_predictions(nc)) < expected_windows(3 * 48_000, 24_000,
                                                                     18_000):
                await asyncio.sleep(0.05)
            assert clf.stats.breaks == 1 and clf.stats.held == 0
            await Publisher(nc.jetstream()).publish_all(_dead_chunks(4, first=3, final=True))
            while len(await _dead_predictions(nc)) < expected_windows(4 * 48_000, 24_000,
                                                                     18_000):
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
    finally:
        stop.set()
        await task
    starts = [p.window_start_ns for p in await _dead_predictions(nc)]
    assert len(starts) == len(set(starts)) == expected_windows(4 * 48_000, 24_000, 18_000)
    assert (await nc.jetstream().consumer_info("AUDIO", "classifier-placeholder")
            ).num_redelivered == 0
