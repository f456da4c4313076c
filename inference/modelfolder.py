"""A model is a folder: ``model.tflite`` + ``model.json`` (+ ``corpus.json``).

``model.json`` (``ModelMeta``)::

    {"model_id": "selector", "version": "1.0.0", "labels": ["birds", ...],
     "features": FeatureParams.to_dict(),
     "decision": {"threshold": 0.5, "margin": 0.1},
     "input": {"shape": [null, 45, 64], "dtype": "float32"},
     "metrics": {"split": "...", "held_out": {"accuracy": ..., "per_class":
                 {label: {"precision", "recall", "f1", "support", "split"}}},
                 "confusion": [[...]]},
     "training_data": {"manifest": "corpus.json", "n_files", "n_windows_train",
                       "n_windows_test", "packages": {name: version}},
     "created": ISO time, "framework": {"tensorflow": "2.21.0", ...}}

A folder of the YAMNet-based selector (``"engine": "yamnet-head"``) holds
``head.npz`` instead of ``model.tflite``, and ``"hearing"`` says which front end
(a folder beside the built-in models, checked by sha256) and how many of its
frames a window averages; its ``decision.per_class`` are the calibrated
thresholds (``inference.hearing_model``), and ``crossval`` its
leave-one-package-out results.

``confusion[i][j]`` counts held-out windows of true class ``labels[i]`` scored
``labels[j]``. ``corpus.json`` is the training corpus manifest
(``learning.corpus.build.CorpusManifest``): every file's origin, licence and side of
the split. ``ModelFolder.load`` validates all of it and raises
``ModelFolderError``; feature parameters this code cannot honour raise
``IncompatibleFeatures`` (from ``inference.features``) so a classifier can refuse
the model specifically. No TensorFlow here.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from bus_schemas.errors import TidzamError
from inference.features import FeatureParams, IncompatibleFeatures
from inference.semver import is_semver

log = logging.getLogger(__name__)

MODEL_FILE = "model.tflite"
HEAD_FILE = "head.npz"
META_FILE = "model.json"
MANIFEST_FILE = "corpus.json"

_MODEL_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ModelFolderError(TidzamError):
    """A model folder is missing a file or holds invalid metadata."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Decision(_Strict):
    """Top label if its score ≥ threshold and beats the runner-up by ≥ margin.
    ``per_class``: thresholds calibrated per class, which the model applies to its
    scores before this rule (each moved to 0.5; ``inference.hearing.calibrated``)."""

    threshold: float = Field(ge=0.0, le=1.0)
    margin: float = Field(ge=0.0, le=1.0)
    per_class: dict[str, float] = Field(default_factory=dict)

    @field_validator("per_class")
    @classmethod
    def _per_class(cls, value: dict[str, float]) -> dict[str, float]:
        if not all(0.0 < t < 1.0 for t in value.values()):
            raise ValueError("per-class thresholds must be in (0, 1)")
        return value


class InputSpec(_Strict):
    shape: list[int | None]
    dtype: Literal["float32"]


class ClassMetrics(_Strict):
    precision: float = Field(ge=0.0, le=1.0)
    recall: float = Field(ge=0.0, le=1.0)
    f1: float = Field(ge=0.0, le=1.0)
    support: int = Field(ge=0)
    split: Literal["group", "time", "package"]


class HeldOut(_Strict):
    accuracy: float = Field(ge=0.0, le=1.0)
    balanced_accuracy: float | None = Field(default=None, ge=0.0, le=1.0)
    decided_fraction: float | None = Field(default=None, ge=0.0, le=1.0)  # not "unknown"
    per_class: dict[str, ClassMetrics]


class Metrics(_Strict):
    split: str
    held_out: HeldOut
    confusion: list[list[int]]


class TrainingData(_Strict):
    manifest: str
    n_files: int = Field(ge=0)
    n_windows_train: int = Field(ge=0)
    n_windows_test: int = Field(ge=0)
    packages: dict[str, str]


class FrontEnd(_Strict):
    """A pretrained front end: ``folder`` beside the built-in models, its file's sha256."""

    folder: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Hearing(_Strict):
    """How the YAMNet-based selector hears a window: ``frames`` YAMNet frames
    ``frame_hop_s`` apart, their head scores averaged (1: no smoothing); a window
    whose middle frame is below ``quiet_gate_db`` (RMS dBFS) is quiet."""

    front_end: FrontEnd
    frames: int = Field(ge=1, le=9)
    frame_hop_s: float = Field(gt=0.0)
    quiet_gate_db: float


class CrossValClass(_Strict):
    precision: float = Field(ge=0.0, le=1.0)
    recall: float = Field(ge=0.0, le=1.0)
    f1: float = Field(ge=0.0, le=1.0)
    support: int = Field(ge=0)


class CrossValResult(_Strict):
    macro_f1: float = Field(ge=0.0, le=1.0)
    n_windows: int = Field(ge=0)
    per_class: dict[str, CrossValClass]
    per_package_accuracy: dict[str, float] = Field(default_factory=dict)


