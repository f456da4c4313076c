"""A deterministic placeholder model for fast tests: no TFLite, same interface."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from inference.features import FeatureParams

F32 = npt.NDArray[np.float32]


class LoudnessScorer:
    """Two classes from the mean log-mel energy: 'loud' above a level, else 'quiet'."""

    model_id = "placeholder"
    version = "0.0.1"
    labels = ("loud", "quiet")

    def __init__(self, level: float = -6.0) -> None:
        self.features = FeatureParams()
        self.level = level
        self.calls = 0

    def predict(self, features: F32) -> F32:
        self.calls += 1
        energy = features.mean(axis=(1, 2))
        loud = 1.0 / (1.0 + np.exp(-(energy - self.level)))
        return np.stack([loud, 1.0 - loud], axis=1).astype(np.float32)

    def decide(self, scores: F32) -> tuple[str, ...]:
        return (self.labels[int(np.argmax(scores))],)
