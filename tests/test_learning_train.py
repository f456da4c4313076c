"""Training: augmentation and metrics (numpy), the committed model on held-out
recordings of the real corpus, and a tiny end-to-end training run (TensorFlow)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from learning.audio_stream import decode_file
from learning.corpus import CorpusManifest, build_corpus
from learning.dataset import DatasetConfig, rms_db
from learning.features import FeatureParams, frame_windows, window_features
from learning.inference import TfliteModel
from learning.modelfolder import ModelFolder
from learning.train import Augmenter, TrainConfig, balanced_epoch, held_out_metrics

SELECTOR = Path(__file__).resolve().parents[1] / "models" / "selector"
# Test files are taken from the smallest corpus packages that hold some (10-60 MB).
SMALL_PACKAGES = ("openttd-opensfx", "lincity-ng-data", "asterisk-core-sounds-en-wav")


def corpus_cache() -> Path:
    """``$TIDZAM_TEST_CACHE`` or ``tests/.cache`` (which ignores itself in git)."""
    assert shutil.which("apt-get") and shutil.which("dpkg-deb"), \
        "the bootstrap corpus is fetched from Debian packages: apt-get and dpkg-deb are needed"
    env = os.environ.get("TIDZAM_TEST_CACHE")
    base = Path(env) if env else Path(__file__).parent / ".cache"
    base.mkdir(parents=True, exist_ok=True)
    if not env and not (base / ".gitignore").exists():
        (base / ".gitignore").write_text("*\n")
    return base / "corpus"


# ---------------------------------------------------------------- numpy parts


def _augmenter(seed: int = 0) -> Augmenter:
    params = FeatureParams()
    bg = window_features(np.random.default_rng(1).normal(0, 0.01, (4, 24_000))
                         .astype(np.float32), params)
    return Augmenter(params, ("birds", "rain", "quiet"), -50.0, bg,
                     np.full(4, -40.0, np.float32), np.random.default_rng(seed))


def test_gain_augmentation_keeps_quiet_quiet_and_loud_loud() -> None:
    aug = _augmenter()
    levels = np.array([-45.0, -20.0, -55.0, -90.0, -10.0] * 200, np.float32)
    labels = np.array([0, 1, 2, 2, 0] * 200)
    gains = aug.gains_db(levels, labels)
    after = levels + gains
    assert (np.abs(gains) <= 12.0 + 1e-5).all()
    assert (after[labels == 2] <= -52.0 + 1e-4).all()
    assert (after[labels != 2] >= -47.0 - 1e-4).all()
    assert gains.std() > 1.0  # it does vary


def test_augmentation_output_is_finite_log_mel() -> None:
    aug = _augmenter()
    x = window_features(np.random.default_rng(2).normal(0, 0.05, (50, 24_000))
                        .astype(np.float32), FeatureParams())
    labels = np.array([0, 1, 2, 0, 1] * 10)
    out = aug(x, rms_db(np.zeros((50, 10), np.float32)) * 0 - 26.0, labels,
              p_mix=1.0, p_band=1.0, p_mask=1.0)
    assert out.shape == x.shape and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= np.log(1e-6) - 1e-4
    assert not np.allclose(out, x)


def test_balanced_epoch_draws_every_class_equally() -> None:
    labels = np.array([0] * 500 + [1] * 7 + [2] * 60)
    idx = balanced_epoch(labels, 100, np.random.default_rng(0))
    assert np.bincount(labels[idx]).tolist() == [100, 100, 100]
    assert len(set(idx[labels[idx] == 0].tolist())) == 100  # no repeats where not needed


def test_held_out_metrics_on_a_known_confusion() -> None:
    truth = np.array([0, 0, 0, 1, 1, 2])
    scores = np.eye(3, dtype=np.float32)[[0, 0, 1, 1, 1, 1]]
    m = held_out_metrics(scores, truth, ("a", "b", "c"), {"a": "group", "b": "time"})
    assert m.confusion == [[2, 1, 0], [0, 2, 0], [0, 1, 0]]
    assert m.held_out.accuracy == pytest.approx(4 / 6, abs=1e-4)
    b = m.held_out.per_class["b"]
    assert (b.precision, b.recall, b.support, b.split) == (0.5, 1.0, 2, "time")
    assert m.held_out.per_class["c"].f1 == 0.0


# ---------------------------------------------------------------- the committed model


def _file_scores(model: TfliteModel, path: Path) -> np.ndarray:
    """Scores of the loud windows of a file's first channel, cut as the classifier does."""
    params = model.features
    audio, _ = decode_file(path, params.sample_rate)
    signal = audio[0]
    if signal.shape[0] < params.window_samples:
        signal = np.pad(signal, (0, params.window_samples - signal.shape[0]))
    windows = frame_windows(signal, params, params.window_samples // 2)
    windows = windows[rms_db(windows) > DatasetConfig().gate_db]
    return model.predict(window_features(windows, params))


def test_committed_model_recognises_held_out_recordings() -> None:
    folder = ModelFolder.load(SELECTOR)
    manifest = CorpusManifest.load(SELECTOR / "corpus.json")
    held_out = [f for f in manifest.files
                if f.split == "test" and f.label != "quiet" and f.package in SMALL_PACKAGES]
    assert held_out, "corpus.json names no held-out file in the small packages"
    cache = corpus_cache()
    local = build_corpus(cache, sorted({f.package for f in held_out}))
    paths = {f.sha256: cache / f.local for f in local.files}
    model = TfliteModel(folder)
    correct = windows = files_right = files = 0
    for entry in held_out:
        assert entry.sha256 in paths, f"{entry.path} changed in Debian: retrain the selector"
        scores = _file_scores(model, paths[entry.sha256])
        if scores.shape[0] == 0:
            continue
        truth = model.labels.index(entry.label)
        correct += int((scores.argmax(axis=1) == truth).sum())
        windows += scores.shape[0]
        files_right += int(scores.mean(axis=0).argmax() == truth)
        files += 1
    chance = 1.0 / len(model.labels)
    assert windows >= 20
    assert correct / windows > 3 * chance, (correct, windows)
    assert files_right / files > 0.5, (files_right, files)


# ---------------------------------------------------------------- end to end (TensorFlow)


@pytest.mark.train
def test_tiny_training_run_exports_a_working_folder(tmp_path: Path) -> None:
    from learning.train import train_selector

    cfg = TrainConfig(out=tmp_path / "tiny", cache=corpus_cache(),
                      packages=("openttd-opensfx",), classes=("birds", "vehicle"), epochs=1,
                      per_class=64, progress=False, version="0.0.1")
    result = train_selector(cfg)
    folder = ModelFolder.load(tmp_path / "tiny")
    assert folder.labels == ("birds", "vehicle", "quiet")
    assert folder.meta.metrics is not None and folder.meta.training_data is not None
    assert folder.meta.training_data.packages == {"openttd-opensfx": "1.0.3-2"}
    assert result.metrics.confusion == folder.meta.metrics.confusion
    assert sum(map(sum, folder.meta.metrics.confusion)) == \
        folder.meta.training_data.n_windows_test
    scores = TfliteModel(folder).predict(np.full((5, 45, 64), -8.0, np.float32))
    assert scores.shape == (5, 3) and np.isfinite(scores).all()
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-4)
    manifest = CorpusManifest.load(tmp_path / "tiny" / "corpus.json")
    assert {f.split for f in manifest.files} <= {"train", "test", "time"}
    assert all(f.licence == "CC-BY-SA-3.0" for f in manifest.files)
