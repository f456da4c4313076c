"""What training writes for TensorBoard (``tensorboard --logdir OUT/tensorboard``).

Keras' own ``TensorBoard`` callback writes the train loss/accuracy per epoch, the
graph and the weight histograms. ``HeldOutStats`` adds, on the held-out windows:

- every ``testing_step`` iterations: ``test/loss`` and ``test/accuracy`` on a random
  held-out batch (the original's testing step);
- every ``stats_step`` iterations, on the whole held-out side: ``test/precision``,
  ``test/recall`` (macro), per-class ``precision/<class>``, ``recall/<class>``, the
  confusion matrix as an image (rows: true class, columns: predicted; row-normalised,
  class order in the ``confusion/labels`` text), the first convolution's feature maps
  of a few windows as images (``feature_maps``), and ``nb_embeddings`` embeddings (the
  pooled features before the classifier) for the projector, in ``projector/``:
  ``embeddings.tsv``, ``metadata.tsv`` (true class per row), ``projector_config.pbtxt``.

The evaluation runs on a plain (not distributed) copy of the model, on the chief
only, so it never enters the workers' collective operations. Training runs on
``tf_keras`` (see ``learning.training.trainer``), so this is a ``tf_keras`` callback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tf_keras as keras

from inference.features import F32

log = logging.getLogger(__name__)

EMBEDDING_LAYER = "embedding"
PROJECTOR_CONFIG = """embeddings {
  tensor_name: "embedding"
  tensor_path: "embeddings.tsv"
  metadata_path: "metadata.tsv"
}
"""


def confusion_image(matrix: npt.NDArray[np.int64], cell: int = 16) -> npt.NDArray[np.float32]:
    """Row-normalised confusion matrix as an RGB image (1, H, W, 3): white = 0, dark
    blue = the whole row; the diagonal is what is right."""
    rows = matrix.sum(axis=1, keepdims=True)
    norm = np.where(rows > 0, matrix / np.maximum(rows, 1), 0.0)
    rgb = np.stack([1 - norm, 1 - norm * 0.8, 1 - norm * 0.3], axis=-1)
    big = np.kron(rgb, np.ones((cell, cell, 1)))
    return big[None].astype(np.float32)


def feature_map_images(maps: F32, windows: int = 4, channels: int = 8) -> F32:
    """(N, frames, mels, C) activations → (windows, H, W, 1) images, ``channels`` maps
    of each window side by side, each scaled to [0, 1]."""
    maps = maps[:windows, :, :, :channels]
    lo = maps.min(axis=(1, 2), keepdims=True)
    hi = maps.max(axis=(1, 2), keepdims=True)
    scaled = (maps - lo) / np.maximum(hi - lo, 1e-6)
    tiles = np.concatenate([scaled[..., k] for k in range(scaled.shape[-1])], axis=2)
    return np.transpose(tiles, (0, 2, 1))[..., None].astype(np.float32)  # mels up


def _run(model: Any, x: F32, batch: int = 256) -> F32:
    """``model`` on ``x``, called directly: ``predict`` inside ``fit``'s callbacks would
    run under the training's distribution strategy, i.e. with collective operations
    the other workers never join."""
    parts = [np.asarray(model(x[i:i + batch], training=False), np.float32)
             for i in range(0, len(x), batch)]
    return np.concatenate(parts) if parts else np.zeros((0,), np.float32)


class HeldOutStats(keras.callbacks.Callback):  # type: ignore[misc]
    """Held-out summaries every ``testing_step`` / ``stats_step`` iterations."""

    def __init__(self, logdir: Path, build: Callable[[], keras.Model], x_test: F32,
                 y_test: npt.NDArray[np.integer[Any]], names: Sequence[str], *,
                 testing_step: int, stats_step: int, nb_embeddings: int, batch_size: int,
                 seed: int = 0, on_test: Callable[[dict[str, float]], None] | None = None,
                 chief: bool = True) -> None:
        super().__init__()
        import tensorflow as tf

        self.tf = tf
        self.logdir = logdir
        self.writer = tf.summary.create_file_writer(str(logdir / "test"))
        self.eval_model = build()
        self.x, self.y = x_test, np.asarray(y_test, np.int64)
        self.names = list(names)
        self.testing_step, self.stats_step = testing_step, stats_step
        self.nb_embeddings, self.batch_size = nb_embeddings, batch_size
        self.rng = np.random.default_rng(seed)
        self.iteration = 0
        self.steps_this_fit = 0  # set before each fit: the iterations it will run
        self.on_test = on_test
        self.last: dict[str, float] = {}
        self.graph_written = False
        # Under MultiWorkerMirroredStrategy, reading the weights (the batch-norm
        # statistics are sync-on-read) is a collective operation: the other workers
        # run this callback too, and read the weights at the same steps, writing nothing.
        self.chief = chief
        # Fit's callbacks run inside the training's strategy scope, where even a summary
        # or a variable becomes a collective op that the other workers never join: the
        # chief's evaluation and writing run on a thread of their own (scopes are
        # per thread), outside it.
        self._outside = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tb-stats")

    # ---------------------------------------------------------------- keras hooks

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self.graph_written or not len(self.x) or not self.chief:
            return
        self._outside.submit(self._write_graph).result()
        self.graph_written = True

    def _write_graph(self) -> None:
        tf = self.tf
        forward = tf.function(lambda x: self.eval_model(x, training=False))
        tf.summary.trace_on(graph=True)
        forward(tf.constant(self.x[:1]))
        with self.writer.as_default():
            tf.summary.trace_export("model", step=0)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        """The end of a ``fit`` (one per epoch): statistics every epoch."""
        self.iteration += self.steps_this_fit
        self.steps_this_fit = 0
        if len(self.x):
            self._sync()
            if self.chief:
                self._outside.submit(self._test_batch).result()
                self._outside.submit(self.full_stats).result()
        self.writer.flush()

    # ---------------------------------------------------------------- summaries

    def _sync(self) -> None:
        weights = self.model.get_weights()
        if self.chief:
            self.eval_model.set_weights(weights)

    def _scores(self, x: F32) -> F32:
        return _run(self.eval_model, x)

    def _test_batch(self) -> None:
        tf = self.tf
        pick = self.rng.choice(len(self.x), size=min(len(self.x), 4 * self.batch_size),
                               replace=False)
        scores = self._scores(self.x[pick])
        truth = self.y[pick]
        loss = float(-np.mean(np.log(scores[np.arange(len(pick)), truth] + 1e-7)))
        acc = float(np.mean(scores.argmax(axis=1) == truth))
        self.last.update({"test_loss": loss, "test_accuracy": acc})
        with self.writer.as_default(step=self.iteration):
            tf.summary.scalar("test/loss", loss)
            tf.summary.scalar("test/accuracy", acc)
        if self.on_test is not None:
            self.on_test(self.last)

    def full_stats(self) -> None:
        from learning.training.metrics import confusion_matrix

        tf = self.tf
        scores = self._scores(self.x)
        predicted = scores.argmax(axis=1)
        m = confusion_matrix(self.y, predicted, len(self.names))
        tp = np.diag(m).astype(np.float64)
        precision = np.divide(tp, m.sum(axis=0), out=np.zeros_like(tp), where=m.sum(axis=0) > 0)
        recall = np.divide(tp, m.sum(axis=1), out=np.zeros_like(tp), where=m.sum(axis=1) > 0)
        present = m.sum(axis=1) > 0
        with self.writer.as_default(step=self.iteration):
            tf.summary.scalar("test/accuracy_all", float(np.trace(m) / max(m.sum(), 1)))
            tf.summary.scalar("test/precision", float(precision[present].mean()))
            tf.summary.scalar("test/recall", float(recall[present].mean()))
            for i, name in enumerate(self.names):
                if present[i]:
                    tf.summary.scalar(f"precision/{name}", float(precision[i]))
                    tf.summary.scalar(f"recall/{name}", float(recall[i]))
            tf.summary.image("confusion", confusion_image(m))
            tf.summary.text("confusion/labels", " | ".join(
                f"{i}: {name}" for i, name in enumerate(self.names)))
            maps = self._feature_maps()
            if maps is not None:
                tf.summary.image("feature_maps", feature_map_images(maps), max_outputs=4)
        self._embeddings()
        self.writer.flush()

    def _feature_maps(self) -> F32 | None:
        convs = [layer for layer in self.eval_model.layers
                 if isinstance(layer, keras.layers.Conv2D)]
        if not convs:
            return None
        probe = keras.Model(self.eval_model.inputs, convs[0].output)
        return _run(probe, self.x[:4])

    def _embeddings(self) -> None:
        try:
            layer = self.eval_model.get_layer(EMBEDDING_LAYER)
        except ValueError:
            return
        n = min(self.nb_embeddings, len(self.x))
        pick = np.sort(self.rng.choice(len(self.x), size=n, replace=False))
        probe = keras.Model(self.eval_model.inputs, layer.output)
        vectors = _run(probe, self.x[pick])
        folder = self.logdir / "projector"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "metadata.tsv").write_text(
            "".join(f"{self.names[int(c)]}\n" for c in self.y[pick]))
        # Vectors as TSV, not a checkpoint: a tf.Variable created here, inside the
        # training's distribution strategy, would be a collective op of the chief alone.
        (folder / "embeddings.tsv").write_text("".join(
            "\t".join(f"{v:.6g}" for v in row) + "\n" for row in vectors.reshape(n, -1)))
        (folder / "projector_config.pbtxt").write_text(PROJECTOR_CONFIG)


class BatchHeldOutStats(HeldOutStats):
    """``HeldOutStats`` also every ``testing_step`` / ``stats_step`` iterations.

    Not with ``ParameterServerStrategy``, which refuses batch-level callbacks: there
    the statistics come at the end of every epoch only.
    """

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.iteration += 1
        self.steps_this_fit -= 1
        if not len(self.x):
            return
        if self.iteration % self.testing_step == 0:
            self._sync()
            if self.chief:
                self._outside.submit(self._test_batch).result()
        if self.iteration % self.stats_step == 0:
            self._sync()
            if self.chief:
                self._outside.submit(self.full_stats).result()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.steps_this_fit = 0
        if len(self.x):
            self._sync()
            if self.chief:
                self._outside.submit(self.full_stats).result()
        self.writer.flush()
