"""``tidzam_ctl train``: train a model from compiled datasets, as TidzamTrain did.

    tidzam_ctl train --dataset-train D.npz [--dataset-test T.npz] --out DIR
                     [--model selector] [--training-iterations N | --epochs N]
                     [--testing-step N] [--batchsize 64] [--learning-rate 0.003]
                     [--stats-step N] [--nb-embeddings 50]
                     [--workers h:p,h:p [--ps h:p] --job-type worker|ps --task-index i]

Data: the train side of ``--dataset-train`` (its rows with split 0; all its rows
when ``--dataset-test`` is given), the held-out side from ``--dataset-test`` (every
row) or else the test split of ``--dataset-train`` (held out by recording when the
dataset was split by the dataset tool or compiled from the corpus). Test classes are
matched to train classes by name; a test class the model cannot output is an error.

Training: balanced epochs (``--per-class`` windows of each class drawn per epoch),
the same augmentation as the selector (gain, background mixing from the train
side's rain/wind/water/insects windows, band limitation, masks), Adam with cosine
decay, one iteration = one batch. TensorBoard logs go to ``OUT/tensorboard``
(``learning.training.tensorboard_stats``). Distributed training: ``learning.training.cluster``.

The chief writes the model folder: ``model.tflite`` (float32, dynamic batch),
``model.json`` with held-out metrics of that TFLite file run by LiteRT, and
``dataset.json`` (the datasets it came from, with their sha256 and provenance).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bus_schemas.errors import TidzamError
from inference.modelfolder import (
    Decision,
    InputSpec,
    Metrics,
    ModelFolder,
    ModelMeta,
    TrainingData,
    write_model_folder,
)
from learning.corpus.manifest import sha256_file
from learning.datasets.compile import DatasetConfig
from learning.datasets.format import TEST, TRAIN, CompiledDataset, Windows
from learning.training.cluster import Cluster

log = logging.getLogger(__name__)

DATASET_MANIFEST = "dataset.json"
ARCHITECTURES = ("selector",)


class TrainError(TidzamError, ValueError):
    """The training inputs cannot be used (message says why)."""


@dataclass(frozen=True)
class TrainOptions:
    dataset_train: Path
    out: Path
    dataset_test: Path | None = None
    model: str = "selector"
    model_id: str | None = None  # default: the output folder's name
    version: str = "1.0.0"
    iterations: int | None = None  # batches; None: --epochs balanced epochs
    epochs: int = 40
    per_class: int = 600
    testing_step: int = 50
    batch_size: int = 64
    learning_rate: float = 3e-3
    stats_step: int = 500
    nb_embeddings: int = 50
    width: int = 24
    seed: int = 0
    threshold: float = 0.5
    margin: float = 0.1
    logdir: Path | None = None  # default OUT/tensorboard
    progress: bool = True
    cluster: Cluster = field(default_factory=Cluster)

    @property
    def tensorboard_dir(self) -> Path:
        return self.logdir or self.out / "tensorboard"


# ---------------------------------------------------------------- data


def _load(path: Path, what: str) -> CompiledDataset:
    if not path.is_file():
        raise TrainError(f"{what}: no dataset file {path}")
    try:
        return CompiledDataset.load(path)
    except (OSError, KeyError, ValueError) as exc:
        raise TrainError(f"{what}: {path} is not a compiled dataset ({exc})") from None


def training_data(opts: TrainOptions) -> CompiledDataset:
    """One dataset whose split says train (0) or test (1), in the train labels' order."""
    train = _load(opts.dataset_train, "--dataset-train")
    if opts.dataset_test is None:
        if not train.count(TRAIN):
            raise TrainError(f"{opts.dataset_train} has no train rows (split 0)")
        return train
    test = _load(opts.dataset_test, "--dataset-test")
    if test.params != train.params:
        raise TrainError("the datasets were computed with different feature parameters: "
                         f"{train.params.to_dict()} vs {test.params.to_dict()}")
    unknown = sorted(set(test.label_names) - set(train.label_names))
    if unknown:
        raise TrainError(f"--dataset-test has classes the train dataset lacks: {unknown}")
    remap = np.array([train.label_names.index(n) for n in test.label_names], np.int16)
    tw = test.windows
    windows = Windows.concat([train.windows, Windows(
        tw.features, remap[tw.labels], tw.channel, tw.offset_s, tw.level_db, tw.gain_db)])
    split = np.concatenate([np.full(len(train.windows), TRAIN, np.int8),
                            np.full(len(tw), TEST, np.int8)])
    files = train.files + test.files
    index = np.concatenate([train.file_index, test.file_index + len(train.files)])
    shared = set(train.files) & set(test.files)
    if shared:
        log.warning("%d source file(s) appear in both datasets: the held-out figures "
                    "will be optimistic", len(shared))
    return CompiledDataset(windows, split, index.astype(np.int32), train.label_names, files,
                           train.class_split, train.params)


