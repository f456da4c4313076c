"""The sample extractor on a real nats-server: real audio replayed into AUDIO,
predictions in EVENTS, rules on CONTROL; samples written as FLAC that hold exactly
the audio that was published, once, whatever is redelivered."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig

from audio.decode import decode_all
from bus.history import AudioCursor, read_audio
from bus.publisher import Publisher
from bus_schemas import (
    ExtractionRule,
    ExtractionRulesSet,
    Prediction,
    SampleExtracted,
    decode,
    pcm,
)
from bus_schemas.streams import AUDIO, EXTRACTOR, classifier_consumer
from consumers.extractor.service import CHECKPOINT, Extractor, GiveWay, sample_id
from producers.replay import Replayer, ReplayItem
from tests.audio_files import write_pcm
from tests.real_audio import MEGAGLEST, RAIN, real_file
from tests.waiting import wait_until

RATE = 48_000
SEC = 1_000_000_000
T0 = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)
T0_NS = int(T0.timestamp() * SEC)
LABELS = ("birds", "rain", "speech")


def window(start_s: float, result: tuple[str, ...], scores: tuple[float, ...],
           channel: int = 0, origin_ns: int = T0_NS) -> Prediction:
    start = origin_ns + int(start_s * SEC)
    return Prediction(source="pond", channel=channel, window_start_ns=start,
                      window_end_ns=start + 2 * SEC, model_id="selector", model_version="1",
                      labels=LABELS, scores=scores, result=result, origin_ns=origin_ns)


def published_pcm(path: Path) -> np.ndarray:
    """The int16 samples the replay published, channel by channel."""
    audio, _ = decode_all(path, RATE)
    return pcm.to_int16(audio)


async def extract(nc: Client, root: Path, expected: int) -> Extractor:
    """Run an extractor until ``expected`` predictions were settled."""
    extractor = Extractor(nc, root)
    await extractor.load_rules()
    stop = asyncio.Event()
    task = asyncio.create_task(extractor.runner().run(stop))
    try:
        await wait_until(lambda: extractor.stats.seen >= expected, 60,
                         f"{expected} predictions seen")

        async def settled() -> bool:
            info = await nc.jetstream().consumer_info("EVENTS", EXTRACTOR.durable)
            return info.num_pending == 0 and info.num_ack_pending == 0
        await wait_until(settled, 60, "every prediction acked")
    finally:
        stop.set()
        await task
    return extractor


async def samples_on_bus(nc: Client) -> list[SampleExtracted]:
    js = nc.jetstream()
    info = await js.stream_info("EVENTS", subjects_filter="tidzam.sample.>")
    total = sum((info.state.subjects or {}).values())
    if not total:
        return []
    sub = await js.pull_subscribe("tidzam.sample.>", stream="EVENTS")
    out = []
    try:
        for m in await sub.fetch(total, timeout=5):
            event = decode(m.headers, m.data)
            assert isinstance(event, SampleExtracted)
            out.append(event)
    finally:
        await sub.unsubscribe()
    return out


async def test_samples_hold_the_published_audio_once(nc: Client, tmp_path: Path) -> None:
    wav = real_file(MEGAGLEST, RAIN)  # 16 s, stereo
    await Replayer(Publisher(nc.jetstream()), chunk_s=1.0).replay([ReplayItem(wav, "pond", T0)])
    pub = Publisher(nc.jetstream())
    await pub.publish_now(ExtractionRulesSet(at_ns=1, rules=(
        ExtractionRule(source="pond", classes=("unknown", "rain"), rate=1.0, before_s=1.0,
                       after_s=0.5, cooldown_s=3.0),)))
    windows = [
        window(0.0, ("unknown",), (0.2, 0.3, 0.1)),  # at the session's start: no context before
        window(1.0, ("unknown",), (0.2, 0.3, 0.1)),  # cooldown: 1 s after the last one
        window(5.0, ("rain",), (0.1, 0.8, 0.1), channel=1),
        window(9.0, ("birds",), (0.9, 0.1, 0.0)),  # not asked for
        window(13.5, ("rain",), (0.1, 0.8, 0.0)),  # the context after runs past the end
        window(7.0, ("rain",), (0.1, 0.3, 0.7)),  # speech above 0.5: private
    ]
    await pub.publish_all(windows)
    root = tmp_path / "samples"
    first = await extract(nc, root, len(windows))
    assert (first.stats.extracted, first.stats.cooldown, first.stats.private) == (3, 1, 1)

    source = published_pcm(wav)
    events = {e.sample_id: e for e in await samples_on_bus(nc)}
    assert set(events) == {sample_id(windows[i]) for i in (0, 2, 4)}
    for i, (lo_s, hi_s) in {0: (0.0, 2.5), 2: (4.0, 7.5), 4: (12.5, 16.0)}.items():
        event = events[sample_id(windows[i])]
        sidecar = json.loads((root / "samples" / event.label / f"{event.sample_id}.json")
                             .read_text())
        assert sidecar["path"] == event.path and sidecar["scores"] == list(windows[i].scores)
        lo, hi = int(lo_s * RATE), min(int(hi_s * RATE), source.shape[1])  # cut at the end
        assert (event.start_ns, event.end_ns) == (T0_NS + lo * SEC // RATE,
                                                  T0_NS + hi * SEC // RATE)
        saved, info = decode_all(root / event.path, RATE)
        assert (info.original_rate, info.codec, saved.shape[0]) == (RATE, "flac", 1)
        expected = source[windows[i].channel, lo:hi]
        assert np.array_equal(pcm.to_int16(saved[0]), expected)  # FLAC: bit for bit

    # everything again (a crash before the position was saved): nothing new, the same
    # events stored once
    (root / CHECKPOINT).unlink()
    again = await extract(nc, root, len(windows))
    assert (again.stats.extracted, again.stats.again) == (0, 3)
    assert len(await samples_on_bus(nc)) == 3
    assert len(list(root.rglob("*.flac"))) == 3 and not list(root.rglob(".*.part"))


async def test_a_windows_audio_comes_from_its_own_session(nc: Client, tmp_path: Path) -> None:
    """The same source replayed twice with overlapping times: each window's audio and
    context come from the session that holds it."""
    rain = real_file(MEGAGLEST, RAIN)
    quiet = write_pcm(tmp_path / "quiet.wav", np.zeros((2, 16 * RATE), dtype=np.float32))
    pub = Publisher(nc.jetstream())
    await Replayer(pub, chunk_s=1.0).replay([ReplayItem(rain, "pond", T0)])
    before = datetime.now(UTC)
    await Replayer(pub, chunk_s=1.0).replay([ReplayItem(quiet, "pond",
                                                        datetime(2025, 6, 15, 12, 0, 8,
                                                                 tzinfo=UTC))])
    after = datetime.now(UTC)
    # a window at 10 s exists in both sessions: asked after the first only, it is rain
    span = await read_audio(nc, "pond", 0, T0_NS + 10 * SEC, T0_NS + 12 * SEC, before)
    assert span is not None and span.complete
    assert np.array_equal(span.samples, published_pcm(rain)[0, 10 * RATE:12 * RATE])
    # a window of the second session: silence, and its context cut at its start (8 s)
    span = await read_audio(nc, "pond", 0, T0_NS + 7 * SEC, T0_NS + 12 * SEC, after,
                            origin_ns=T0_NS + 8 * SEC)
    assert span is not None and span.start_ns == T0_NS + 8 * SEC and span.complete
    assert len(span.samples) == 4 * RATE and not span.samples.any()
    # and of the first, asked as late: rain again, with its full context
    span = await read_audio(nc, "pond", 1, T0_NS + 7 * SEC, T0_NS + 12 * SEC, after,
                            origin_ns=T0_NS)
    assert span is not None and span.start_ns == T0_NS + 7 * SEC and span.complete
    assert np.array_equal(span.samples, published_pcm(rain)[1, 7 * RATE:12 * RATE])
    # audio the stream no longer holds (or never did): None
    assert await read_audio(nc, "lake", 0, T0_NS, T0_NS + SEC, after) is None


async def test_the_cursor_reads_the_same_audio_with_fewer_reads(nc: Client, tmp_path: Path
                                                                 ) -> None:
    """Windows read in time order with a cursor: the same samples as a search gives,
    found from where the last read ended; a wrong session or an earlier time is not
    guessed."""
    rain = real_file(MEGAGLEST, RAIN)  # 16 s, two channels, interleaved in the stream
    await Replayer(Publisher(nc.jetstream()), chunk_s=1.0).replay([ReplayItem(rain, "pond", T0)])
    after = datetime.now(UTC)
    cursor = AudioCursor()
    expected = published_pcm(rain)
    for k, (a, b) in enumerate([(0.5, 2.5), (3.2, 5.7), (5.0, 7.0), (11.3, 14.9)]):
        lo, hi = T0_NS + int(a * SEC), T0_NS + int(b * SEC)
        searched = await read_audio(nc, "pond", 1, lo, hi, after, origin_ns=T0_NS)
        guessed = await read_audio(nc, "pond", 1, lo, hi, after, origin_ns=T0_NS,
                                   cursor=cursor)
        assert searched is not None and guessed is not None
        assert guessed.start_ns == searched.start_ns and guessed.complete
        assert np.array_equal(guessed.samples, searched.samples)
        assert np.array_equal(guessed.samples, expected[1, int(a * RATE):int(b * RATE)])
        assert cursor.hits == k  # the first read searches; every later one is guessed
    assert await cursor.seek(nc.jetstream(), "tidzam.audio.pond.1", T0_NS, T0_NS) is None
    assert await cursor.seek(nc.jetstream(), "tidzam.audio.pond.1", T0_NS + 15 * SEC,
                             T0_NS + 1) is None


async def test_the_extractor_gives_way_while_the_classifiers_have_a_backlog(
        nc: Client, tmp_path: Path) -> None:
    """While a classifier durable has more audio waiting than the threshold, the
    extractor fetches nothing; it extracts once the classifier caught up; and a
    backlog that never ends holds it back at most ``max_s`` at a stretch."""
    js = nc.jetstream()
    await Replayer(Publisher(js), chunk_s=1.0).replay(
        [ReplayItem(real_file(MEGAGLEST, RAIN), "pond", T0)])  # 2 × 16 chunks
    durable = classifier_consumer("slow").durable
    await js.add_consumer(AUDIO.name, ConsumerConfig(durable_name=durable,
                                                     ack_policy=AckPolicy.EXPLICIT))
    pub = Publisher(js)
    await pub.publish_now(ExtractionRulesSet(at_ns=1, rules=(
        ExtractionRule(source="pond", classes=("rain",), rate=1.0),)))
    await pub.publish_all([window(2.0, ("rain",), (0.1, 0.8, 0.1)),
                           window(9.0, ("rain",), (0.1, 0.8, 0.1))])
    extractor = Extractor(nc, tmp_path / "samples")
    await extractor.load_rules()
    stop = asyncio.Event()
    give_way = GiveWay(nc, pending=10, stop=stop, poll_s=0.1)
    task = asyncio.create_task(extractor.runner(give_way).run(stop))
    try:
        await asyncio.sleep(1.5)
        assert extractor.stats.seen == 0  # 32 chunks wait for the classifier
        sub = await js.pull_subscribe_bind(durable, stream=AUDIO.name)
        for msg in await sub.fetch(25, timeout=5):  # it catches up to 7 waiting
            await msg.ack()
        await wait_until(lambda: extractor.stats.extracted == 2, 30, "both samples")
        assert give_way.waited_s >= 1.0
    finally:
        stop.set()
        await task
    # 7 waiting, over a threshold of 1, for good: it waits max_s, then lets one batch go
    stubborn = GiveWay(nc, pending=1, stop=asyncio.Event(), max_s=0.5, poll_s=0.1)
    started = time.monotonic()
    await stubborn.wait()
    assert 0.5 <= time.monotonic() - started < 2.0