class CrossVal(_Strict):
    """Leave-one-package-out cross-validation: ``results`` by method (this model's,
    the old selector's...), ``chosen``: the settings the inner folds chose."""

    method: str
    packages: list[str]
    results: dict[str, CrossValResult]
    chosen: dict[str, str] = Field(default_factory=dict)


class ModelMeta(_Strict):
    """The content of ``model.json``."""

    model_id: str
    version: str
    labels: list[str] = Field(min_length=1)
    features: dict[str, Any]
    decision: Decision
    input: InputSpec
    metrics: Metrics | None = None
    training_data: TrainingData | None = None
    created: datetime
    framework: dict[str, str] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)  # wall seconds, ms per window
    engine: Literal["tflite", "yamnet-head"] = "tflite"
    hearing: Hearing | None = None
    crossval: CrossVal | None = None

    @field_validator("model_id")
    @classmethod
    def _model_id(cls, value: str) -> str:
        if not _MODEL_ID.match(value):
            raise ValueError("model_id must be 1-64 letters, digits, '_' or '-'")
        return value

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not is_semver(value):
            raise ValueError(f"version {value!r} is not a semantic version (e.g. 1.0.0)")
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value) or not all(value):
            raise ValueError("labels must be non-empty and unique")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ModelMeta:
        if (self.engine == "yamnet-head") != (self.hearing is not None):
            raise ValueError("a yamnet-head model, and only one, says how it hears "
                             "('hearing')")
        unknown_t = set(self.decision.per_class) - set(self.labels)
        if unknown_t:
            raise ValueError(f"thresholds for classes that are not labels: {sorted(unknown_t)}")
        if self.metrics is not None:
            n = len(self.labels)
            conf = self.metrics.confusion
            if len(conf) != n or any(len(row) != n for row in conf):
                raise ValueError(f"confusion must be {n}x{n} (one row/column per label)")
            unknown = set(self.metrics.held_out.per_class) - set(self.labels)
            if unknown:
                raise ValueError(f"metrics name classes that are not labels: {sorted(unknown)}")
        return self


@dataclass(frozen=True)
class ModelFolder:
    """A validated model folder."""

    path: Path
    meta: ModelMeta
    params: FeatureParams

    @property
    def model_path(self) -> Path:
        """The file that holds the weights: the TFLite file, or the head's arrays."""
        return self.path / (HEAD_FILE if self.meta.engine == "yamnet-head" else MODEL_FILE)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.meta.labels)

    @classmethod
    def load(cls, path: str | Path) -> ModelFolder:
        """Read and validate a folder; raises ModelFolderError or IncompatibleFeatures."""
        folder = Path(path)
        if not folder.is_dir():
            raise ModelFolderError(f"{folder} is not a model folder (no such directory)")
        meta = _read_meta(folder)
        try:
            params = FeatureParams.from_dict(dict(meta.features))
        except IncompatibleFeatures as exc:
            raise IncompatibleFeatures(f"model {folder}: {exc}") from exc
        except TypeError as exc:
            raise ModelFolderError(f"{folder / META_FILE}: bad feature parameters: {exc}") \
                from exc
        expected = [None, *params.shape]
        if meta.input.shape != expected:
            raise ModelFolderError(f"{folder / META_FILE}: input shape {meta.input.shape} does "
                                   f"not match the feature parameters (expected {expected})")
        loaded = cls(folder, meta, params)
        model = loaded.model_path
        if not model.is_file() or model.stat().st_size == 0:
            raise ModelFolderError(f"{folder} has no {model.name}")
        if meta.training_data is not None and not (folder / meta.training_data.manifest).is_file():
            raise ModelFolderError(
                f"{folder} lacks {meta.training_data.manifest}, the training corpus manifest")
        return loaded


def _read_meta(folder: Path) -> ModelMeta:
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise ModelFolderError(f"{folder} has no {META_FILE}")
    try:
        raw = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFolderError(f"{meta_path} is not valid JSON: {exc}") from exc
    try:
        return ModelMeta.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
                             for err in exc.errors())
        raise ModelFolderError(f"{meta_path} is invalid: {problems}") from exc


def write_model_folder(path: Path, meta: ModelMeta, weights: bytes,
                       manifest_json: str | None) -> ModelFolder:
    """Write the weights (``model.tflite``, or ``head.npz`` for a yamnet-head model),
    ``model.json`` and (if given) ``corpus.json``, then load the folder back to
    validate it."""
    path.mkdir(parents=True, exist_ok=True)
    name = HEAD_FILE if meta.engine == "yamnet-head" else MODEL_FILE
    (path / name).write_bytes(weights)
    (path / META_FILE).write_text(meta.model_dump_json(indent=2) + "\n")
    if manifest_json is not None:
        (path / MANIFEST_FILE).write_text(manifest_json)
    log.info("wrote model folder %s (%d bytes in %s)", path, len(weights), name)
    return ModelFolder.load(path)
