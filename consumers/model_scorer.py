"""A model folder as the classifier's ``Scorer``: LiteRT inference, no TensorFlow."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from learning.inference import TfliteModel, decide
from learning.modelfolder import ModelFolder

from learning.features import FeatureParams

F32 = npt.NDArray[np.float32]


@dataclass
class TfliteScorer:
    model_id: str
    version: str
    labels: tuple[str, ...]
    features: FeatureParams
    threshold: float
    margin: float
    _model: TfliteModel

    @classmethod
    def load(cls, path: Path, threads: int = 1) -> TfliteScorer:
        """Load and validate a model folder (refuses incompatible feature parameters)."""
        folder = ModelFolder.load(path)
        return cls(model_id=folder.model_id, version=folder.version,
                   labels=tuple(folder.labels), features=folder.feature_params,
                   threshold=folder.decision.threshold, margin=folder.decision.margin,
                   _model=TfliteModel(folder, num_threads=threads))

    def predict(self, features: F32) -> F32:
        return self._model.predict(features)

    def decide(self, scores: F32) -> tuple[str, ...]:
        return decide(scores, self.labels, self.threshold, self.margin)
