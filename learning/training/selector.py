"""Train the selector from the bootstrap corpus, end to end.

    python -m learning.training.selector --out models/selector

fetches the corpus (``learning.corpus.build``), compiles the windows and the
held-out split (``learning.datasets.compile``, cached as .npz), trains the CNN
(``learning.training.architectures``) with balanced epochs and augmentation, exports a
float32 TFLite model with a dynamic batch dimension, evaluates THAT file with
LiteRT on the held-out windows and writes the model folder
(``inference.modelfolder``).

Supplement (``corpus.SUPPLEMENT_PACKAGES``): recordings of the rarest classes
that join the train side only (``compile_training_set``). The held-out split is
drawn over the default packages alone, so successive selectors are measured on
the same windows, and no supplement file copies a held-out recording (checked by
waveform cross-correlation when the package was added).

Choosing a configuration (``--validate``): the train side loses a validation
split by recording group (``validation_split``), the model trains on the rest and
is scored on it; the held-out side is only read by the final run.

Augmentation, in the log-mel power domain (numpy, per epoch):
- gain ±12 dB, clamped so a loud window stays above the energy gate and a quiet
  window stays below it (quiet is a level, it must stay distinguishable);
- mixing with a background window (rain, wind, water, insects) 9–24 dB under
  the foreground, label unchanged;
- band limitation (a low-pass at a random mel band with the noise floor
  above it), since part of the corpus is 8–22 kHz audio;
- one time and one frequency mask (SpecAugment).

TensorFlow is imported inside the functions that need it, so the numpy parts
(augmentation, metrics) can be imported and tested without it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from inference.features import F32, FeatureParams, window_features
from inference.modelfolder import (
    ClassMetrics,
    Decision,
    HeldOut,
    InputSpec,
    Metrics,
    ModelFolder,
    ModelMeta,
    TrainingData,
    write_model_folder,
)
from learning.corpus.build import (
    DEFAULT_PACKAGES,
    PACKAGES,
    SUPPLEMENT_PACKAGES,
    CorpusManifest,
    build_corpus,
    default_cache_dir,
)
from learning.datasets.compile import (
    DROPPED,
    QUIET,
    TEST,
    TRAIN,
    CompiledDataset,
    DatasetConfig,
    build_dataset,
    dataset_key,
    pick_test_groups,
)

log = logging.getLogger(__name__)

I64 = npt.NDArray[np.int64]
BACKGROUND_CLASSES = ("rain", "wind", "water", "insects")
SPLIT_DESCRIPTION = (
    "held out by recording group (content hash, or one source/speaker/recording shared by "
    "several files; same-recording files merged by envelope correlation); a class with a "
    "single group is split in time with a one-window gap (split 'time')"
)

VALIDATION_DESCRIPTION = (
    "validation: recording groups of the train side held out by validation_split; the "
    "held-out side is not used"
)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (the CLI fills it)."""

    out: Path
    cache: Path = field(default_factory=default_cache_dir)
    packages: tuple[str, ...] = DEFAULT_PACKAGES
    supplement: tuple[str, ...] = SUPPLEMENT_PACKAGES  # train side only, never held out
    classes: tuple[str, ...] | None = None
    epochs: int = 60
    per_class: int = 600  # windows drawn per class per epoch (balanced epochs)
    batch_size: int = 64
    learning_rate: float = 3e-3
    width: int = 32
    seed: int = 0
    threads: int = 0  # TensorFlow CPU threads, 0 = its default
    model_id: str = "selector"
    version: str = "1.1.0"
    threshold: float = 0.5
    margin: float = 0.1
    progress: bool = True
    dataset: DatasetConfig = field(default_factory=DatasetConfig)


# ---------------------------------------------------------------- augmentation


