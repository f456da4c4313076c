"""Operations on compiled datasets: the library behind ``tidzam_ctl dataset``.

On disk a dataset is ONE ``.npz`` file in the format of ``learning.datasets.format``
(features, labels, side, and per-window and per-file provenance). A dataset
NAME given by a user is a path to it, ``.npz`` appended when missing:
``birds``, ``birds.npz`` and ``data/birds`` name ``./birds.npz``,
``./birds.npz`` and ``data/birds.npz`` (``dataset_path``). A bare name given
for a dataset derived from another one (the test dataset of a split, the new
name of a rename) lies in the same folder as that one.

Every write is atomic (``CompiledDataset.save``: a hidden temporary file,
fsync'd, renamed over the target), so a crash leaves the old dataset or the
new one, never half of one.

The one rule: every window points at its source file, and every file names
its recording group; no operation puts windows of one group on both sides of
a split.

- ``split`` moves whole groups: for each class (a group's class is its files'
  class) shuffled groups (seeded) go to the test side until it holds about the
  proportion asked, keeping a group on each side; a class with a single group
  stays on the train side whole (class split ``"none"``, reported). The sides
  are made again from every window: ``split_off`` returns two datasets (the
  original's train side, and a test dataset: the original Database Tool's
  ``--split P --split-name NAME``), ``split_in_place`` marks the split column.
  Files of the test dataset leave the other's file table, so adding them to it
  again is not caught as a duplicate.
- ``balance`` duplicates train windows only; a copy keeps its original's file
  and offset, so it stays on its recording's side.
- ``merge``: a group that ends up on both sides (the same recording held out
  in one dataset and trained on in the other) moves to the train side whole.
- ``add_audio`` (audio folders, extracted samples) puts new files on the train
  side; ``split`` makes the test side.

The only windows of one recording on both sides are those of a class that
``build_dataset`` split in time (class split ``"time"``: a single recording,
split with a one-window gap); ``mixed_groups`` leaves them out.

Duplicates: a source file is known by its sha256; a file already in the
dataset is not added again (add-folder, from-samples, merge) and is reported.

Adding audio files: ``learning.datasets.add``; finding them in folders and reading
extracted samples' names: ``learning.datasets.samples``; errors:
``learning.datasets.errors``.
"""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bus_schemas.control import CLASS_NAME
from inference.features import FeatureParams
from learning.corpus.manifest import CorpusManifest
from learning.datasets.compile import DatasetConfig, pick_test_groups
from learning.datasets.errors import (
    BadInput,
    ClassNameError,
    DatasetError,
    DatasetExists,
    DatasetNotFound,
    IncompatibleDatasets,
)
from learning.datasets.format import QUIET, TEST, TRAIN, CompiledDataset, SourceFile, Windows

Rows = npt.NDArray[np.intp]


# ---------------------------------------------------------------- names and files


def dataset_path(name: str | Path, beside: Path | None = None) -> Path:
    """The ``.npz`` path of a dataset NAME; a bare NAME lies in ``beside``'s folder."""
    given = Path(name)
    path = given if given.suffix == ".npz" else given.with_name(given.name + ".npz")
    if beside is not None and len(given.parts) == 1:
        path = beside.parent / path
    return path


def load(path: Path) -> CompiledDataset:
    """The dataset at ``path`` (``DatasetNotFound``, or ``DatasetError`` if unreadable)."""
    if not path.is_file():
        raise DatasetNotFound(f"no dataset at {path} (make one with `tidzam_ctl dataset "
                              f"create {path}`)")
    if not zipfile.is_zipfile(path):
        raise DatasetError(f"{path} is not a Tidzam dataset (not an .npz archive)")
    try:
        return CompiledDataset.load(path)
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{path} is not a readable Tidzam dataset: {exc}") from None


def save(ds: CompiledDataset, path: Path, *, new: bool = False) -> None:
    """Write ``ds`` atomically; ``new``: refuse to replace an existing file."""
    if new and path.exists():
        raise DatasetExists(f"{path} already exists: remove it or choose another name")
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save(path)


