"""The compiled dataset: labelled log-mel windows with their provenance, one ``.npz``.

``learning.datasets.compile`` makes one from the corpus, ``learning.datasets.operations``
and ``learning.datasets.add`` change one; this module is only the format.

Compiled dataset (``CompiledDataset.save``), one ``.npz``, format version 2:

==============  ===============  ==============================================
key             dtype, shape     meaning
==============  ===============  ==============================================
features        float32 (N,F,M)  log-mel windows (``inference.features``)
labels          int16 (N,)       index into ``label_names``
split           int8 (N,)        0 = train, 1 = test
file_index      int32 (N,)       index into ``files``
channel         int8 (N,)        channel of the file
offset_s        float32 (N,)     window start in the file, seconds
level_db        float32 (N,)     window RMS in dBFS after any attenuation
gain_db         float32 (N,)     attenuation applied to make a quiet window (0 = none)
label_names     str (C,)         class names, model output order
files           str (K,)         sha256 of each source file
class_split     str (C,)         "group", "time" or "none": how each class was split
feature_params  str ()           ``FeatureParams.to_dict()`` as JSON
version         int64 ()         format version (2; a file without it is version 1)
file_path       str (K,)         where the file was read: package path or local path
file_licence    str (K,)         its licence ("" = not known)
file_package    str (K,)         Debian package it came from ("" = a local file)
file_label      str (K,)         its class (the one its loud windows take)
file_group      str (K,)         recording group: never on both sides of a split
file_source     str (K,)         microphone/stream of an extracted sample ("" = none)
file_channel    int16 (K,)       channel on that source (-1 = not known)
file_time       str (K,)         ISO 8601 time of an extracted sample ("" = not known)
history         str (H,)         one line per operation applied, oldest first
metadata        str ()           ``CompiledDataset.summary()`` as JSON, refreshed by every save
==============  ===============  ==============================================

Version 1 files (no ``file_*`` keys) still load: each file is then its own
recording group (its sha256) and its class is the commonest non-quiet label of
its windows. Class split ``"none"``: the class has a single recording group, so
a split by group leaves it on the train side.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from inference.features import F32, FeatureParams

I16 = npt.NDArray[np.int16]
I32 = npt.NDArray[np.int32]
I8 = npt.NDArray[np.int8]

QUIET = "quiet"
TRAIN, TEST = 0, 1
DROPPED = -1
FORMAT_VERSION = 2


@dataclass
class Windows:
    """Labelled windows of one file (all channels), before the split."""

    features: F32  # (N, frames, mels)
    labels: I16  # (N,) index into the label names, never DROPPED
    channel: I8
    offset_s: F32
    level_db: F32
    gain_db: F32

    @classmethod
    def concat(cls, parts: Sequence[Windows]) -> Windows:
        return cls(*(np.concatenate([getattr(p, k) for p in parts]) for k in _WINDOW_FIELDS))

    @classmethod
    def empty(cls, params: FeatureParams) -> Windows:
        """No window, with the right dtypes and feature shape (0, frames, mels)."""
        return cls(np.zeros((0, *params.shape), np.float32), np.zeros(0, np.int16),
                   np.zeros(0, np.int8), np.zeros(0, np.float32), np.zeros(0, np.float32),
                   np.zeros(0, np.float32))

    def rows(self, index: npt.NDArray[np.intp]) -> Windows:
        """The windows at ``index`` (any order, repeats allowed)."""
        return Windows(*(getattr(self, k)[index] for k in _WINDOW_FIELDS))

    def take(self, mask: npt.NDArray[np.bool_]) -> Windows:
        return Windows(*(getattr(self, k)[mask] for k in _WINDOW_FIELDS))

    def __len__(self) -> int:
        return int(self.labels.shape[0])


_WINDOW_FIELDS = ("features", "labels", "channel", "offset_s", "level_db", "gain_db")


@dataclass(frozen=True)
class SourceFile:
    """Where one source file of a dataset came from (``files[k]`` is its sha256).

    ``group`` names the recording it belongs to: windows of one group are never
    put on both sides of a split. ``""`` means the file is its own group.
    """

    path: str = ""
    licence: str = ""
    package: str = ""
    label: str = ""
    group: str = ""
    source: str = ""
    channel: int = -1
    time: str = ""


_SOURCE_KEYS = ("path", "licence", "package", "label", "group", "source", "time")


@dataclass
class CompiledDataset:
    """Labelled windows with their provenance and side (see module doc).

    ``provenance[k]`` describes ``files[k]``; left empty, it is derived from
    the windows as for a version 1 file.
    """

    windows: Windows
    split: I8
    file_index: I32
    label_names: tuple[str, ...]
    files: tuple[str, ...]
    class_split: dict[str, str]
    params: FeatureParams = field(default_factory=FeatureParams)
    provenance: tuple[SourceFile, ...] = ()
    history: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.provenance:
            self.provenance = self._derived_provenance()
        if len(self.provenance) != len(self.files):
            raise ValueError(f"{len(self.provenance)} provenance entries for "
                             f"{len(self.files)} files")
        self.provenance = tuple(p if p.group else replace(p, group=sha)
                                for p, sha in zip(self.provenance, self.files, strict=True))

    def _derived_provenance(self) -> tuple[SourceFile, ...]:
        """One entry per file: its own group, its commonest non-quiet label."""
        n_classes = max(1, len(self.label_names))
        counts = np.bincount(self.file_index.astype(np.int64) * n_classes + self.windows.labels,
                             minlength=len(self.files) * n_classes)
        counts = counts.reshape(len(self.files), n_classes)
        if QUIET in self.label_names:
            loud = counts.copy()
            loud[:, self.label_names.index(QUIET)] = 0
            counts = np.where(loud.sum(axis=1, keepdims=True) > 0, loud, counts)
        labels = [self.label_names[int(row.argmax())] if row.any() else "" for row in counts]
        return tuple(SourceFile(label=label) for label in labels)

    def side(self, which: int) -> tuple[F32, I16]:
        """(features (N, frames, mels), labels (N,)) of the train (0) or test (1) side."""
        mask = self.split == which
        return self.windows.features[mask], self.windows.labels[mask]

    def count(self, which: int) -> int:
        return int(np.count_nonzero(self.split == which))

    def row_groups(self) -> npt.NDArray[np.str_]:
        """The recording group of every window, str (N,)."""
        groups = np.array([p.group for p in self.provenance] or [""], dtype=str)
        return groups[self.file_index]

    def summary(self) -> dict[str, Any]:
        """Counts per class and side, files, groups, feature params and history."""
        groups = self.row_groups()
        classes = []
        for i, name in enumerate(self.label_names):
            mine = self.windows.labels == i
            classes.append({
                "name": name, "split": self.class_split.get(name, "group"),
                "train": int(np.count_nonzero(mine & (self.split == TRAIN))),
                "test": int(np.count_nonzero(mine & (self.split == TEST))),
                "files": int(np.unique(self.file_index[mine]).size),
                "groups": int(np.unique(groups[mine]).size)})
        return {
            "format_version": FORMAT_VERSION, "windows": int(self.split.shape[0]),
            "train": self.count(TRAIN), "test": self.count(TEST), "files": len(self.files),
            "groups": len({p.group for p in self.provenance}),
            "feature_shape": list(self.params.shape), "feature_params": self.params.to_dict(),
            "classes": classes, "history": list(self.history)}

    def _arrays(self) -> dict[str, npt.NDArray[Any]]:
        w, prov = self.windows, self.provenance
        arrays: dict[str, npt.NDArray[Any]] = {
            "features": w.features, "labels": w.labels, "split": self.split,
            "file_index": self.file_index, "channel": w.channel, "offset_s": w.offset_s,
            "level_db": w.level_db, "gain_db": w.gain_db,
            "label_names": np.array(self.label_names, dtype=str),
            "files": np.array(self.files, dtype=str),
            "class_split": np.array([self.class_split[c] for c in self.label_names], dtype=str),
            "feature_params": np.array(json.dumps(self.params.to_dict())),
            "version": np.array(FORMAT_VERSION),
            "file_channel": np.array([p.channel for p in prov], dtype=np.int16),
            "history": np.array(self.history, dtype=str),
            "metadata": np.array(json.dumps(self.summary())),
        }
        for key in _SOURCE_KEYS:
            arrays[f"file_{key}"] = np.array([getattr(p, key) for p in prov], dtype=str)
        return arrays

    def save(self, path: Path) -> None:
        """Write atomically: a hidden temporary file, fsync'd, then renamed over ``path``."""
        tmp = path.with_name(f".{path.name}.partial")
        try:
            with tmp.open("wb") as fh:
                arrays: dict[str, Any] = self._arrays()  # Any: savez also takes flags
                np.savez(fh, **arrays)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: Path) -> CompiledDataset:
        with np.load(path, allow_pickle=False) as z:
            names = tuple(str(x) for x in z["label_names"])
            windows = Windows(z["features"], z["labels"], z["channel"], z["offset_s"],
                              z["level_db"], z["gain_db"])
            params = FeatureParams.from_dict(json.loads(str(z["feature_params"])))
            if windows.features.shape[1:] != params.shape:
                raise ValueError(f"features of shape {windows.features.shape[1:]} do not "
                                 f"match the feature parameters {params.shape}")
            return cls(windows, z["split"], z["file_index"], names,
                       tuple(str(x) for x in z["files"]),
                       dict(zip(names, (str(x) for x in z["class_split"]), strict=True)),
                       params, _load_provenance(z),
                       tuple(str(x) for x in z["history"]) if "history" in z else ())


def _load_provenance(z: Any) -> tuple[SourceFile, ...]:
    """The ``file_*`` columns of a version 2 file; () for a version 1 file."""
    if "file_group" not in z:
        return ()
    columns = {key: [str(x) for x in z[f"file_{key}"]] for key in _SOURCE_KEYS}
    channels = [int(x) for x in z["file_channel"]]
    return tuple(SourceFile(**{key: columns[key][k] for key in _SOURCE_KEYS},
                            channel=channels[k]) for k in range(len(channels)))