def dataset_manifest(opts: TrainOptions, ds: CompiledDataset) -> str:
    """``dataset.json``: where the training data came from."""
    entries = [{"role": "train", "path": str(opts.dataset_train.absolute()),
                "sha256": sha256_file(opts.dataset_train)}]
    if opts.dataset_test is not None:
        entries.append({"role": "test", "path": str(opts.dataset_test.absolute()),
                        "sha256": sha256_file(opts.dataset_test)})
    counts = {name: {"train": int(np.count_nonzero((ds.windows.labels == i)
                                                   & (ds.split == TRAIN))),
                     "test": int(np.count_nonzero((ds.windows.labels == i)
                                                  & (ds.split == TEST)))}
              for i, name in enumerate(ds.label_names)}
    return json.dumps({"datasets": entries, "windows_per_class": counts,
                       "source_files_sha256": list(ds.files)}, indent=1) + "\n"


# ---------------------------------------------------------------- training


@dataclass
class Progress:
    """What the progress display shows (updated from Keras callbacks)."""

    total: int
    done: int = 0
    loss: float = float("nan")
    accuracy: float = float("nan")
    test: dict[str, float] = field(default_factory=dict)


def _steps_per_epoch(n_classes: int, opts: TrainOptions) -> int:
    return -(-opts.per_class * n_classes // opts.batch_size)


def _strategy(cluster: Cluster) -> Any:
    """The tf.distribute strategy the cluster flags ask for (TF_CONFIG installed)."""
    import tensorflow as tf

    if cluster.ps:
        cluster.install()
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        return tf.distribute.experimental.ParameterServerStrategy(resolver)
    if len(cluster.workers) > 1:
        cluster.install()
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def fit(ds: CompiledDataset, opts: TrainOptions,
        on_progress: Callable[[Progress], None] | None = None) -> tuple[Any, int]:
    """Train on the train side; returns the trained Keras 3 model (for export) and the
    number of replicas that trained it in sync.

    Training runs on ``tf_keras`` (Keras 2): Keras 3 supports neither the
    parameter-server strategy nor, in this version, ``fit`` across several workers
    (keras-team/keras#18624; its multi-worker ``fit`` fails reducing metrics). The
    weights then move to the same architecture built with Keras 3, and both models'
    scores are compared on held-out windows before export.
    """
    import tf_keras

    from learning.training.architectures import build_selector
    from learning.training.augment import augmenter_for, balanced_epoch
    from learning.training.tensorboard_stats import BatchHeldOutStats, HeldOutStats

    if opts.model not in ARCHITECTURES:
        raise TrainError(f"unknown model {opts.model!r} (known: {', '.join(ARCHITECTURES)})")
    strategy = _strategy(opts.cluster)
    tf_keras.utils.set_random_seed(opts.seed)  # every worker draws the same batches
    rng = np.random.default_rng(opts.seed)
    x, y = ds.side(TRAIN)
    levels = ds.windows.level_db[ds.split == TRAIN]
    n_classes = len(ds.label_names)
    mean, std = float(x.mean()), float(x.std())

    def build(k: Any = tf_keras) -> Any:
        return build_selector(n_classes, ds.params, mean, std, opts.width, k=k)

    per_epoch = _steps_per_epoch(len(np.unique(y)), opts)
    total = opts.iterations or opts.epochs * per_epoch
    with strategy.scope():
        model = build()
        schedule = tf_keras.optimizers.schedules.CosineDecay(opts.learning_rate, total,
                                                             alpha=0.05)
        model.compile(optimizer=tf_keras.optimizers.Adam(schedule),
                      loss=tf_keras.losses.CategoricalCrossentropy(label_smoothing=0.05),
                      metrics=["accuracy"])
    state = Progress(total)

    def batch_done(_batch: int, logs: dict[str, Any] | None) -> None:
        state.done += 1
        for key in ("loss", "accuracy"):
            # parameter-server logs may be pending remote values
            with contextlib.suppress(KeyError, TypeError, ValueError):
                setattr(state, key, float((logs or {})[key]))
        if on_progress is not None:
            on_progress(state)

    def test_done(figures: dict[str, float]) -> None:
        state.test.update(figures)
        if on_progress is not None:
            on_progress(state)

    def epoch_done(_epoch: int, logs: dict[str, Any] | None) -> None:
        state.done += steps
        batch_done(-1, logs)
        state.done -= 1

    per_batch = not opts.cluster.ps  # parameter servers take epoch-level callbacks only
    progress = (tf_keras.callbacks.LambdaCallback(on_train_batch_end=batch_done) if per_batch
                else tf_keras.callbacks.LambdaCallback(on_epoch_end=epoch_done))
    xt, yt = ds.side(TEST)
    logdir = opts.tensorboard_dir
    if not opts.cluster.is_chief:
        # Weight histograms and statistics read the mirrored variables collectively:
        # every worker takes part, the others writing into a scratch folder (TF's advice).
        logdir = Path(tempfile.mkdtemp(prefix="tidzam-worker-tb-"))
    logdir.mkdir(parents=True, exist_ok=True)
    stats = (BatchHeldOutStats if per_batch else HeldOutStats)(
        logdir, build, xt, yt, ds.label_names, testing_step=opts.testing_step,
        stats_step=opts.stats_step, nb_embeddings=opts.nb_embeddings,
        batch_size=opts.batch_size, seed=opts.seed, on_test=test_done,
        chief=opts.cluster.is_chief)
    callbacks: list[Any] = [
        progress,
        tf_keras.callbacks.TensorBoard(str(logdir), histogram_freq=1,
                                       write_graph=not opts.cluster.distributed,
                                       update_freq="epoch"),
        stats,
    ]
    augment = augmenter_for(ds, DatasetConfig().gate_db, rng)
    for epoch in range(math.ceil(total / per_epoch)):
        idx = balanced_epoch(y, opts.per_class, rng)
        steps = min(per_epoch, total - epoch * per_epoch)
        idx = idx[:steps * opts.batch_size]
        stats.steps_this_fit = steps
        xb = augment(x[idx], levels[idx], y[idx])
        yb = tf_keras.utils.to_categorical(y[idx], n_classes)
        if opts.cluster.ps:
            model.fit(_dataset_creator(xb, yb, opts.batch_size), steps_per_epoch=steps,
                      initial_epoch=epoch, epochs=epoch + 1, verbose=0, callbacks=callbacks)
        else:
            model.fit(xb, yb, batch_size=opts.batch_size, initial_epoch=epoch,
                      epochs=epoch + 1, verbose=0, shuffle=False, callbacks=callbacks)
    import keras

    exported = build(keras)
    exported.set_weights(model.get_weights())
    _check_same_scores(build(), model.get_weights(), exported, xt if len(xt) else x)
    return exported, int(strategy.num_replicas_in_sync)


def _dataset_creator(x: Any, y: Any, batch_size: int) -> Any:
    """Parameter-server input: each worker builds the epoch's batches itself."""
    import tensorflow as tf
    import tf_keras

    def make(_context: Any) -> Any:
        return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(batch_size)

    return tf_keras.utils.experimental.DatasetCreator(make)


def _check_same_scores(trained: Any, weights: list[Any], exported: Any, x: Any) -> None:
    """The Keras 3 copy must score like the trained model, or the export is wrong."""
    trained.set_weights(weights)
    probe = x[:64]
    a = trained.predict(probe, verbose=0)
    b = exported.predict(probe, verbose=0)
    if not np.allclose(a, b, atol=1e-4):
        raise RuntimeError("the exported model does not score like the trained one "
                           f"(max difference {float(np.abs(a - b).max()):.2e})")


# ---------------------------------------------------------------- the model folder


@dataclass
class TrainOutcome:
    folder: ModelFolder | None  # None on workers other than the chief
    metrics: Metrics | None
    timings: dict[str, float]
    strategy: str = "default"
    replicas: int = 1


def _meta(opts: TrainOptions, ds: CompiledDataset, metrics: Metrics | None,
          timings: dict[str, float]) -> ModelMeta:
    from learning.training.export import framework_versions

    return ModelMeta(
        model_id=opts.model_id or opts.out.name, version=opts.version,
        labels=list(ds.label_names), features=ds.params.to_dict(),
        decision=Decision(threshold=opts.threshold, margin=opts.margin),
        input=InputSpec(shape=[None, *ds.params.shape], dtype="float32"),
        metrics=metrics,
        training_data=TrainingData(manifest=DATASET_MANIFEST, n_files=len(ds.files),
                                   n_windows_train=ds.count(TRAIN),
                                   n_windows_test=ds.count(TEST), packages={}),
        created=datetime.now(UTC), framework=framework_versions(), timings=timings)


def train(opts: TrainOptions, on_progress: Callable[[Progress], None] | None = None
          ) -> TrainOutcome:
    """Datasets → training → TFLite → held-out metrics → model folder (chief only)."""
    from learning.training.export import evaluate_folder, export_tflite

    start = time.perf_counter()
    ds = training_data(opts)
    log.info("training on %d windows, testing on %d, classes %s", ds.count(TRAIN),
             ds.count(TEST), ", ".join(ds.label_names))
    model, replicas = fit(ds, opts, on_progress)
    timings = {"training_s": round(time.perf_counter() - start, 1)}
    how = opts.cluster.strategy_name
    if not opts.cluster.is_chief:
        return TrainOutcome(None, None, timings, how, replicas)
    tflite = export_tflite(model, ds.params)
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / DATASET_MANIFEST).write_text(dataset_manifest(opts, ds))
    folder = write_model_folder(opts.out, _meta(opts, ds, None, timings), tflite, None)
    metrics: Metrics | None = None
    if ds.count(TEST):
        metrics, ms = evaluate_folder(folder, ds)
        timings["ms_per_window_batch128_1thread"] = round(ms, 4)
    timings["total_s"] = round(time.perf_counter() - start, 1)
    folder = write_model_folder(opts.out, _meta(opts, ds, metrics, timings), tflite, None)
    return TrainOutcome(folder, metrics, timings, how, replicas)