def history_line(op: str, detail: str = "") -> str:
    """``<UTC time> <op> <detail>``: one entry of a dataset's history."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{stamp} {op} {detail}".rstrip()


def logged(ds: CompiledDataset, op: str, detail: str = "") -> CompiledDataset:
    return replace(ds, history=(*ds.history, history_line(op, detail)))


def create(params: FeatureParams | None = None) -> CompiledDataset:
    """An empty dataset (no class, no window) with these feature parameters."""
    params = params or FeatureParams()
    return CompiledDataset(Windows.empty(params), np.zeros(0, np.int8), np.zeros(0, np.int32),
                           (), (), {}, params, (), (history_line("create"),))


def rename(path: Path, new_name: str) -> Path:
    """Move the dataset file to a new NAME (beside it when bare); returns the new path."""
    target = dataset_path(new_name, beside=path)
    if not path.is_file():
        raise DatasetNotFound(f"no dataset at {path}")
    if target.exists():
        raise DatasetExists(f"{target} already exists: remove it or choose another name")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(path, target)
    return target


def file_count(ds: CompiledDataset) -> int:
    """How many source audio files the windows come from."""
    return len(ds.files)


def info(ds: CompiledDataset, path: Path) -> dict[str, Any]:
    """``ds.summary()`` plus the dataset's name, path and size on disk."""
    size = path.stat().st_size if path.is_file() else 0
    return {"name": path.stem, "path": str(path), "size_bytes": size, **ds.summary()}


# ---------------------------------------------------------------- rows and files


def with_rows(ds: CompiledDataset, rows: Rows, split: npt.NDArray[np.int8] | None = None
              ) -> CompiledDataset:
    """The windows at ``rows`` (any order, repeats allowed), same file table."""
    return replace(ds, windows=ds.windows.rows(rows), file_index=ds.file_index[rows],
                   split=ds.split[rows] if split is None else split)


def compact(ds: CompiledDataset) -> CompiledDataset:
    """Drop the files that no window comes from."""
    used = np.unique(ds.file_index)
    remap = np.full(len(ds.files), -1, np.int32)
    remap[used] = np.arange(used.size, dtype=np.int32)
    return replace(ds, file_index=remap[ds.file_index].astype(np.int32),
                   files=tuple(ds.files[k] for k in used),
                   provenance=tuple(ds.provenance[k] for k in used))


def mixed_groups(ds: CompiledDataset) -> set[str]:
    """Recording groups with windows on both sides (classes split in time left out)."""
    timed = {p.group for p in ds.provenance if ds.class_split.get(p.label) == "time"}
    groups = ds.row_groups()
    names, inverse = np.unique(groups, return_inverse=True)
    train = np.bincount(inverse, weights=ds.split == TRAIN, minlength=names.size)
    test = np.bincount(inverse, weights=ds.split == TEST, minlength=names.size)
    return {str(g) for g in names[(train > 0) & (test > 0)]} - timed


# ---------------------------------------------------------------- classes


def check_class_name(name: str) -> str:
    """``name`` if usable as a class (and an expert's name), else ``ClassNameError``."""
    if not CLASS_NAME.fullmatch(name):
        raise ClassNameError(
            f"{name!r} is not a usable class name: letters, digits and '_', with '-' "
            "between the levels of a hierarchical name (birds-american_robin)")
    return name


def add_class(ds: CompiledDataset, name: str) -> CompiledDataset:
    """``ds`` with a new, empty class at the end of the label order."""
    check_class_name(name)
    if name in ds.label_names:
        raise ClassNameError(f"the dataset already has a class {name!r}")
    return replace(ds, label_names=(*ds.label_names, name),
                   class_split={**ds.class_split, name: "group"})



# ---------------------------------------------------------------- merge


@dataclass
class MergeReport:
    windows: int = 0
    files: int = 0
    new_classes: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    moved_to_train: list[str] = field(default_factory=list)


def check_same_features(a: FeatureParams, b: FeatureParams) -> None:
    """``IncompatibleDatasets`` naming every parameter that differs."""
    if a == b:
        return
    da, db = a.to_dict(), b.to_dict()
    diff = ", ".join(f"{k} {da[k]} vs {db[k]}" for k in da if da[k] != db.get(k))
    raise IncompatibleDatasets(f"the datasets have different feature parameters ({diff}): "
                               "their windows cannot be mixed")


