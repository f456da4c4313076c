"""The YAMNet-based default selector, live: it hears a window as training heard it,
its folder is checked like any model's, and on a real bus it scores every window of
a real recording exactly once, across chunks and instances."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from nats.aio.client import Client

from audio.decode import decode_file
from bus.publisher import Publisher
from bus.runner import ConsumerRunner
from bus_schemas.streams import classifier_consumer
from consumers.classifier.classifier import Classifier, ModelRefused
from inference.cascade import DEFAULT_GATE, Candidate, Cascade, plan_experts
from inference.features import (
    WAVE_KIND,
    FeatureParams,
    IncompatibleFeatures,
    span_features,
    window_features,
)
from inference.hearing import calibrated
from inference.hearing_model import HearingModel
from inference.loading import load_model
from inference.modelfolder import ModelFolder, ModelFolderError
from inference.registry import DEFAULT_SELECTOR, ModelRegistry, model_files
from inference.scoring import TfliteModel
from inference.yamnet import YamnetFrontEnd
from learning.embeddings.cache import WindowConfig, compute
from producers.replay import Replayer, plan
from tests.audio_files import expected_windows
from tests.bus_reading import count_predictions, read_predictions
from tests.real_audio import MEGAGLEST, RAIN, STORM, real_file

OLD_SELECTOR = DEFAULT_SELECTOR.parent / "selector"


@pytest.fixture(scope="module")
def model() -> HearingModel:
    return HearingModel(DEFAULT_SELECTOR)


def _rain(seconds: float) -> np.ndarray:
    audio, _ = decode_file(real_file(MEGAGLEST, RAIN), 48_000)
    return audio.mean(axis=0)[:round(seconds * 48_000)].astype(np.float32)


def test_the_default_is_the_yamnet_selector_with_calibrated_thresholds(
        model: HearingModel) -> None:
    meta = model.folder.meta
    assert meta.engine == "yamnet-head" and meta.model_id == "selector"
    assert model.features.kind == WAVE_KIND and model.labels[-1] == "quiet"
    assert set(meta.decision.per_class) == set(model.labels[:-1])
    assert meta.crossval is not None and meta.crossval.results["head"].macro_f1 >= 0.75
    assert all(s.recall > 0 for s in meta.crossval.results["head"].per_class.values()
               if s.support)
    manifest = json.loads((DEFAULT_SELECTOR / "corpus.json").read_text())
    assert {f["split"] for f in manifest["files"]} == {"train", "test"}  # the demo's


def test_a_window_is_heard_as_training_heard_it(model: HearingModel) -> None:
    """The live model's frames equal the training cache's frames of the same audio,
    and its score is the calibrated mean of their head scores."""
    audio = _rain(model.features.window_s)
    hearing = model.hearing
    cfg = WindowConfig(hop_s=hearing.frame_hop_s, max_windows=hearing.frames)
    cached = compute(audio, YamnetFrontEnd(), cfg)
    assert cached.starts.tolist() == [i * model.frame_hop for i in range(hearing.frames)]
    frames, levels = model.frame_scores(audio[None])
    from inference.hearing import mapped_scores
    trained = model.head.scores(np.concatenate([cached.embeddings, cached.highband], axis=1),
                                mapped_scores(cached.scores, model.indices))
    assert np.allclose(frames[0], trained, atol=2e-3)
    assert np.allclose(levels[0], cached.rms_db, atol=1e-3)
    scores = model.predict(audio[None])
    assert np.allclose(scores[0, :-1], calibrated(trained.mean(axis=0), model.thresholds),
                       atol=2e-3)
    assert scores[0, -1] == 0.0 and model.decide(scores[0])[0] in STORM


def test_silence_is_quiet_and_nothing_else_reaches_one(model: HearingModel) -> None:
    n = model.features.window_samples
    rng = np.random.default_rng(0)
    windows = np.stack([np.zeros(n, np.float32), (1e-4 * rng.standard_normal(n)),
                        (0.3 * rng.standard_normal(n))]).astype(np.float32)
    scores = model.predict(windows)
    assert scores.shape == (3, len(model.labels)) and scores.dtype == np.float32
    assert [model.decide(s) for s in scores[:2]] == [("quiet",), ("quiet",)]
    assert scores[2, -1] == 0.0 and model.decide(scores[2]) != ("quiet",)
    assert scores[:, :-1].max() < 1.0
    with pytest.raises(ValueError, match="expected windows"):
        model.predict(np.zeros((1, 24_000), np.float32))


def test_wave_features_are_the_windows_samples() -> None:
    params = FeatureParams(kind=WAVE_KIND, window_s=0.001)  # 48 samples
    assert params.shape == (48,)
    signal = np.arange(-100, 100, dtype=np.int16)
    starts = np.array([0, 30, 152])
    got = span_features([(signal, starts), (signal.astype(np.float32) / 32768, starts[:1])],
                        params)
    assert got.shape == (4, 48)
    assert np.allclose(got[1], signal[30:78] / 32768) and np.allclose(got[3], got[0])
    with pytest.raises(ValueError, match="does not fit"):
        span_features([(signal, np.array([153]))], params)
    with pytest.raises(IncompatibleFeatures, match="not supported"):
        FeatureParams.from_dict({"kind": "wave-v9"})


def test_a_log_mel_expert_hears_the_middle_of_the_window(model: HearingModel,
                                                        tmp_path: Path) -> None:
    """The first selector, renamed ``rain``, as an expert under the default one: it
    runs on the log-mel of the middle 0.5 s of the rows whose rain score passes the gate."""
    folder = tmp_path / "rain"
    shutil.copytree(OLD_SELECTOR, folder)
    meta = json.loads((folder / "model.json").read_text())
    meta["model_id"] = "rain"
    (folder / "model.json").write_text(json.dumps(meta))
    expert = TfliteModel(folder)
    cascade = Cascade(model, {"rain": expert})
    n = model.features.window_samples
    windows = np.stack([_rain(model.features.window_s),
                        np.zeros(n, np.float32)])
    scores = cascade.predict(windows)
    assert cascade.labels == (*model.labels, *(f"rain-{x}" for x in expert.labels))
    root = model.predict(windows)
    assert np.allclose(scores[:, :len(model.labels)], root)
    first = (n - expert.features.window_samples) // 2
    heard = expert.predict(window_features(windows[:1, first:first + 24_000],
                                           expert.features))
    assert root[0, 3] >= DEFAULT_GATE and root[1, 3] < DEFAULT_GATE  # rain; silence
    assert np.allclose(scores[0, len(model.labels):], root[0, 3] * heard[0], atol=1e-6)
    assert not scores[1, len(model.labels):].any()
    wide = FeatureParams(window_s=2.5)  # longer than the selector's window: refused
    plan = plan_experts("selector@2", model.labels, model.features,
                        {"rain": Candidate("rain@1", ("a",), wide)})
    assert not plan.order and "window_s 2.5 (selector 1.95)" in plan.problems["rain"]


def _copy(tmp_path: Path) -> Path:
    dest = tmp_path / "selector"
    shutil.copytree(DEFAULT_SELECTOR, dest)
    return dest


def test_the_folder_is_checked_before_it_serves(tmp_path: Path) -> None:
    folder = ModelFolder.load(DEFAULT_SELECTOR)
    assert model_files(folder)[0] == "head.npz"
    registry = ModelRegistry(tmp_path / "registry", builtin_root=None)
    entry, added = registry.add(DEFAULT_SELECTOR)
    assert added and (entry.path / "head.npz").is_file()
    assert isinstance(load_model(entry.path), HearingModel)
    assert isinstance(load_model(OLD_SELECTOR), TfliteModel)

    altered = _copy(tmp_path)
    meta = json.loads((altered / "model.json").read_text())
    meta["hearing"]["front_end"]["sha256"] = "0" * 64
    (altered / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFolderError, match="trained on the front end"):
        load_model(altered)
    meta["hearing"] = None
    (altered / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFolderError, match="says how it hears"):
        ModelFolder.load(altered)

    headless = _copy(tmp_path / "b")
    (headless / "head.npz").unlink()
    with pytest.raises(ModelFolderError, match=r"has no head\.npz"):
        ModelFolder.load(headless)


async def test_every_window_once_on_a_real_recording_across_two_instances(
        nc: Client, model: HearingModel) -> None:
    """16 s of a real storm, stereo, in 0.7 s chunks; two classifiers with the default
    selector share them: every 1.95 s window of the grid scored once, by the model's
    rule, and the running selector refuses a swap to a model of another window."""
    wav = real_file(MEGAGLEST, RAIN)
    await Replayer(Publisher(nc.jetstream()), chunk_s=0.7).replay(plan([wav], source="rain"))
    audio, _ = decode_file(wav, 48_000)
    stop = asyncio.Event()
    classifiers = [Classifier(nc, model, Publisher(nc.jetstream()), overlap=0.25)
                   for _ in range(2)]
    with pytest.raises(ModelRefused, match="window of 24000 samples"):
        classifiers[0].swap(TfliteModel(OLD_SELECTOR))
    hop = classifiers[0].hop
    assert hop == 3 * model.frame_hop  # overlap 0.25: each frame of the grid heard once
    per_channel = expected_windows(audio.shape[1], model.features.window_samples, hop)
    spec = classifier_consumer("selector")
    tasks = [asyncio.create_task(c.consume(ConsumerRunner(nc, spec, c.handle), stop))
             for c in classifiers]
    js = nc.jetstream()
    try:
        async with asyncio.timeout(120):
            while (await count_predictions(js)) < 2 * per_channel:
                await asyncio.sleep(0.1)
            while (await js.consumer_info("AUDIO", spec.durable)).num_ack_pending:
                await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    preds = await read_predictions(nc)
    keys = [(p.channel, p.window_start_ns) for p in preds]
    assert len(keys) == len(set(keys)) == 2 * per_channel
    for ch in (0, 1):
        starts = sorted(p.window_start_ns for p in preds if p.channel == ch)
        assert {b - a for a, b in itertools.pairwise(starts)} == {hop * 10**9 // 48_000}
    for p in preds:
        assert p.labels == model.labels and p.result == model.decide(np.array(p.scores))
    heard = [p.result[0] for p in preds]
    assert sum(h in STORM for h in heard) > len(heard) / 2, heard
