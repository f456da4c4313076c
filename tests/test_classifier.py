"""Replay → classifier → predictions, on a real bus, with the placeholder model."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import numpy as np
from nats.aio.client import Client

from bus.publisher import Publisher
from bus.runner import ConsumerRunner
from bus_schemas import AudioChunk, Prediction, decode
from bus_schemas.streams import classifier_consumer
from consumers.classifier.classifier import Classifier
from inference.placeholder import LoudnessScorer
from producers.replay import Replayer, plan
from tests.audio_files import expected_windows, write_wav


async def _all_predictions(nc: Client) -> list[Prediction]:
    js = nc.jetstream()
    info = await js.stream_info("EVENTS")
    out: list[Prediction] = []
    if not info.state.messages:
        return out
    sub = await js.pull_subscribe("tidzam.pred.>", stream="EVENTS")
    while len(out) < info.state.messages:
        for m in await sub.fetch(500, timeout=2):
            event = decode(m.headers, m.data)
            assert isinstance(event, Prediction)
            out.append(event)
    await sub.unsubscribe()
    return out


async def _classify(nc: Client, instances: int, expected: int, overlap: float) -> None:
    stop = asyncio.Event()
    tasks = []
    for _ in range(instances):
        clf = Classifier(nc, LoudnessScorer(), Publisher(nc.jetstream()), overlap=overlap)
        spec = classifier_consumer("placeholder")
        runner = ConsumerRunner(nc, spec, clf.handle)
        tasks.append(asyncio.create_task(runner.run(stop)))
    js = nc.jetstream()
    try:
        async with asyncio.timeout(60):
            while (await js.stream_info("EVENTS")).state.messages < expected:
                await asyncio.sleep(0.05)
            while (await js.consumer_info("AUDIO", "classifier-placeholder")).num_ack_pending:
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def test_every_window_once_across_chunk_boundaries(nc: Client, tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "two.wav", seconds=7.3, channels=2)
    pub = Publisher(nc.jetstream())
    reports = await Replayer(pub, chunk_s=1.0).replay(plan([wav], source="two"))
    assert reports[0].channels == 2 and not reports[0].errors
    n = int(7.3 * 48_000)
    hop = round(24_000 * 0.75)
    per_channel = expected_windows(n, 24_000, hop)
    await _classify(nc, instances=1, expected=2 * per_channel, overlap=0.25)
    preds = await _all_predictions(nc)
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


async def test_two_instances_share_work_without_duplicates(nc: Client, tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "four.wav", seconds=12.0, channels=4, seed=3)
    await Replayer(Publisher(nc.jetstream()), chunk_s=0.5).replay(plan([wav], source="four"))
    per_channel = expected_windows(12 * 48_000, 24_000, 12_000)
    await _classify(nc, instances=2, expected=4 * per_channel, overlap=0.5)
    preds = await _all_predictions(nc)
    keys = [(p.channel, p.window_start_ns) for p in preds]
    assert len(keys) == len(set(keys)) == 4 * per_channel


async def test_a_stalled_session_is_classified_after_the_stall_timeout(nc: Client) -> None:
    """Three 1 s chunks and then nothing (no final flag: a live source died): the windows
    inside the last chunk are still classified once its successor is overdue."""
    rng = np.random.default_rng(0)
    chunks = [AudioChunk(source="dead", channel=0, seq=k, first_sample=k * 48_000,
                         start_ns=10**18 + k * 10**9, sample_rate=48_000,
                         samples=(rng.normal(0, 0.1, 48_000) * 32767).astype("<i2").tobytes())
              for k in range(3)]
    await Publisher(nc.jetstream()).publish_all(chunks)
    clf = Classifier(nc, LoudnessScorer(), Publisher(nc.jetstream()), overlap=0.25, stall_s=1.0)
    stop = asyncio.Event()
    task = asyncio.create_task(ConsumerRunner(nc, classifier_consumer("placeholder"),
                                              clf.handle).run(stop))
    expected = expected_windows(3 * 48_000, 24_000, 18_000)  # 7: the grid up to 3 s
    try:
        async with asyncio.timeout(20):
            while (await nc.jetstream().stream_info("EVENTS")).state.messages < expected:
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
    assert clf.stats.waits > 0  # it did wait for a successor first
    assert len(await _all_predictions(nc)) == expected