def merge(ds: CompiledDataset, other: CompiledDataset, classe: str | None = None
          ) -> tuple[CompiledDataset, MergeReport]:
    """``ds`` plus ``other``'s windows, labels remapped by name (a class in both keeps
    ``ds``'s index), or every non-quiet window of ``other`` into ``classe``.

    Quiet is a level, not a source: quiet windows stay quiet even with ``classe``.
    """
    check_same_features(ds.params, other.params)
    if classe is not None:
        check_class_name(classe)
    report = MergeReport()
    targets = [classe if classe and n != QUIET else n for n in other.label_names]
    names = list(ds.label_names)
    class_split = dict(ds.class_split)
    for target, orig in zip(targets, other.label_names, strict=True):
        if target not in names:
            names.append(target)
            class_split[target] = other.class_split.get(orig, "group")
            report.new_classes.append(target)
    label_map = np.array([names.index(t) for t in targets] or [0], np.int16)
    theirs = _new_files(ds, other, report)
    added = _remapped_rows(ds, other, theirs, label_map, classe)
    merged = replace(ds, label_names=tuple(names), class_split=class_split)
    merged = replace(
        merged, windows=Windows.concat([ds.windows, added.windows]),
        split=np.concatenate([ds.split, added.split]),
        file_index=np.concatenate([ds.file_index, added.file_index]),
        files=(*ds.files, *added.files), provenance=(*ds.provenance, *added.provenance))
    report.windows, report.files = len(added.windows), len(added.files)
    return _untangle(merged, report), report


def _new_files(ds: CompiledDataset, other: CompiledDataset, report: MergeReport) -> list[int]:
    """Indices of ``other``'s files that ``ds`` does not hold; the rest are reported."""
    mine = set(ds.files)
    keep = []
    for k, sha in enumerate(other.files):
        if sha in mine:
            report.duplicates.append(other.provenance[k].path or sha)
        else:
            keep.append(k)
    return keep


def _remapped_rows(ds: CompiledDataset, other: CompiledDataset, keep: list[int],
                   label_map: npt.NDArray[np.int16], classe: str | None) -> CompiledDataset:
    """``other``'s windows of the ``keep`` files, relabelled and re-indexed for ``ds``."""
    rows = np.flatnonzero(np.isin(other.file_index, keep))
    file_map = np.full(len(other.files), -1, np.int32)
    file_map[keep] = len(ds.files) + np.arange(len(keep), dtype=np.int32)
    windows = other.windows.rows(rows)
    windows.labels = label_map[windows.labels]
    provenance = [other.provenance[k] for k in keep]
    if classe:
        provenance = [p if p.label == QUIET else replace(p, label=classe) for p in provenance]
    return replace(other, windows=windows, split=other.split[rows],
                   file_index=file_map[other.file_index[rows]],
                   files=tuple(other.files[k] for k in keep), provenance=tuple(provenance))


def _untangle(ds: CompiledDataset, report: MergeReport) -> CompiledDataset:
    """Move every group found on both sides to the train side, whole."""
    mixed = mixed_groups(ds)
    if not mixed:
        return ds
    report.moved_to_train = sorted(mixed)
    split = ds.split.copy()
    split[np.isin(ds.row_groups(), list(mixed))] = TRAIN
    return replace(ds, split=split)


# ---------------------------------------------------------------- split


@dataclass
class SplitResult:
    """``kept``: the train side; ``extracted``: the test side; ``single_group``: classes
    with one recording group, left whole on the train side."""

    kept: CompiledDataset
    extracted: CompiledDataset
    single_group: list[str]


def choose_test_groups(ds: CompiledDataset, proportion: float, seed: int = 0
                       ) -> tuple[set[str], list[str]]:
    """Recording groups for the test side (about ``proportion`` of each class's windows),
    and the classes that have a single group. ``DatasetError`` if no class has two."""
    if not 0.0 < proportion < 1.0:
        raise BadInput(f"the split proportion must be between 0 and 1 (got {proportion})")
    group_class = {p.group: p.label for p in reversed(ds.provenance)}  # first file wins
    names, counts = np.unique(ds.row_groups(), return_counts=True)
    by_class: dict[str, dict[str, int]] = {}
    for group, n in zip(names, counts, strict=True):
        by_class.setdefault(group_class[str(group)], {})[str(group)] = int(n)
    cfg = DatasetConfig(test_fraction=proportion, seed=seed)
    test: set[str] = set()
    single: list[str] = []
    for label, groups in sorted(by_class.items()):
        if len(groups) < 2:
            single.append(label)
        else:
            test |= pick_test_groups(label, groups, cfg)
    if not test:
        raise DatasetError("nothing to extract: no class has two recording groups or more "
                           "(a split never cuts one recording in two)")
    return test, single


