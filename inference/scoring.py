"""Run a model folder's TFLite file with LiteRT, and turn scores into a decision.

No TensorFlow import here: the live classifier loads this module.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from ai_edge_litert.interpreter import Interpreter

from inference.features import FeatureParams
from inference.modelfolder import ModelFolder

log = logging.getLogger(__name__)


class Named(Protocol):
    """What names a model's output: its id, version and labels (score order)."""

    @property
    def model_id(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def labels(self) -> tuple[str, ...]: ...


class Model(Named, Protocol):
    """A loaded model: log-mel windows in, full score vectors out (``TfliteModel`` is
    one; so is a ``inference.cascade.Cascade``, and any expert of a cascade)."""

    @property
    def features(self) -> FeatureParams: ...

    def predict(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """features float32 (N, frames, mels) → scores float32 (N, len(labels))."""
        ...


class Scorer(Model, Protocol):
    """A model with its decision rule: what the classifier and ``model compare`` run."""

    def decide(self, scores: npt.NDArray[np.float32]) -> tuple[str, ...]:
        """The decision for one score vector (len(labels),)."""
        ...

F32 = npt.NDArray[np.float32]

UNKNOWN = "unknown"
# Windows per invoke. On a CPU a window costs less in small batches (at 8: 0.083
# ms, at 32: 0.100, at 64: 0.113 with the selector; benchmarks/inference_cost.py),
# so a batch runs as blocks of this many and a rest of 4, 2, 1: never padded.
INVOKE_BATCH = 8
SCORE_EPS = 1e-6  # float32 scores: 0.5 - 0.3 is 0.19999999, which meets a 0.2 margin


class FolderBacked:
    """A model loaded from a folder: its id, version, labels and features are the
    folder's (``TfliteModel``, ``inference.hearing_model.HearingModel``)."""

    folder: ModelFolder

    @property
    def model_id(self) -> str:
        return self.folder.meta.model_id

    @property
    def version(self) -> str:
        return self.folder.meta.version

    @property
    def labels(self) -> tuple[str, ...]:
        return self.folder.labels

    @property
    def features(self) -> FeatureParams:
        return self.folder.params


class TfliteModel(FolderBacked):
    """A loaded model folder: ``predict`` maps log-mel windows to class scores.

    One LiteRT interpreter is kept per batch size seen (the ``cache_sizes`` most
    recent), so alternating batch sizes do not reallocate tensors every call.
    Calls are serialised by a lock: share one instance between threads, or give
    each thread its own for parallelism.
    """

    def __init__(self, folder: ModelFolder | str | Path, num_threads: int = 1,
                 cache_sizes: int = 16) -> None:
        self.folder = folder if isinstance(folder, ModelFolder) else ModelFolder.load(folder)
        self.num_threads = num_threads
        self._model = self.folder.model_path.read_bytes()
        self._cache: OrderedDict[int, tuple[Interpreter, int, int]] = OrderedDict()
        self._cache_sizes = max(1, cache_sizes)
        self._lock = threading.Lock()
        self._interpreter(1)  # fail now, not on the first window, if the file is bad

    def _interpreter(self, n: int) -> tuple[Interpreter, int, int]:
        """The interpreter allocated for batch size ``n`` and its input/output indices."""
        cached = self._cache.get(n)
        if cached is not None:
            self._cache.move_to_end(n)
            return cached
        interp = Interpreter(model_content=self._model, num_threads=self.num_threads)
        inp: dict[str, Any] = interp.get_input_details()[0]
        out: dict[str, Any] = interp.get_output_details()[0]
        interp.resize_tensor_input(inp["index"], [n, *self.features.shape], strict=True)
        interp.allocate_tensors()
        entry = (interp, int(inp["index"]), int(out["index"]))
        self._cache[n] = entry
        if len(self._cache) > self._cache_sizes:
            self._cache.popitem(last=False)
        return entry

    def predict(self, features: F32) -> F32:
        """Scores of a batch: features float32 (N, frames, mels) → float32 (N, n_labels)."""
        x = np.ascontiguousarray(features, dtype=np.float32)
        if x.ndim != 3 or x.shape[1:] != self.features.shape:
            raise ValueError(f"expected features of shape (N, {self.features.shape[0]}, "
                             f"{self.features.shape[1]}), got {x.shape}")
        n = x.shape[0]
        if n == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        scores = np.empty((n, len(self.labels)), dtype=np.float32)
        with self._lock:
            for first, size in invoke_blocks(n):
                interp, i_in, i_out = self._interpreter(size)
                interp.set_tensor(i_in, x[first:first + size])
                interp.invoke()
                scores[first:first + size] = interp.get_tensor(i_out)
        return scores

    def decide(self, scores: F32) -> tuple[str, ...]:
        """The decision for one score vector (n_labels,) with the folder's thresholds."""
        d = self.folder.meta.decision
        return decide(scores, self.labels, d.threshold, d.margin)


def invoke_blocks(n: int) -> list[tuple[int, int]]:
    """(first row, size) of the invokes that score ``n`` windows: ``INVOKE_BATCH``
    at a time, then the rest in powers of two; only a few interpreter sizes are
    ever allocated however batches vary, and no row is padding."""
    blocks = [(i, INVOKE_BATCH) for i in range(0, n - n % INVOKE_BATCH, INVOKE_BATCH)]
    first, rest = n - n % INVOKE_BATCH, n % INVOKE_BATCH
    size = INVOKE_BATCH
    while rest:
        size //= 2
        if rest >= size:
            blocks.append((first, size))
            first, rest = first + size, rest - size
    return blocks


def decide(scores: F32 | Sequence[float], labels: Sequence[str], threshold: float,
           margin: float) -> tuple[str, ...]:
    """The top label if its score ≥ ``threshold`` and beats the runner-up by ≥
    ``margin``, else ``("unknown",)``. Works for any number of labels ≥ 1 (with one
    label the runner-up scores 0). ``scores``: one window, shape (len(labels),)."""
    # plain floats: a few labels are decided faster in Python than through numpy
    s: list[float] = np.asarray(scores, dtype=np.float64).reshape(-1).tolist()
    if len(labels) == 0 or len(s) != len(labels):
        raise ValueError(f"{len(s)} scores for {len(labels)} labels")
    if not all(map(math.isfinite, s)):
        return (UNKNOWN,)
    top = max(range(len(s)), key=s.__getitem__)  # the first of equal maxima
    runner_up = max(s[:top] + s[top + 1:], default=0.0)
    if s[top] >= threshold - SCORE_EPS and s[top] - runner_up >= margin - SCORE_EPS:
        return (labels[top],)
    return (UNKNOWN,)
