"""A folder of extracted samples (``['<label>'](<source>-<channel>)_<time>.wav``),
changed by moving files: nothing is ever lost and undo moves them back.

Relabel = move into the label's folder under the new name, delete = move into
``deleted/``, accept = move an ``unchecked/`` sample into its label's folder; a
sample saved from a stream is written there under the same naming, which
``tidzam_ctl dataset from-samples`` picks up. Audio: float32 (n,) at the rate given.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from audio.suffixes import is_audio
from inference.features import F32
from learning.datasets.operations import check_class_name
from learning.datasets.samples import UNCHECKED, SampleName, parse_sample_name
from tidzam_ctl.editor.errors import EditorError
from tidzam_ctl.editor.player import write_wav

DELETED = "deleted"  # where a sample folder's deleted samples go (nothing is lost)
NO_LABEL = "(no label)"


def label_folder(root: Path, label: str) -> Path:
    """The folder of ``label`` in a sample folder: one level per part of a hierarchical
    name (``birds-american_robin`` → ``birds/american_robin``), as ``from-samples`` reads it."""
    return root.joinpath(*check_class_name(label).split("-"))


def sample_time_text(time: datetime) -> str:
    """ISO 8601 in UTC to the millisecond, ``Z``-suffixed: ``2017-06-01T12:34:56.500Z``."""
    return time.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sample_file_name(label: str, source: str, channel: int, time: datetime,
                     suffix: str = ".wav") -> str:
    """The original extractor's name: ``['<label>'](<source>-<channel>)_<ISO time>.wav``."""
    return f"['{label}']({source}-{channel})_{sample_time_text(time)}{suffix}"


_LABELLED = re.compile(r"\+?\[[^\]]*\](?P<rest>\(.*)")


def renamed_sample(name: str, label: str) -> str:
    """``name`` with ``label`` in it and no unchecked ``+``; a name of another form as is."""
    m = _LABELLED.fullmatch(name)
    return f"['{label}']{m['rest']}" if m else name


@dataclass(frozen=True)
class Sample:
    """One audio file of a sample folder: the class it is filed under (``UNCHECKED``
    for the extractor's unchecked ones, ``NO_LABEL`` when nothing says) and its name."""

    path: Path
    label: str
    name: SampleName | None

    def proposed_label(self, root: Path) -> str | None:
        """The class an unchecked sample would be accepted into: the folder under
        ``unchecked/``, else the single label in its name."""
        dirs = [d for d in self.path.relative_to(root).parent.parts if d != UNCHECKED]
        if dirs:
            return "-".join(dirs)
        if self.name is not None and len(self.name.labels) == 1:
            return self.name.labels[0]
        return None


@dataclass(frozen=True)
class _Move:
    src: Path
    dst: Path


class SampleFolder:
    """A folder of extracted samples, changed by moving files (undo moves them back).

    ``relabel`` moves a sample into the label's folder with the label in its name,
    ``delete`` into ``deleted/`` (same relative path), ``accept`` an unchecked one into
    its label's folder; ``add`` writes a new sample. No move overwrites a file.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._done: list[_Move] = []

    def samples(self) -> list[Sample]:
        """Every audio file under the root (``deleted/`` and hidden files left out)."""
        if not self.root.is_dir():
            return []
        found = []
        for path in sorted(self.root.rglob("*")):
            parts = path.relative_to(self.root).parts
            if (not path.is_file() or not is_audio(path)
                    or parts[0] == DELETED or any(p.startswith(".") for p in parts)):
                continue
            found.append(self.sample(path))
        return found

    def sample(self, path: Path) -> Sample:
        """What the folder says of ``path``: where it is filed and what its name says."""
        dirs = path.relative_to(self.root).parts[:-1]
        name = parse_sample_name(path.name)
        if UNCHECKED in dirs:
            return Sample(path, UNCHECKED, name)
        label = "-".join(dirs)
        if not label and name is not None and len(name.labels) == 1:
            label = name.labels[0]
        return Sample(path, label or NO_LABEL, name)

    def groups(self) -> dict[str, list[Sample]]:
        """Samples by the class they are filed under, classes sorted."""
        out: dict[str, list[Sample]] = {}
        for s in self.samples():
            out.setdefault(s.label, []).append(s)
        return dict(sorted(out.items()))

    def _move(self, src: Path, dst: Path) -> Path:
        if not src.is_file():
            raise EditorError(f"{src.name} is not in {src.parent} any more")
        if dst.exists():
            raise EditorError(f"{dst.relative_to(self.root)} already exists: nothing moved")
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
        self._done.append(_Move(src, dst))
        return dst

    def relabel(self, path: Path, label: str) -> Path:
        """Move ``path`` into ``label``'s folder, named for ``label``; the new path."""
        return self._move(path, label_folder(self.root, label) / renamed_sample(path.name, label))

    def accept(self, path: Path) -> Path:
        """Move an unchecked sample into the folder of the label it was extracted with."""
        sample = self.sample(path)
        if sample.label != UNCHECKED:
            raise EditorError(f"{path.name} is not an unchecked sample")
        label = sample.proposed_label(self.root)
        if label is None:
            raise EditorError(f"{path.name} names no single label: relabel it instead")
        return self.relabel(path, label)

    def delete(self, path: Path) -> Path:
        """Move ``path`` into ``deleted/`` (same path below it); the new path."""
        return self._move(path, self.root / DELETED / path.relative_to(self.root))

    def add(self, audio: F32, rate: int, label: str, source: str, channel: int,
            time: datetime) -> Path:
        """Write ``audio`` (n,) as a new sample of ``label``; the path (undo removes it)."""
        path = label_folder(self.root, label) / sample_file_name(label, source, channel, time)
        if path.exists():
            raise EditorError(f"already saved as {path.relative_to(self.root)}")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.partial")
        write_wav(tmp, audio, rate)
        os.replace(tmp, path)
        self._done.append(_Move(Path(), path))
        return path

    @property
    def can_undo(self) -> bool:
        return bool(self._done)

    def undo(self) -> str:
        """Move the last moved file back (or remove the last sample added)."""
        if not self._done:
            raise EditorError("nothing to undo")
        move = self._done.pop()
        if move.src == Path():
            move.dst.unlink(missing_ok=True)
            return f"removed {move.dst.name}"
        if move.src.exists():
            self._done.append(move)
            raise EditorError(f"cannot move back: {move.src} exists again")
        move.src.parent.mkdir(parents=True, exist_ok=True)
        os.replace(move.dst, move.src)
        return f"moved back to {move.src.relative_to(self.root)}"