def _split_methods(ds: CompiledDataset, single: list[str]) -> dict[str, str]:
    return {n: "none" if n in single else "group" for n in ds.label_names}


def split_off(ds: CompiledDataset, proportion: float, seed: int = 0) -> SplitResult:
    """Two datasets: the test groups' windows (all split 1) and the others (all split 0).

    Previous sides are discarded: the split is made again from every window.
    """
    test_groups, single = choose_test_groups(ds, proportion, seed)
    is_test = np.isin(ds.row_groups(), list(test_groups))
    methods = _split_methods(ds, single)
    kept_rows, test_rows = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    kept = compact(with_rows(ds, kept_rows, np.full(kept_rows.size, TRAIN, np.int8)))
    extracted = compact(with_rows(ds, test_rows, np.full(test_rows.size, TEST, np.int8)))
    return SplitResult(replace(kept, class_split=methods),
                       replace(extracted, class_split=methods), single)


def split_in_place(ds: CompiledDataset, proportion: float, seed: int = 0
                   ) -> tuple[CompiledDataset, list[str]]:
    """The same choice as ``split_off``, marked in ``ds``'s split column instead."""
    test_groups, single = choose_test_groups(ds, proportion, seed)
    split = np.where(np.isin(ds.row_groups(), list(test_groups)), TEST, TRAIN).astype(np.int8)
    return replace(ds, split=split, class_split=_split_methods(ds, single)), single


# ---------------------------------------------------------------- balance, randomize


@dataclass
class BalanceReport:
    target: int = 0
    added: dict[str, int] = field(default_factory=dict)
    empty: list[str] = field(default_factory=list)  # classes with no train window


def balance(ds: CompiledDataset, seed: int = 0) -> tuple[CompiledDataset, BalanceReport]:
    """Duplicate train windows of the smaller classes up to the largest class's count.

    Each class is copied whole as many times as fits, then a seeded random subset
    (without repeats) makes up the rest. Test windows are untouched. Copies are
    appended; ``randomize`` mixes them in.
    """
    train = ds.split == TRAIN
    labels = ds.windows.labels
    counts = np.bincount(labels[train], minlength=len(ds.label_names))
    report = BalanceReport(target=int(counts.max()) if counts.size else 0)
    rng = np.random.default_rng(seed)
    extra: list[Rows] = []
    for c, n in enumerate(counts):
        if n == 0:
            report.empty.append(ds.label_names[c])
            continue
        need = report.target - int(n)
        if need <= 0:
            continue
        idx = np.flatnonzero(train & (labels == c))
        reps, rest = divmod(need, idx.size)
        extra += [np.tile(idx, reps), rng.choice(idx, rest, replace=False)]
        report.added[ds.label_names[c]] = need
    if not extra:
        return ds, report
    rows = np.concatenate([np.arange(labels.size), *extra]).astype(np.intp)
    return with_rows(ds, rows), report


def randomize(ds: CompiledDataset, seed: int = 0) -> CompiledDataset:
    """The same windows in a seeded random order (sides and provenance move with them)."""
    return with_rows(ds, np.random.default_rng(seed).permutation(ds.split.shape[0]))


# ---------------------------------------------------------------- the bootstrap corpus


def with_corpus_provenance(ds: CompiledDataset, manifest: CorpusManifest) -> CompiledDataset:
    """Per-file provenance (package, path, licence, class, merged group) from the
    corpus manifest that ``build_dataset`` returned with ``ds``."""
    entries = {f.sha256: f for f in manifest.files}
    provenance = tuple(
        SourceFile(path=e.path, licence=e.licence, package=e.package, label=e.label,
                   group=e.group) if (e := entries.get(sha)) else old
        for sha, old in zip(ds.files, ds.provenance, strict=True))
    return replace(ds, provenance=provenance)


def class_list(text: str, known: Iterable[str]) -> tuple[str, ...]:
    """Comma-separated class names, each one of ``known`` (else ``ClassNameError``)."""
    wanted = tuple(c.strip() for c in text.split(",") if c.strip())
    allowed = tuple(known)
    unknown = [c for c in wanted if c not in allowed]
    if unknown:
        raise ClassNameError(f"unknown class {', '.join(unknown)}; known: {', '.join(allowed)}")
    return wanted