class Augmenter:
    """Label-preserving changes to log-mel windows, in the power domain.

    ``features`` are float32 (N, frames, mels) log-mel values (``log(power +
    floor)``); ``levels`` their RMS levels in dBFS; ``labels`` class indices.
    """

    def __init__(self, params: FeatureParams, names: Sequence[str], gate_db: float,
                 background: F32, background_db: F32, rng: np.random.Generator) -> None:
        self.floor = np.float32(params.log_floor)
        self.quiet = names.index(QUIET) if QUIET in names else -1
        self.gate_db = gate_db
        self.background = self.power(background)  # (B, frames, mels) real ambient windows
        self.background_db = background_db  # (B,) their RMS levels, dBFS
        self.rng = rng
        noise = rng.standard_normal((8, params.window_samples)).astype(np.float32)
        self.white = np.exp(window_features(noise, params)).mean(axis=(0, 1))  # 0 dBFS, (mels,)

    def power(self, features: F32) -> F32:
        return np.maximum(np.exp(features) - self.floor, 0.0).astype(np.float32)

    def log(self, power: F32) -> F32:
        out: F32 = np.log(power + self.floor).astype(np.float32)
        return out

    def gains_db(self, levels: F32, labels: npt.NDArray[np.integer[Any]]) -> F32:
        """Random ±12 dB gains that keep loud windows above the gate (+3 dB) and
        quiet ones below it (−2 dB)."""
        is_quiet = labels == self.quiet
        lo = np.where(is_quiet, -12.0, np.maximum(-12.0, self.gate_db + 3.0 - levels))
        hi = np.where(is_quiet, np.minimum(12.0, self.gate_db - 2.0 - levels),
                      np.minimum(12.0, -6.0 - levels))
        hi = np.maximum(hi, lo)
        return self.rng.uniform(lo, hi).astype(np.float32)

    def __call__(self, features: F32, levels: F32, labels: npt.NDArray[np.integer[Any]],
                 p_mix: float = 0.3, p_band: float = 0.2, p_mask: float = 0.3) -> F32:
        n = features.shape[0]
        gains = self.gains_db(levels, labels)
        power = self.power(features) * (10.0 ** (gains / 10.0))[:, None, None]
        draws = self.rng.random((3, n))
        mix = np.flatnonzero((labels != self.quiet) & (draws[0] < p_mix))
        if mix.size and self.background.shape[0]:
            power[mix] += self._backgrounds(mix.size, levels[mix] + gains[mix])
        band = np.flatnonzero(draws[1] < p_band)
        if band.size:
            power[band] = self._band_limit(power[band])
        mask = np.flatnonzero(draws[2] < p_mask)
        if mask.size:
            power[mask] = self._masks(power[mask])
        return self.log(power)

    def _backgrounds(self, n: int, fg_levels: F32) -> F32:
        """``n`` background windows scaled 9–24 dB under the given foreground levels."""
        pick = self.rng.integers(0, self.background.shape[0], n)
        bg = self.background[pick]
        rel = self.rng.uniform(-24.0, -9.0, n)
        scale = 10.0 ** ((fg_levels + rel - self.background_db[pick]) / 10.0)
        return (bg * scale[:, None, None]).astype(np.float32)

    def _band_limit(self, power: F32) -> F32:
        """Low-pass at a random mel band (40 dB down) over a −90..−70 dBFS noise floor."""
        n, _, mels = power.shape
        cut = self.rng.integers(mels * 3 // 8, mels - 4, n)
        floor_db = self.rng.uniform(-90.0, -70.0, n)
        above = np.arange(mels)[None, :] >= cut[:, None]  # (n, mels)
        noise = self.white[None, :] * (10.0 ** (floor_db / 10.0))[:, None]
        limited = power * 1e-4 + noise[:, None, :]
        return np.where(above[:, None, :], limited, power).astype(np.float32)

    def _masks(self, power: F32) -> F32:
        """One time mask (≤ 6 frames) and one frequency mask (≤ 6 bands), filled with
        each band's quietest value in the window."""
        out = power.copy()
        n, frames, mels = power.shape
        fill = power.min(axis=1)  # (n, mels)
        for i in range(n):
            t0, tw = self.rng.integers(0, frames), self.rng.integers(1, 7)
            f0, fw = self.rng.integers(0, mels), self.rng.integers(1, 7)
            out[i, t0:t0 + tw, :] = fill[i]
            out[i, :, f0:f0 + fw] = fill[i, f0:f0 + fw]
        return out


def balanced_epoch(labels: npt.NDArray[np.integer[Any]], per_class: int,
                   rng: np.random.Generator) -> I64:
    """Indices of one epoch: ``per_class`` windows of every class present (drawn
    with replacement only where a class has fewer), shuffled."""
    picks = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        picks.append(rng.choice(idx, size=per_class, replace=idx.size < per_class))
    order: I64 = rng.permutation(np.concatenate(picks)).astype(np.int64)
    return order


# ---------------------------------------------------------------- metrics


def confusion_matrix(truth: npt.NDArray[np.integer[Any]], predicted: npt.NDArray[np.integer[Any]],
                     n_classes: int) -> npt.NDArray[np.int64]:
    """``m[i, j]`` = windows of true class i predicted as j."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (truth.astype(np.int64), predicted.astype(np.int64)), 1)
    return m


def held_out_metrics(scores: F32, truth: npt.NDArray[np.integer[Any]],
                     names: Sequence[str], class_split: dict[str, str]) -> Metrics:
    """Accuracy, per-class precision/recall/F1/support and the confusion matrix of
    held-out scores (N, n_classes) against true class indices (N,)."""
    m = confusion_matrix(truth, scores.argmax(axis=1), len(names))
    per_class = {}
    recalls = []
    for i, name in enumerate(names):
        tp, support, predicted = int(m[i, i]), int(m[i].sum()), int(m[:, i].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        if support:
            recalls.append(recall)
        per_class[name] = ClassMetrics(
            precision=round(precision, 4), recall=round(recall, 4), f1=round(f1, 4),
            support=support, split="time" if class_split.get(name) == "time" else "group")
    total = int(m.sum())
    held_out = HeldOut(
        accuracy=round(float(np.trace(m)) / total, 4) if total else 0.0,
        balanced_accuracy=round(float(np.mean(recalls)), 4) if recalls else None,
        per_class=per_class)
    return Metrics(split=SPLIT_DESCRIPTION, held_out=held_out, confusion=m.tolist())


def metrics_table(metrics: Metrics) -> str:
    """A plain-text per-class table of held-out metrics."""
    rows = [f"{'class':<9} {'prec':>6} {'recall':>6} {'f1':>6} {'support':>8}  split"]
    for name, c in metrics.held_out.per_class.items():
        rows.append(f"{name:<9} {c.precision:6.3f} {c.recall:6.3f} {c.f1:6.3f} "
                    f"{c.support:8d}  {c.split}")
    h = metrics.held_out
    rows.append(f"accuracy {h.accuracy:.3f}, balanced accuracy {h.balanced_accuracy}")
    return "\n".join(rows)


# ---------------------------------------------------------------- model selection


def validation_split(ds: CompiledDataset, manifest: CorpusManifest, fraction: float = 0.2,
                     seed: int = 1) -> CompiledDataset:
    """``ds`` for choosing a configuration: part of its TRAIN side, by recording group,
    becomes the TEST side (the validation windows) and its real test side is dropped,
    so that a choice never looks at the held-out recordings.

    Per class, the train-side groups (``manifest``'s merged groups) are drawn as the
    dataset draws its test side; a class with a single train group stays whole on
    the train side (not validated). Quiet windows follow their recording.
    """
    group_of = {f.sha256: (f.group, f.label) for f in manifest.files}
    file_group = [group_of.get(sha, (sha, p.label)) for sha, p in zip(ds.files, ds.provenance,
                                                                     strict=True)]
    names = ds.label_names
    by_class: dict[str, dict[str, int]] = {}
    train = ds.split == TRAIN
    for k, (group, label) in enumerate(file_group):
        mine = train & (ds.file_index == k) & (ds.windows.labels == names.index(label)) \
            if label in names else np.zeros_like(train)
        groups = by_class.setdefault(label, {})
        groups[group] = groups.get(group, 0) + int(np.count_nonzero(mine))
    held: set[str] = set()
    cfg = DatasetConfig(test_fraction=fraction, seed=seed)
    for label, groups in by_class.items():
        groups = {g: n for g, n in groups.items() if n}
        if len(groups) > 1:
            held |= pick_test_groups(label, groups, cfg)
    row_held = np.array([g in held for g, _ in file_group] or [False])[ds.file_index]
    split = np.where(train, np.where(row_held, TEST, TRAIN), DROPPED).astype(np.int8)
    return replace(ds, split=split)


# ---------------------------------------------------------------- training (TensorFlow)


def compile_dataset(cfg: TrainConfig) -> tuple[CompiledDataset, CorpusManifest]:
    """The corpus, windowed and split; cached under ``<cache>/datasets`` by content key."""
    manifest = build_corpus(cfg.cache, cfg.packages)
    params = FeatureParams()
    key = dataset_key(manifest, params, cfg.dataset, cfg.classes)
    npz = cfg.cache / "datasets" / f"selector-{key}.npz"
    corpus_json = npz.with_name(npz.stem + ".corpus.json")
    if npz.is_file() and corpus_json.is_file():
        log.info("using the compiled dataset %s", npz)
        return CompiledDataset.load(npz), CorpusManifest.load(corpus_json)
    dataset, manifest = build_dataset(manifest, cfg.cache, params, cfg.dataset, cfg.classes,
                                      progress=cfg.progress)
    npz.parent.mkdir(parents=True, exist_ok=True)
    dataset.save(npz)
    manifest.save(corpus_json)
    return dataset, manifest


def compile_training_set(cfg: TrainConfig) -> tuple[CompiledDataset, CorpusManifest]:
    """``compile_dataset`` of ``cfg.packages``, plus every window of the
    ``cfg.supplement`` packages on the train side.

    The held-out side is the one drawn over ``cfg.packages`` alone, so models
    trained with and without a supplement are measured on the same windows. A
    supplement file whose content is already in the corpus is left out.
    """
    from learning.datasets.operations import merge

    ds, manifest = compile_dataset(cfg)
    extra = tuple(p for p in cfg.supplement if p not in cfg.packages)
    wanted = set(cfg.classes or ds.label_names) - {QUIET}
    if not extra or not any(f.label in wanted for f in build_corpus(cfg.cache, extra).files):
        return ds, manifest
    other, other_manifest = compile_dataset(replace(cfg, packages=extra))
    other = replace(other, split=np.full_like(other.split, TRAIN))
    merged, report = merge(ds, other)
    # merge() moves a recording found on both sides to the train side; the corpus's
    # one time-split recording (Asterisk's silence, quiet) must keep its test windows.
    split = merged.split.copy()
    split[:ds.split.shape[0]] = ds.split
    merged = replace(merged, split=split)
    if report.new_classes:
        raise ValueError(f"the supplement {', '.join(extra)} brings classes "
                         f"{report.new_classes} that the held-out side cannot measure")
    known = set(ds.files)
    added = [f.model_copy(update={"split": "train", "time_split_s": None,
                                  "windows_train": f.windows_train + f.windows_test,
                                  "windows_test": 0})
             for f in other_manifest.files if f.sha256 not in known]
    log.info("supplement %s: %d files, %d windows on the train side", ", ".join(extra),
             report.files, report.windows)
    return merged, manifest.model_copy(update={
        "files": [*manifest.files, *added],
        "packages": {**manifest.packages, **other_manifest.packages},
        "excluded": [*manifest.excluded, *other_manifest.excluded]})


def augmenter_for(ds: CompiledDataset, gate_db: float, rng: np.random.Generator) -> Augmenter:
    """The augmentation of ``ds``'s train side, its backgrounds drawn from the train
    windows of the background classes (never attenuated quiet copies)."""
    names = ds.label_names
    bg_ids = [names.index(c) for c in BACKGROUND_CLASSES if c in names]
    pool = (ds.split == TRAIN) & np.isin(ds.windows.labels, bg_ids) & (ds.windows.gain_db == 0)
    return Augmenter(ds.params, names, gate_db, ds.windows.features[pool],
                     ds.windows.level_db[pool], rng)


def fit_selector(ds: CompiledDataset, cfg: TrainConfig) -> Any:
    """Train the selector on the train side with balanced, augmented epochs."""
    import keras
    from rich.progress import Progress

    from learning.training.architectures import build_selector

    keras.utils.set_random_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    x, y = ds.side(TRAIN)
    levels = ds.windows.level_db[ds.split == TRAIN]
    n_classes = len(ds.label_names)
    model = build_selector(n_classes, ds.params, float(x.mean()), float(x.std()), cfg.width)
    steps = cfg.epochs * -(-cfg.per_class * len(np.unique(y)) // cfg.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, steps, alpha=0.05)
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.05),
                  metrics=["accuracy"])
    augment = augmenter_for(ds, cfg.dataset.gate_db, rng)
    with Progress(disable=not cfg.progress) as bar:
        task = bar.add_task("training", total=cfg.epochs)
        for epoch in range(cfg.epochs):
            idx = balanced_epoch(y, cfg.per_class, rng)
            xb = augment(x[idx], levels[idx], y[idx])
            yb = keras.utils.to_categorical(y[idx], n_classes)
            hist = model.fit(xb, yb, batch_size=cfg.batch_size, epochs=1, verbose=0,
                             shuffle=False).history
            bar.update(task, advance=1, description=(
                f"epoch {epoch + 1}/{cfg.epochs} loss {hist['loss'][-1]:.3f} "
                f"acc {hist['accuracy'][-1]:.3f}"))
            log.debug("epoch %d: %s", epoch + 1, hist)
    return model


def export_tflite(model: Any, params: FeatureParams) -> bytes:
    """Float32 TFLite of ``model`` with a dynamic batch: input (None, frames, mels).

    Through a SavedModel: converting a traced function of a Keras 3 model directly
    leaves its weights as uninitialised resource variables (NaN scores).
    """
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="tidzam-export-") as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)
        tflite: bytes = tf.lite.TFLiteConverter.from_saved_model(tmp).convert()
    _check_dynamic_batch(tflite, params)
    return tflite


def _check_dynamic_batch(tflite: bytes, params: FeatureParams) -> None:
    from ai_edge_litert.interpreter import Interpreter

    signature = list(Interpreter(model_content=tflite).get_input_details()[0]["shape_signature"])
    if signature != [-1, *params.shape]:
        raise RuntimeError(f"exported input shape {signature}, expected [-1, *{params.shape}]")


def framework_versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {"tensorflow": tf.__version__, "keras": keras.__version__,
            "ai_edge_litert": importlib.metadata.version("ai-edge-litert"),
            "numpy": np.__version__, "python": platform.python_version()}


# ---------------------------------------------------------------- the model folder


def evaluate_folder(folder: ModelFolder, ds: CompiledDataset, threads: int = 1
                    ) -> tuple[Metrics, float]:
    """Held-out metrics of the exported TFLite file (LiteRT, as the classifier runs it;
    ``decided_fraction``: windows the decision rule does not call ``unknown``) and the
    inference time in ms per window (batches of 128, one thread)."""
    from inference.scoring import TfliteModel, decide

    model = TfliteModel(folder, num_threads=threads)
    x, y = ds.side(TEST)
    scores = np.concatenate([model.predict(x[i:i + 128]) for i in range(0, len(x), 128)]) \
        if len(x) else np.zeros((0, len(ds.label_names)), np.float32)
    metrics = held_out_metrics(scores, y, ds.label_names, ds.class_split)
    d = folder.meta.decision
    decided = [decide(s, ds.label_names, d.threshold, d.margin) != ("unknown",) for s in scores]
    held_out = metrics.held_out.model_copy(
        update={"decided_fraction": round(float(np.mean(decided)), 4) if decided else None})
    metrics = metrics.model_copy(update={"held_out": held_out})
    bench = TfliteModel(folder, num_threads=1)
    batch = np.resize(x, (128, *ds.params.shape)) if len(x) else \
        np.zeros((128, *ds.params.shape), np.float32)
    bench.predict(batch)
    start = time.perf_counter()
    for _ in range(10):
        bench.predict(batch)
    ms = (time.perf_counter() - start) / 10 / 128 * 1e3
    return metrics, ms


def _meta(cfg: TrainConfig, ds: CompiledDataset, manifest: CorpusManifest,
          metrics: Metrics | None, timings: dict[str, float]) -> ModelMeta:
    return ModelMeta(
        model_id=cfg.model_id, version=cfg.version, labels=list(ds.label_names),
        features=ds.params.to_dict(),
        decision=Decision(threshold=cfg.threshold, margin=cfg.margin),
        input=InputSpec(shape=[None, *ds.params.shape], dtype="float32"),
        metrics=metrics,
        training_data=TrainingData(
            manifest="corpus.json", n_files=len(manifest.files),
            n_windows_train=ds.count(TRAIN), n_windows_test=ds.count(TEST),
            packages={name: info.version for name, info in manifest.packages.items()}),
        created=datetime.now(UTC), framework=framework_versions(), timings=timings)


@dataclass
class TrainResult:
    folder: ModelFolder
    metrics: Metrics
    timings: dict[str, float]


def train_selector(cfg: TrainConfig) -> TrainResult:
    """Corpus → dataset → training → TFLite → held-out metrics → model folder."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    ds, manifest = compile_training_set(cfg)
    timings["corpus_and_dataset_s"] = round(time.perf_counter() - start, 1)
    log.info("dataset: %d train / %d test windows, classes %s", ds.count(TRAIN),
             ds.count(TEST), ", ".join(ds.label_names))
    mark = time.perf_counter()
    model = fit_selector(ds, cfg)
    timings["training_s"] = round(time.perf_counter() - mark, 1)
    tflite = export_tflite(model, ds.params)
    manifest_json = manifest.model_dump_json(indent=1, by_alias=True) + "\n"
    folder = write_model_folder(cfg.out, _meta(cfg, ds, manifest, None, timings), tflite,
                                manifest_json)
    metrics, ms = evaluate_folder(folder, ds)
    timings["ms_per_window_batch128_1thread"] = round(ms, 4)
    timings["total_s"] = round(time.perf_counter() - start, 1)
    folder = write_model_folder(cfg.out, _meta(cfg, ds, manifest, metrics, timings), tflite,
                                None)
    return TrainResult(folder, metrics, timings)


# ---------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    d = TrainConfig(out=Path())
    p = argparse.ArgumentParser(
        prog="python -m learning.training.selector",
        description="Train the Tidzam selector from the Debian bootstrap corpus: fetch the "
                    "corpus, compile windows and the held-out split, train, export TFLite, "
                    "evaluate it and write the model folder.")
    p.add_argument("--out", type=Path, required=True, help="model folder to write")
    p.add_argument("--cache", type=Path, default=None,
                   help="corpus cache (default $TIDZAM_HOME/corpus)")
    p.add_argument("--packages", default=",".join(d.packages),
                   help=f"comma-separated corpus packages (known: {', '.join(PACKAGES)})")
    p.add_argument("--supplement", default=",".join(d.supplement),
                   help="comma-separated packages whose recordings only train, never held "
                        "out ('' for none)")
    p.add_argument("--classes", default=None,
                   help="comma-separated subset of classes (quiet is always kept)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--per-class", type=int, default=d.per_class,
                   help="windows per class per epoch")
    p.add_argument("--width", type=int, default=d.width, help="CNN width (first layer filters)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=0, help="TensorFlow threads (0: default)")
    p.add_argument("--version", default=d.version, help="semantic version of the model")
    p.add_argument("--validate", action="store_true",
                   help="choose a configuration: train without a validation split carved "
                        "from the train side by recording group, print its metrics on it "
                        "and write nothing (the held-out side is not looked at)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    cfg = TrainConfig(out=args.out, epochs=args.epochs, per_class=args.per_class, width=args.width,
                      seed=args.seed, threads=args.threads, version=args.version,
                      progress=not args.no_progress,
                      packages=tuple(p for p in args.packages.split(",") if p),
                      supplement=tuple(p for p in args.supplement.split(",") if p),
                      dataset=DatasetConfig(seed=args.seed))
    if args.cache is not None:
        cfg = replace(cfg, cache=args.cache)
    if args.classes:
        cfg = replace(cfg, classes=tuple(c for c in args.classes.split(",") if c))
    return cfg


def validate_selector(cfg: TrainConfig) -> tuple[Metrics, dict[str, float]]:
    """Metrics of ``cfg`` trained without its validation split (``validation_split``),
    on that split: Keras scores, nothing exported or written."""
    ds, manifest = compile_training_set(cfg)
    val = validation_split(ds, manifest)
    start = time.perf_counter()
    model = fit_selector(val, cfg)
    timings = {"training_s": round(time.perf_counter() - start, 1)}
    x, y = val.side(TEST)
    scores = model.predict(x, batch_size=256, verbose=0)
    metrics = held_out_metrics(scores, y, val.label_names, val.class_split)
    return metrics.model_copy(update={"split": VALIDATION_DESCRIPTION}), timings


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(message)s", handlers=[RichHandler(show_path=False)])
    cfg = config_from_args(args)
    if cfg.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(cfg.threads)
    if args.validate:
        metrics, timings = validate_selector(cfg)
    else:
        result = train_selector(cfg)
        metrics, timings = result.metrics, result.timings
    if args.json:
        print(json.dumps({"metrics": metrics.model_dump(), "timings": timings}))
        return 0
    if args.validate:
        print("validation split of the train side (not the held-out recordings):")
    print(metrics_table(metrics))
    if not args.validate:
        print(f"decided (not unknown): {metrics.held_out.decided_fraction}")
    print("timings:", ", ".join(f"{k} {v}" for k, v in timings.items()))
    if not args.validate:
        print(f"model folder: {result.folder.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
