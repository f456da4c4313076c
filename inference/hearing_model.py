"""The YAMNet-based selector, live: a model folder of the ``yamnet-head`` engine.

A window (``wave-v1`` features: its 48 kHz samples) is ``frames`` YAMNet frames of
0.975 s, ``frame_hop_s`` apart (the default model: three frames half a frame apart,
a 1.95 s window). Each frame is heard as in training (``learning.embeddings.cache``):
the window resampled to 16 kHz at once and cut into frames, YAMNet's embedding and
AudioSet scores, the high-band shares at 48 kHz; the head (``inference.hearing``)
scores every frame, and the window's score of a class is the mean over its frames:
that is the temporal smoothing, each decision made over the window's neighbouring
frames. With the stack's default overlap of 0.25 a 1.95 s window's hop is 1.4625 s,
three frame hops: every frame of the grid is computed exactly once.

The scores published are calibrated (``inference.hearing.calibrated``): each class's
threshold from ``model.json`` moved to 0.5, so the usual decision (``decide``,
threshold 0.5, margin 0) picks the class that passes its threshold by the most.
``quiet`` scores 1 when the middle frame is below the energy gate, else 0; the other
scores stay below 1, so a quiet window is always decided ``quiet``.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt

from inference.features import WAVE_KIND, FeatureParams
from inference.hearing import (
    WINDOW_48K,
    HeadWeights,
    calibrated,
    highband,
    mapped_scores,
    mapping_indices,
    rms_db,
)
from inference.modelfolder import Hearing, ModelFolder, ModelFolderError
from inference.scoring import FolderBacked, decide
from inference.yamnet import (
    DEFAULT_FOLDER,
    FRAME_SAMPLES,
    FrontEndError,
    YamnetFrontEnd,
    to_16k,
)

F32 = npt.NDArray[np.float32]

QUIET = "quiet"
RATE = 48_000
BELOW_ONE = np.float32(1.0 - 1e-6)  # the highest score a class other than quiet gets
FRONT_ENDS_ROOT = DEFAULT_FOLDER.parent


def window_s(frames: int, frame_hop_s: float) -> float:
    """The window that holds ``frames`` YAMNet frames ``frame_hop_s`` apart."""
    return round(WINDOW_48K / RATE + (frames - 1) * frame_hop_s, 6)


def feature_params(hearing: Hearing) -> FeatureParams:
    """The ``wave-v1`` parameters of a model that hears this way."""
    return FeatureParams(kind=WAVE_KIND, sample_rate=RATE,
                         window_s=window_s(hearing.frames, hearing.frame_hop_s))


class HearingModel(FolderBacked):
    """A loaded ``yamnet-head`` folder: ``predict`` maps windows (N, samples) to
    calibrated scores (N, len(labels)). Calls are serialised by a lock (one YAMNet
    interpreter)."""

    def __init__(self, folder: ModelFolder | str | Path, num_threads: int = 1) -> None:
        self.folder = folder if isinstance(folder, ModelFolder) else ModelFolder.load(folder)
        meta = self.folder.meta
        if meta.engine != "yamnet-head" or meta.hearing is None:
            raise ModelFolderError(f"{self.folder.path} is not a yamnet-head model")
        self.hearing = meta.hearing
        if self.folder.params != feature_params(self.hearing):
            raise ModelFolderError(f"{self.folder.path}: features {self.folder.params} do not "
                                   f"match how it hears ({self.hearing})")
        if QUIET not in meta.labels or meta.labels[-1] != QUIET:
            raise ModelFolderError(f"{self.folder.path}: the last label must be {QUIET!r}")
        self.classes = tuple(meta.labels[:-1])
        front = FRONT_ENDS_ROOT / self.hearing.front_end.folder
        try:
            self.front_end = YamnetFrontEnd(front, num_threads=num_threads)
        except FrontEndError as exc:
            raise ModelFolderError(f"{self.folder.path}: its front end: {exc}") from exc
        if self.front_end.meta.sha256 != self.hearing.front_end.sha256:
            raise ModelFolderError(
                f"{self.folder.path} was trained on the front end {self.hearing.front_end.sha256}"
                f", {front} holds {self.front_end.meta.sha256}")
        self.head = HeadWeights.load(self.folder.model_path)
        if self.head.wm.shape != (len(self.classes), len(self.classes)):
            raise ModelFolderError(f"{self.folder.model_path}: a head for "
                                   f"{self.head.wm.shape[0]} classes, not {len(self.classes)}")
        missing = [c for c in self.classes if c not in meta.decision.per_class]
        if missing:
            raise ModelFolderError(f"{self.folder.path}: no calibrated threshold for {missing}")
        self.thresholds = np.array([meta.decision.per_class[c] for c in self.classes],
                                   dtype=np.float32)
        self.indices = mapping_indices(self.classes, self.front_end.labels)
        self.frame_hop = round(self.hearing.frame_hop_s * RATE)
        self._lock = threading.Lock()

    def frame_scores(self, windows: F32) -> tuple[F32, F32]:
        """Head scores of every frame (N, frames, K) and each frame's level (N, frames)."""
        n, k = windows.shape[0], self.hearing.frames
        step = RATE // 16_000
        # the k frames of each window as a view (n, k, WINDOW_48K): no copy of them
        frames48 = np.lib.stride_tricks.sliding_window_view(windows, WINDOW_48K, axis=1)[
            :, ::self.frame_hop][:, :k]
        audio16k = to_16k(windows, RATE)  # every window at once, along its samples
        need = (k - 1) * self.frame_hop // step + FRAME_SAMPLES
        if audio16k.shape[1] < need:
            audio16k = np.pad(audio16k, ((0, 0), (0, need - audio16k.shape[1])))
        frames16 = np.stack([audio16k[:, i * self.frame_hop // step:][:, :FRAME_SAMPLES]
                             for i in range(k)], axis=1).reshape(n * k, FRAME_SAMPLES)
        with self._lock:
            out = self.front_end(frames16)
        emb = np.concatenate([out.embeddings, highband(frames48)], axis=1)
        scores = self.head.scores(emb, mapped_scores(out.scores, self.indices))
        return scores.reshape(n, k, -1), rms_db(frames48).reshape(n, k)

    def predict(self, features: F32) -> F32:
        """windows float32 (N, window_samples) → calibrated scores (N, len(labels))."""
        x = np.asarray(features, dtype=np.float32)
        if x.ndim != 2 or x.shape[1:] != self.features.shape:
            raise ValueError(f"expected windows of shape (N, {self.features.shape[0]}), "
                             f"got {x.shape}")
        out = np.zeros((x.shape[0], len(self.labels)), dtype=np.float32)
        if x.shape[0] == 0:
            return out
        frames, levels = self.frame_scores(x)
        out[:, :-1] = np.minimum(calibrated(frames.mean(axis=1), self.thresholds), BELOW_ONE)
        out[:, -1] = levels[:, self.hearing.frames // 2] < self.hearing.quiet_gate_db
        return out

    def decide(self, scores: F32) -> tuple[str, ...]:
        d = self.folder.meta.decision
        return decide(scores, self.labels, d.threshold, d.margin)

