"""Relabel and delete the windows of a compiled dataset (``.npz``), with undo.

Edits are kept in memory (a label column and a deleted mask, so undo is cheap) and
written by ``save`` through ``learning.datasets.operations.save`` (atomic), one
``edit`` line in the dataset history.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from learning.datasets.format import QUIET, TEST, CompiledDataset
from learning.datasets.operations import (
    add_class,
    check_class_name,
    compact,
    load,
    logged,
    save,
    with_rows,
)
from tidzam_ctl.editor.errors import EditorError

Rows = npt.NDArray[np.intp]
I16 = npt.NDArray[np.int16]
Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class _State:
    """What an edit changed, kept to undo it."""

    what: str
    labels: I16
    deleted: Mask
    names: tuple[str, ...]


@dataclass(frozen=True)
class RowInfo:
    """One window of a dataset, as the row list shows it."""

    row: int
    label: str
    path: str
    package: str
    source: str
    group: str
    offset_s: float
    channel: int
    side: str
    level_db: float
    gain_db: float

    def matches(self, text: str) -> bool:
        """Every word of ``text`` in the row's file, package, source, group or side."""
        hay = f"{self.path} {self.package} {self.source} {self.group} {self.side} " \
              f"ch{self.channel}".lower()
        return all(word in hay for word in text.lower().split())


class DatasetEdits:
    """Relabel and delete windows of a compiled dataset, undo, save.

    The dataset itself is untouched until ``save``: an edit changes a copy of the
    label column or the deleted mask, and each edit keeps the previous ones for
    ``undo``. A relabel to a new class name adds the class (at the end of the label
    order). ``edited`` applies everything: deleted windows go (and files left with
    no window), relabelled files take the commonest non-quiet label of their windows.
    """

    def __init__(self, ds: CompiledDataset, path: Path) -> None:
        self.path = path
        self._reset(ds)

    @classmethod
    def open(cls, path: Path) -> DatasetEdits:
        return cls(load(path), path)

    def _reset(self, ds: CompiledDataset) -> None:
        self.ds = ds
        self.labels: I16 = ds.windows.labels.copy()
        self.deleted: Mask = np.zeros(len(ds.windows), np.bool_)
        self.names = ds.label_names
        self._done: list[_State] = []

    @property
    def dirty(self) -> bool:
        return bool(self._done)

    @property
    def changes(self) -> list[str]:
        """What each unsaved edit did, oldest first."""
        return [s.what for s in self._done]

    def class_counts(self) -> list[tuple[str, int]]:
        """(class, windows not deleted) in label order."""
        counts = np.bincount(self.labels[~self.deleted], minlength=len(self.names))
        return [(name, int(n)) for name, n in zip(self.names, counts, strict=True)]

    def rows(self, label: str, text: str = "") -> Rows:
        """Rows of ``label`` not deleted, those matching ``text`` when given."""
        if label not in self.names:
            return np.zeros(0, np.intp)
        rows = np.flatnonzero((self.labels == self.names.index(label)) & ~self.deleted)
        if text.strip():
            rows = np.array([r for r in rows if self.info(int(r)).matches(text)], np.intp)
        return rows.astype(np.intp)

    def file_rows(self, row: int) -> Rows:
        """Rows of ``row``'s file with its current label, not deleted."""
        same = (self.ds.file_index == self.ds.file_index[row]) & ~self.deleted
        return np.flatnonzero(same & (self.labels == self.labels[row])).astype(np.intp)

    def info(self, row: int) -> RowInfo:
        ds, w = self.ds, self.ds.windows
        prov = ds.provenance[int(ds.file_index[row])]
        return RowInfo(row, self.names[int(self.labels[row])], prov.path, prov.package,
                       prov.source, prov.group, float(w.offset_s[row]), int(w.channel[row]),
                       "test" if ds.split[row] == TEST else "train", float(w.level_db[row]),
                       float(w.gain_db[row]))

    def _push(self, what: str) -> None:
        self._done.append(_State(what, self.labels.copy(), self.deleted.copy(), self.names))

    def relabel(self, rows: Rows, label: str) -> str:
        """Give ``rows`` the class ``label`` (a new class is created); a one-line outcome."""
        check_class_name(label)
        rows = np.asarray(rows, np.intp)
        if rows.size == 0:
            raise EditorError("no window to relabel")
        if np.any(self.deleted[rows]):
            raise EditorError("a deleted window cannot be relabelled (undo the delete first)")
        old = sorted({self.names[int(i)] for i in self.labels[rows]})
        if old == [label]:
            return f"already {label}"
        what = f"relabel {rows.size} window(s) {','.join(old)} -> {label}"
        self._push(what)
        if label not in self.names:
            self.names = (*self.names, label)
        self.labels[rows] = self.names.index(label)
        return what

    def delete(self, rows: Rows) -> str:
        """Mark ``rows`` deleted (they go at ``save``); a one-line outcome."""
        rows = np.asarray(rows, np.intp)
        rows = rows[~self.deleted[rows]]
        if rows.size == 0:
            raise EditorError("nothing to delete")
        what = f"delete {rows.size} window(s) of " + ",".join(
            sorted({self.names[int(i)] for i in self.labels[rows]}))
        self._push(what)
        self.deleted[rows] = True
        return what

    def undo(self) -> str:
        """Take back the last unsaved edit; a one-line outcome."""
        if not self._done:
            raise EditorError("nothing to undo")
        state = self._done.pop()
        self.labels, self.deleted, self.names = state.labels, state.deleted, state.names
        return f"undone: {state.what}"

    def edited(self) -> CompiledDataset:
        """The dataset with every edit applied and logged in its history."""
        ds = self.ds
        for name in self.names[len(ds.label_names):]:
            ds = add_class(ds, name)
        changed = np.flatnonzero(self.labels != self.ds.windows.labels)
        ds = replace(ds, windows=replace(ds.windows, labels=self.labels.copy()))
        ds = _relabelled_files(ds, np.unique(ds.file_index[changed]), self.deleted)
        ds = compact(with_rows(ds, np.flatnonzero(~self.deleted).astype(np.intp)))
        return logged(ds, "edit", "; ".join(self.changes))

    def save(self) -> str:
        """Write the edited dataset (atomically) and start again from it."""
        if not self.dirty:
            return "nothing to save"
        ds = self.edited()
        save(ds, self.path)
        done = len(self._done)
        self._reset(ds)
        return f"saved {self.path} ({done} edit(s); {len(ds.windows)} windows)"


def _relabelled_files(ds: CompiledDataset, files: npt.NDArray[np.int32], deleted: Mask
                      ) -> CompiledDataset:
    """Each of ``files`` takes the commonest non-quiet label of its kept windows (the
    class a split counts its recording group in)."""
    if files.size == 0:
        return ds
    provenance = list(ds.provenance)
    quiet = ds.label_names.index(QUIET) if QUIET in ds.label_names else -1
    for k in files:
        mine = ds.windows.labels[(ds.file_index == k) & ~deleted]
        loud = mine[mine != quiet]
        if loud.size:
            label = ds.label_names[int(np.bincount(loud).argmax())]
            provenance[int(k)] = replace(provenance[int(k)], label=label)
    return replace(ds, provenance=tuple(provenance))
