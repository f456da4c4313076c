"""Train the selector from the bootstrap corpus, end to end.

    python -m learning.training.selector --out models/selector

fetches the corpus (``learning.corpus.build``), compiles the windows and the
held-out split (``learning.datasets.compile``, cached as .npz), trains the CNN
(``learning.training.architectures``) with balanced epochs and augmentation, exports a
float32 TFLite model with a dynamic batch dimension, evaluates THAT file with
LiteRT on the held-out windows and writes the model folder
(``inference.modelfolder``).

Supplement (``learning.corpus.packages.SUPPLEMENT_PACKAGES``): recordings of the
rarest classes that join the train side only (``compile_training_set``). The
held-out split is drawn over the default packages alone, so successive selectors
are measured on the same windows, and no supplement file copies a held-out
recording (checked by waveform cross-correlation when the package was added).

Choosing a configuration (``--validate``): the train side loses a validation
split by recording group (``validation_split``), the model trains on the rest and
is scored on it; the held-out side is only read by the final run.

Augmentation (gain, background mixing, band limitation, masks):
``learning.training.augment``; held-out metrics: ``learning.training.metrics``;
the TFLite export and its evaluation: ``learning.training.export``.

TensorFlow is imported inside the functions that need it, so the numpy parts
can be imported and tested without it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from inference.features import FeatureParams
from inference.modelfolder import (
    Decision,
    InputSpec,
    Metrics,
    ModelFolder,
    ModelMeta,
    TrainingData,
    write_model_folder,
)
from learning.corpus.build import build_corpus
from learning.corpus.fetch import default_cache_dir
from learning.corpus.manifest import CorpusManifest
from learning.corpus.packages import DEFAULT_PACKAGES, PACKAGES, SUPPLEMENT_PACKAGES
from learning.datasets.compile import DatasetConfig, build_dataset, dataset_key, pick_test_groups
from learning.datasets.format import DROPPED, QUIET, TEST, TRAIN, CompiledDataset
from learning.training.augment import augmenter_for, balanced_epoch
from learning.training.export import evaluate_folder, export_tflite, framework_versions
from learning.training.metrics import held_out_metrics, metrics_table

log = logging.getLogger(__name__)

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



# ---------------------------------------------------------------- the model folder


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
