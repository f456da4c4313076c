"""Training: augmentation and metrics (numpy), the committed model on held-out
recordings of the real corpus, and a tiny end-to-end training run (TensorFlow)."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from audio.decode import decode_file
from inference.features import FeatureParams, frame_windows, window_features
from inference.modelfolder import ModelFolder
from inference.scoring import TfliteModel
from learning.corpus.build import build_corpus
from learning.corpus.manifest import CorpusFile, CorpusManifest
from learning.datasets.compile import DatasetConfig, rms_db
from learning.datasets.format import DROPPED, TEST, TRAIN, CompiledDataset, SourceFile, Windows
from learning.training.augment import Augmenter, balanced_epoch
from learning.training.metrics import held_out_metrics
from learning.training.selector import TrainConfig, compile_training_set, validation_split

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


def _tiny_dataset(labels_per_file: list[str], sides: list[int], names: tuple[str, ...]
                  ) -> tuple[CompiledDataset, CorpusManifest]:
    """Ten windows per file (8 of its class, 2 quiet), file k on side ``sides[k]``."""
    params = FeatureParams()
    n = len(labels_per_file)
    labels = np.concatenate([[names.index(c)] * 8 + [names.index("quiet")] * 2
                             for c in labels_per_file]).astype(np.int16)
    rows = labels.shape[0]
    windows = Windows(np.zeros((rows, *params.shape), np.float32), labels,
                      np.zeros(rows, np.int8), np.zeros(rows, np.float32),
                      np.full(rows, -30.0, np.float32), np.zeros(rows, np.float32))
    shas = tuple(f"{k:064x}" for k in range(n))
    ds = CompiledDataset(windows, np.repeat(np.array(sides, np.int8), 10),
                         np.repeat(np.arange(n, dtype=np.int32), 10), names, shas,
                         {c: "group" for c in names}, params,
                         tuple(SourceFile(label=c) for c in labels_per_file))
    files = [CorpusFile(sha256=sha, label=c, group=f"g{k // 2}" if c == "birds" else f"h{k}",
                        package="p", version="1", path=f"f{k}", licence="GPL-2+",
                        local=f"f{k}")
             for k, (sha, c) in enumerate(zip(shas, labels_per_file, strict=True))]
    manifest = CorpusManifest(created=datetime.now(UTC), classes=list(names), packages={},
                              files=files)
    return ds, manifest


def test_validation_split_holds_out_whole_groups_of_the_train_side_only() -> None:
    names = ("birds", "rain", "frog", "quiet")
    files = ["birds"] * 8 + ["rain"] * 3 + ["frog"] + ["birds", "rain"]
    ds, manifest = _tiny_dataset(files, [TRAIN] * 12 + [TEST, TEST], names)
    val = validation_split(ds, manifest, fraction=0.25, seed=3)
    assert (val.split[ds.split == TEST] == DROPPED).all()  # the held-out side is never used
    assert set(np.unique(val.split[ds.split == TRAIN])) == {TRAIN, TEST}
    side_of_file = {int(k): set(val.split[val.file_index == k].tolist()) for k in range(14)}
    assert all(len(sides) == 1 for sides in side_of_file.values())  # quiet follows its file
    groups = {f.sha256: f.group for f in manifest.files}
    group_sides: dict[str, set[int]] = {}
    for k, sides in side_of_file.items():
        group_sides.setdefault(groups[ds.files[k]], set()).update(sides)
    assert all(len(s) == 1 for s in group_sides.values())  # birds files come in pairs
    assert side_of_file[11] == {TRAIN}  # frog: a single group, not validated
    for c in ("birds", "rain"):
        sides = [side_of_file[k] for k in range(12) if files[k] == c]
        assert {TEST} in sides and {TRAIN} in sides


def test_supplement_joins_the_train_side_and_leaves_the_held_out_side_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import learning.training.selector as train

    names = ("birds", "rain", "quiet")
    base = _tiny_dataset(["birds", "birds", "rain", "rain"], [TRAIN, TEST, TRAIN, TEST], names)
    ds, manifest = _tiny_dataset(["rain", "rain"], [TRAIN, TEST], names)
    shas = ("e" * 64, "f" * 64)  # other content than the base files
    extra = (replace(ds, files=shas), manifest.model_copy(update={"files": [
        f.model_copy(update={"sha256": sha, "package": "extra", "split": side})
        for f, sha, side in zip(manifest.files, shas, ("train", "test"), strict=True)]}))
    monkeypatch.setattr(train, "compile_dataset",
                        lambda cfg: extra if cfg.packages == ("extra",) else base)
    monkeypatch.setattr(train, "build_corpus", lambda _cache, _packages: extra[1])
    ds, manifest = compile_training_set(
        TrainConfig(out=Path("unused"), packages=("p",), supplement=("extra",)))
    n = base[0].split.shape[0]
    np.testing.assert_array_equal(ds.split[:n], base[0].split)
    assert (ds.split[n:] == TRAIN).all() and ds.split.shape[0] == n + 20
    added = [f for f in manifest.files if f.package == "extra"]
    assert [f.split for f in added] == ["train", "train"]
    assert all(f.windows_test == 0 for f in added)


def test_the_command_line_defaults_are_the_default_selector() -> None:
    from learning.training.selector import _parser, config_from_args

    cfg = config_from_args(_parser().parse_args(["--out", "x"]))
    assert cfg == TrainConfig(out=Path("x"), cache=cfg.cache)
    assert cfg.supplement and cfg.supplement[0] not in cfg.packages
    bare = config_from_args(_parser().parse_args(["--out", "x", "--supplement", ""]))
    assert bare.supplement == ()


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
    from learning.training.selector import train_selector

    cfg = TrainConfig(out=tmp_path / "tiny", cache=corpus_cache(),
                      packages=("openttd-opensfx",), classes=("birds", "vehicle"), epochs=1,
                      per_class=64, progress=False, version="0.0.1",
                      supplement=())  # the supplement is tested above, without TensorFlow
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
