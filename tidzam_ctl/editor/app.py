"""``tidzam_ctl dataset edit``: the original Database Editor, as a Textual text UI.

Three views of one screen layout (classes | rows | spectrogram and details):

- a compiled dataset (``.npz``, ``learning.datasets.compile``): classes with their window
  counts, the windows of the selected class with their provenance (file,
  offset, channel, side). Relabel and delete are kept in memory (labels and a
  deleted mask, so undo is cheap) and written by ``s`` through
  ``learning.datasets.operations.save`` (atomic), one ``edit`` line in the dataset history;
- a folder of extracted samples (``['<label>'](<source>-<channel>)_<time>.wav``):
  label folders, the samples in them. Every change is a file move made at once
  (relabel = move into the label's folder under the new name, delete = move
  into ``deleted/``, accept = move an ``unchecked/`` sample into its label's
  folder), so nothing is ever lost and ``u`` moves it back;
- a stream (``--stream FILE_OR_URL``): the classifier's windows one by one; a
  number key or ``l`` saves the window as an extracted sample (the naming above,
  in the label's folder) that ``tidzam_ctl dataset from-samples`` picks up.

Everything that is not drawing the screen lives in plain classes and functions
above the UI section (``render_spectrogram``, ``DatasetEdits``,
``SampleFolder``, ``StreamStepper``, ``Player``); the apps only call them.

Audio at every boundary here: float32, (channels, n) or mono (n,), at the
dataset's feature sample rate (``FeatureParams.sample_rate``, 48 kHz by default).
Features: log-mel windows float32 (frames, mels), natural log of power.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import tempfile
import wave
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np
import numpy.typing as npt
from rich.color import Color
from rich.style import Style
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import DataTable, Footer, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from audio.archive import parse_archive_name
from audio.decode import AudioDecodeError, AudioStream
from inference.features import F32, FeatureParams, frame_windows, window_features
from learning.corpus.build import CLASSES, MEMBERS_DIR, default_cache_dir
from learning.datasets.compile import QUIET, TEST, CompiledDataset, SourceFile
from learning.datasets.operations import (
    UNCHECKED,
    ClassNameError,
    SampleName,
    add_class,
    check_class_name,
    compact,
    load,
    logged,
    parse_sample_name,
    save,
    with_rows,
)

Rows = npt.NDArray[np.intp]
I16 = npt.NDArray[np.int16]
Mask = npt.NDArray[np.bool_]

DELETED = "deleted"  # where a sample folder's deleted samples go (nothing is lost)
NO_LABEL = "(no label)"
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3"})
MAX_ROWS = 2000  # rows shown at once: a filter narrows a bigger class
MAX_SAMPLE_S = 30  # of a sample file shown and played (a long recording is no sample)


class EditorError(RuntimeError):
    """An edit that cannot be done; the message says why and what to do instead."""


# ---------------------------------------------------------------- spectrogram


# The "magma" colour map at five stops: near black for the floor, pale yellow at the peak.
_MAGMA = np.array([(0, 0, 4), (81, 18, 124), (183, 55, 121), (252, 137, 97), (252, 253, 191)],
                  dtype=np.float64)
LEVELS = 32  # colours in the ramp


@lru_cache(maxsize=LEVELS)
def ramp_colour(level: int) -> Color:
    """Colour of ``level`` (0 = floor .. LEVELS - 1 = peak) on the magma ramp."""
    x = level / (LEVELS - 1) * (len(_MAGMA) - 1)
    i = min(int(x), len(_MAGMA) - 2)
    rgb = _MAGMA[i] + (x - i) * (_MAGMA[i + 1] - _MAGMA[i])
    return Color.from_rgb(*(float(c) for c in rgb))


@lru_cache(maxsize=LEVELS * LEVELS)
def _cell_style(top: int, bottom: int) -> Style:
    return Style(color=ramp_colour(top), bgcolor=ramp_colour(bottom))


def _resize(a: F32, n: int, axis: int) -> F32:
    """``a`` with ``n`` entries along ``axis``: block means when shrinking, repeats
    (nearest) when growing."""
    size = a.shape[axis]
    edges = (np.arange(n) * size) // n
    sums = np.add.reduceat(a, edges, axis=axis)
    counts = np.maximum(np.diff(np.append(edges, size)), 1).astype(np.float32)
    shape = [1] * a.ndim
    shape[axis] = n
    out: F32 = (sums / counts.reshape(shape)).astype(np.float32)
    return out


def spectrogram_levels(features: F32, width: int, pixel_rows: int, range_db: float = 80.0
                       ) -> npt.NDArray[np.int_]:
    """Colour levels (pixel_rows, width), int in [0, LEVELS): row 0 the highest mel band.

    features: log-mel (frames, mels). The peak is the top colour; the floor is the
    lowest value, or ``range_db`` (dB of power) below the peak if that is higher.
    """
    grid = _resize(_resize(features, width, 0), pixel_rows, 1)  # (width, pixel_rows)
    hi = float(grid.max())
    lo = max(float(grid.min()), hi - range_db / 10.0 * float(np.log(10.0)))  # ln(power)
    if hi <= lo:  # a flat window (digital silence): all floor
        return np.zeros((pixel_rows, width), np.int_)
    scaled = np.clip((grid - lo) / (hi - lo), 0.0, 1.0)
    levels: npt.NDArray[np.int_] = np.rint(scaled * (LEVELS - 1)).astype(np.int_)
    return levels.T[::-1]


def render_spectrogram(features: F32, width: int | None = None, height: int | None = None,
                       range_db: float = 80.0) -> Text:
    """A log-mel window (frames, mels) as ``height`` lines of ``width`` half blocks.

    Time runs left to right, low frequencies at the bottom; each character is two
    pixels: ``▀`` coloured with the upper one, on a background of the lower one.
    Default size: one column per frame, one line per two mel bands.
    """
    frames, mels = features.shape
    if frames == 0 or mels == 0:
        return Text("(empty window)")
    width = width or frames
    height = height or (mels + 1) // 2
    levels = spectrogram_levels(features, width, 2 * height, range_db)
    text = Text(no_wrap=True, end="")
    for r in range(height):
        for top, bottom in zip(levels[2 * r], levels[2 * r + 1], strict=True):
            text.append("▀", _cell_style(int(top), int(bottom)))
        if r < height - 1:
            text.append("\n")
    return text


def audio_spectrogram(mono: F32, params: FeatureParams) -> F32:
    """Log-mel frames (frames, mels) of mono audio (n,) at ``params.sample_rate``: cut
    into consecutive windows (the last one zero-padded), features side by side."""
    w = params.window_samples
    padded = np.zeros(max(w, -(-mono.shape[0] // w) * w), np.float32)
    padded[: mono.shape[0]] = mono
    feats = window_features(frame_windows(padded, params, w), params)
    out: F32 = feats.reshape(-1, params.n_mels)
    return out


# ---------------------------------------------------------------- playing audio


def write_wav(path: Path, audio: F32, rate: int) -> Path:
    """A 16-bit PCM WAV of ``audio`` (n,) or (channels, n), float in [-1, 1]."""
    frames = audio[None, :] if audio.ndim == 1 else audio
    pcm = (np.clip(frames.T, -1.0, 1.0) * 32767.0).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(frames.shape[0])
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return path


PLAYERS: tuple[tuple[str, ...], ...] = (
    ("ffplay", "-nodisp", "-autoexit", "-loglevel", "quiet"),
    ("aplay", "-q"),
    ("paplay",),
)


def find_player(which: Callable[[str], str | None] = shutil.which) -> tuple[str, ...] | None:
    """The first audio player on the PATH (ffplay, aplay, paplay): its command without
    the file, or None."""
    for command in PLAYERS:
        if which(command[0]):
            return command
    return None


class Player:
    """Plays audio with an external player, one sound at a time.

    Each sound is written to a WAV in ``folder`` (default: a private temporary
    folder) first; without a player (or when it cannot start) that file is the
    answer: its path is shown. A temporary folder is removed by ``close`` only when
    a player played its files.
    """

    def __init__(self, command: Sequence[str] | None, folder: Path | None = None) -> None:
        self.command = tuple(command) if command else None
        self.process: subprocess.Popen[bytes] | None = None
        self._folder = folder
        self._temporary = folder is None
        self._count = 0

    @property
    def folder(self) -> Path:
        """Where the sounds are written (a temporary one is made when first asked for)."""
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="tidzam-play-"))
        return self._folder

    def play(self, audio: F32, rate: int, *, wait: bool = False) -> str:
        """Play ``audio`` (n,) or (channels, n) at ``rate``; a one-line outcome."""
        self.stop()
        self._count += 1
        self.folder.mkdir(parents=True, exist_ok=True)
        path = write_wav(self.folder / f"sound-{self._count:04d}.wav", audio, rate)
        if self.command is None:
            return f"no audio player (ffplay, aplay, paplay) found: wrote {path}"
        try:
            self.process = subprocess.Popen([*self.command, str(path)], stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)
        except OSError as exc:
            return f"cannot start {self.command[0]} ({exc}): wrote {path}"
        if wait:
            self.process.wait()
        return f"playing with {self.command[0]}"

    def stop(self) -> None:
        """Stop the sound being played, if any."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait()
        self.process = None

    def close(self) -> None:
        self.stop()
        if self.command is not None and self._temporary and self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)


# ---------------------------------------------------------------- dataset windows


def source_file(prov: SourceFile, corpus_caches: Iterable[Path] = ()) -> Path | None:
    """The audio file a dataset file came from, on this machine, or None.

    A local path is used as it is; a corpus package path (``package`` set) is looked
    up in the unpacked packages of each corpus cache (``<cache>/pkgs/<package>_*/``,
    archive members ``<archive>#NN`` under ``_members``).
    """
    path = Path(prov.path) if prov.path else None
    if path is not None and path.is_absolute():
        return path if path.is_file() else None
    if prov.package and prov.path:
        inside, _, member = prov.path.partition("#")
        for cache in corpus_caches:
            for root in sorted((cache / "pkgs").glob(f"{prov.package}_*")):
                found = root / MEMBERS_DIR / inside / f"{member}.wav" if member else root / inside
                if found.is_file():
                    return found
    return path if path is not None and path.is_file() else None


def read_slice(location: Path | str, rate: int, start_s: float, n: int) -> F32:
    """``n`` samples of every channel from ``start_s`` on: float32 (channels, n) at
    ``rate``, zero-padded past the end of the file."""
    got: list[F32] = []
    have = 0
    with AudioStream(location, rate) as stream:
        stream.seek(start_s)
        channels = stream.info.channels
        for block in stream.blocks():
            got.append(block)
            have += block.shape[1]
            if have >= n:
                break
    audio = np.zeros((channels, n), np.float32)
    if got:
        joined = np.concatenate(got, axis=1)[:, :n]
        audio[:, : joined.shape[1]] = joined
    return audio


def window_audio(ds: CompiledDataset, row: int, corpus_caches: Iterable[Path] = ()) -> F32:
    """The audio of window ``row`` decoded again from its source file: float32 (n,), the
    window's channel, ``window_samples`` long at ``ds.params.sample_rate``.

    Without the gain of an attenuated quiet copy (``gain_db``) or the noise floor:
    the recording as it is. ``EditorError`` when the file is not on this machine.
    """
    prov = ds.provenance[int(ds.file_index[row])]
    path = source_file(prov, corpus_caches)
    if path is None:
        where = f"package {prov.package}, " if prov.package else ""
        raise EditorError(f"cannot play: the source file ({where}{prov.path or 'no path'}) is "
                          "not on this machine")
    params = ds.params
    channel = int(ds.windows.channel[row])
    try:
        audio = read_slice(path, params.sample_rate, float(ds.windows.offset_s[row]),
                           params.window_samples)
    except AudioDecodeError as exc:
        raise EditorError(f"cannot play: {exc}") from None
    if channel >= audio.shape[0]:
        raise EditorError(f"cannot play: {path} has no channel {channel} any more")
    mono: F32 = audio[channel]
    return mono


# ---------------------------------------------------------------- dataset edits


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


# ---------------------------------------------------------------- sample folders


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
            if (not path.is_file() or path.suffix.lower() not in AUDIO_SUFFIXES
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


# ---------------------------------------------------------------- streams


@dataclass(frozen=True)
class StreamOrigin:
    """The source name and the wall-clock time of the first sample of a stream."""

    source: str
    start: datetime


def _source_name(text: str) -> str:
    """Letters, digits, '_' and '-' only (it goes into sample names)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")[:64] or "stream"


def stream_origin(location: str, now: datetime | None = None) -> StreamOrigin:
    """An archive name ``<name>-YYYY-MM-DD-HH-MM-SS.ext`` gives both; another file its
    stem and modification time (as ``replay`` does); a URL its last path part and now."""
    now = now or datetime.now(UTC)
    if "://" in location:
        tail = location.split("://", 1)[1].split("?")[0].rstrip("/")
        return StreamOrigin(_source_name(Path(tail).stem or tail), now)
    archive = parse_archive_name(location)
    if archive is not None:
        return StreamOrigin(_source_name(archive[0]), archive[1])
    path = Path(location)
    start = datetime.fromtimestamp(path.stat().st_mtime, UTC) if path.exists() else now
    return StreamOrigin(_source_name(path.stem), start)


@dataclass(frozen=True)
class StreamWindow:
    """Window ``index`` of a stream: audio float32 (channels, window_samples) at the
    feature rate, starting ``start_s`` into the stream, at wall-clock ``time``."""

    index: int
    start_s: float
    audio: F32
    time: datetime


class StreamStepper:
    """A stream's windows on the classifier's grid (window i starts at ``i * hop``),
    one at a time forward, and back through the last ``keep`` windows.

    A tail shorter than a window is dropped, except that a stream shorter than one
    window gives one window, zero-padded at its end.
    """

    def __init__(self, location: str, params: FeatureParams, hop: int, *, keep: int = 240,
                 origin: StreamOrigin | None = None) -> None:
        self.params = params
        self.hop = hop
        self.origin = origin or stream_origin(location)
        self._stream = AudioStream(location, params.sample_rate)
        self.channels = self._stream.info.channels
        self.duration_s = self._stream.info.duration_s
        self._blocks: Iterator[F32] = self._stream.blocks()
        self._buf: F32 = np.zeros((self.channels, 0), np.float32)
        self._buf_start = 0
        self._ended = False
        self._history: deque[StreamWindow] = deque(maxlen=keep)
        self._pos = -1

    @property
    def current(self) -> StreamWindow | None:
        return self._history[self._pos] if self._pos >= 0 else None

    def next(self) -> StreamWindow | None:
        """The following window (None at the end of the stream)."""
        if self._pos < len(self._history) - 1:
            self._pos += 1
            return self._history[self._pos]
        index = self._history[-1].index + 1 if self._history else 0
        window = self._read(index)
        if window is None:
            return None
        self._history.append(window)
        self._pos = len(self._history) - 1
        return window

    def back(self) -> StreamWindow | None:
        """The previous window, None before the first one kept."""
        if self._pos <= 0:
            return None
        self._pos -= 1
        return self._history[self._pos]

    def _read(self, index: int) -> StreamWindow | None:
        w, start = self.params.window_samples, index * self.hop
        while self._buf_start + self._buf.shape[1] < start + w and not self._ended:
            block = next(self._blocks, None)
            if block is None:
                self._ended = True
            else:
                self._buf = np.concatenate([self._buf, block], axis=1)
        self._buf = self._buf[:, max(0, start - self._buf_start):]
        self._buf_start = start
        if self._buf.shape[1] < w and (index > 0 or self._buf.shape[1] == 0):
            return None
        audio = np.zeros((self.channels, w), np.float32)
        audio[:, : min(w, self._buf.shape[1])] = self._buf[:, :w]
        start_s = start / self.params.sample_rate
        return StreamWindow(index, start_s, audio,
                            self.origin.start + timedelta(seconds=start_s))

    def close(self) -> None:
        self._stream.close()


# ---------------------------------------------------------------- what the UI browses


def _tail(text: str, n: int) -> str:
    """The last ``n`` characters of ``text`` (the end of a path says the most)."""
    return text if len(text) <= n else "…" + text[-(n - 1):]


@dataclass(frozen=True)
class Item:
    """A row of the middle list: its key and its cells."""

    key: str
    cells: tuple[str, ...]


class Browser(Protocol):
    """What the browsing app needs from a dataset or a sample folder."""

    title: str
    columns: tuple[str, ...]

    @property
    def dirty(self) -> bool: ...
    def classes(self) -> list[tuple[str, int]]: ...
    def items(self, label: str, text: str) -> list[Item]: ...
    def features(self, key: str) -> F32: ...
    def details(self, key: str) -> str: ...
    def audio(self, key: str) -> tuple[F32, int]: ...
    def label_choices(self) -> list[str]: ...
    def relabel(self, key: str, label: str, whole_file: bool) -> str: ...
    def delete(self, key: str) -> str: ...
    def accept(self, key: str) -> str: ...
    def undo(self) -> str: ...
    def save(self) -> str: ...


class DatasetBrowser:
    """A compiled dataset for the browsing app (keys: row numbers)."""

    columns: tuple[str, ...] = ("row", "file", "offset s", "ch", "side", "level dB")

    def __init__(self, edits: DatasetEdits, corpus_caches: Sequence[Path] = ()) -> None:
        self.edits = edits
        self.title = f"dataset {edits.path}"
        self.corpus_caches = tuple(corpus_caches) or (default_cache_dir(),)

    @property
    def dirty(self) -> bool:
        return self.edits.dirty

    def classes(self) -> list[tuple[str, int]]:
        return self.edits.class_counts()

    def items(self, label: str, text: str) -> list[Item]:
        out = []
        for r in self.edits.rows(label, text)[:MAX_ROWS]:
            i = self.edits.info(int(r))
            out.append(Item(str(i.row), (str(i.row), Path(i.path).name or "?",
                                         f"{i.offset_s:.2f}", str(i.channel), i.side,
                                         f"{i.level_db:.0f}")))
        return out

    def features(self, key: str) -> F32:
        feats: F32 = self.edits.ds.windows.features[int(key)]
        return feats

    def details(self, key: str) -> str:
        i = self.edits.info(int(key))
        p = self.edits.ds.params
        lines = [f"window {i.row}: {i.label} ({i.side} side)",
                 f"file    {_tail(i.path or '?', 56)}",
                 f"offset  {i.offset_s:.3f} s, channel {i.channel}, level {i.level_db:.1f} dBFS",
                 f"group   {_tail(i.group, 56)}" + (f"  package {i.package}" if i.package else ""),
                 f"shown   {p.window_s:g} s, {p.fmin:g}-{p.fmax:g} Hz on a mel scale, low at "
                 "the bottom"]
        if i.gain_db:
            lines.append(f"quiet copy: the dataset holds it {-i.gain_db:.0f} dB quieter "
                         "(played as recorded)")
        return "\n".join(lines)

    def audio(self, key: str) -> tuple[F32, int]:
        ds = self.edits.ds
        return window_audio(ds, int(key), self.corpus_caches), ds.params.sample_rate

    def label_choices(self) -> list[str]:
        return list(self.edits.names)

    def relabel(self, key: str, label: str, whole_file: bool) -> str:
        row = int(key)
        rows = self.edits.file_rows(row) if whole_file else np.array([row], np.intp)
        return self.edits.relabel(rows, label)

    def delete(self, key: str) -> str:
        return self.edits.delete(np.array([int(key)], np.intp))

    def accept(self, key: str) -> str:
        raise EditorError("accept is for unchecked samples of a sample folder")

    def undo(self) -> str:
        return self.edits.undo()

    def save(self) -> str:
        return self.edits.save()


class FolderBrowser:
    """A sample folder for the browsing app (keys: file paths). Changes are file moves,
    made at once: there is never anything to save."""

    columns: tuple[str, ...] = ("file", "source", "ch", "time")
    dirty = False

    def __init__(self, folder: SampleFolder, params: FeatureParams | None = None) -> None:
        self.folder = folder
        self.params = params or FeatureParams()
        self.title = f"samples {folder.root}"
        self._groups: dict[str, list[Sample]] = {}

    def classes(self) -> list[tuple[str, int]]:
        self._groups = self.folder.groups()
        return [(label, len(s)) for label, s in self._groups.items()]

    def items(self, label: str, text: str) -> list[Item]:
        words = text.lower().split()
        out = []
        for s in self._groups.get(label, []):
            rel = str(s.path.relative_to(self.folder.root))
            if all(w in rel.lower() for w in words):
                n = s.name
                out.append(Item(str(s.path), (
                    s.path.name, n.source if n else "", str(n.channel) if n else "",
                    n.time.isoformat() if n and n.time else "")))
        return out[:MAX_ROWS]

    def _mono(self, key: str) -> F32:
        """The sample's first channel, (n,) at the feature rate, at most MAX_SAMPLE_S long."""
        limit = MAX_SAMPLE_S * self.params.sample_rate
        blocks: list[F32] = []
        try:
            with AudioStream(key, self.params.sample_rate) as stream:
                for block in stream.blocks():
                    blocks.append(block[0])
                    if sum(b.shape[0] for b in blocks) >= limit:
                        break
        except AudioDecodeError as exc:
            raise EditorError(str(exc)) from None
        if not blocks:
            raise EditorError(f"{Path(key).name} holds no audio")
        mono: F32 = np.concatenate(blocks)[:limit]
        return mono

    def features(self, key: str) -> F32:
        return audio_spectrogram(self._mono(key), self.params)

    def details(self, key: str) -> str:
        path = Path(key)
        sample = self.folder.sample(path)
        lines = [str(path.relative_to(self.folder.root))]
        if sample.label == UNCHECKED:
            lines.append(f"unchecked: `a` accepts it as {sample.proposed_label(self.folder.root)}")
        if sample.name is None:
            lines.append("(not named as an extracted sample)")
        return "\n".join(lines)

    def audio(self, key: str) -> tuple[F32, int]:
        return self._mono(key), self.params.sample_rate

    def label_choices(self) -> list[str]:
        labels = [g for g in self._groups if g not in (UNCHECKED, NO_LABEL)]
        return labels + [c for c in CLASSES if c not in labels]

    def relabel(self, key: str, label: str, whole_file: bool) -> str:
        dst = self.folder.relabel(Path(key), label)
        return f"moved to {dst.relative_to(self.folder.root)}"

    def delete(self, key: str) -> str:
        dst = self.folder.delete(Path(key))
        return f"moved to {dst.relative_to(self.folder.root)}"

    def accept(self, key: str) -> str:
        dst = self.folder.accept(Path(key))
        return f"accepted: {dst.relative_to(self.folder.root)}"

    def undo(self) -> str:
        return self.folder.undo()

    def save(self) -> str:
        return "nothing to save: moves are made on disk at once (u moves back)"


# ---------------------------------------------------------------- the UI


class PromptScreen(ModalScreen[str | None]):
    """A question answered with free text; ``choices`` listed and completed as you type."""

    AUTO_FOCUS = "#answer"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "cancel")]
    DEFAULT_CSS = """
    PromptScreen { align: center middle; }
    PromptScreen > Vertical { width: 60; height: auto; max-height: 80%;
                              border: thick $accent; background: $surface; padding: 0 1; }
    PromptScreen OptionList { height: auto; max-height: 12; }
    """

    def __init__(self, question: str, choices: Sequence[str] = (), value: str = "") -> None:
        super().__init__()
        self.question, self.choices, self.value = question, list(choices), value

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Text(self.question))
            yield Input(self.value, id="answer",
                        suggester=SuggestFromList(self.choices) if self.choices else None)
            if self.choices:
                yield OptionList(*(Option(Text(c), id=c) for c in self.choices))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip())

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option_id)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question: ``y`` yes, ``n`` or escape no."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "yes"), Binding("n", "answer(False)", "no"),
        Binding("escape", "answer(False)", "no", show=False)]
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Label { width: 60; border: thick $warning; background: $surface;
                            padding: 1 2; }
    """

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        yield Label(Text(f"{self.question}  (y/n)"))

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


_LAYOUT_CSS = """
#main { height: 1fr; }
#classes { width: 24; }
#rows { width: 1fr; }
#right { width: 1fr; min-width: 32; }
#spec { height: 1fr; }
#details { height: auto; max-height: 9; }
#status { height: 1; background: $boost; }
"""


class _EditorApp(App[None]):
    """What both apps share: the status line, the spectrogram panel, the player.
    (Textual keeps the app's bindings asleep while a dialog is open.)"""

    CSS = _LAYOUT_CSS

    def __init__(self, player: Player) -> None:
        super().__init__()
        self.player = player
        self.last_status = ""

    def say(self, text: str) -> None:
        """Show a one-line outcome in the status line."""
        self.last_status = text
        self.query_one("#status", Static).update(Text(text))

    def show_spectrogram(self, features: F32 | None) -> None:
        spec = self.query_one("#spec", Static)
        if features is None:
            spec.update(Text(""))
            return
        size = spec.content_size
        width = size.width if size.width > 4 else None
        height = size.height if size.height > 2 else None
        spec.update(render_spectrogram(features, width, height))

    async def play(self, audio: Callable[[], tuple[F32, int]]) -> None:
        try:
            sound, rate = await asyncio.to_thread(audio)
        except EditorError as exc:
            self.say(str(exc))
            return
        self.say(self.player.play(sound, rate))

    def on_unmount(self) -> None:
        self.player.close()


class BrowserApp(_EditorApp):
    """Browse a dataset or a sample folder: classes | rows | spectrogram and details."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "play", "play"), Binding("r", "relabel(False)", "relabel"),
        Binding("R", "relabel(True)", "relabel file"), Binding("d", "delete", "delete"),
        Binding("a", "accept", "accept"), Binding("u", "undo", "undo"),
        Binding("s", "save", "save"), Binding("slash", "filter", "filter"),
        Binding("q", "quit_editor", "quit")]

    def __init__(self, browser: Browser, player: Player, start_class: str | None = None) -> None:
        super().__init__(player)
        self.browser = browser
        self.label: str | None = start_class
        self.filter = ""
        self.key: str | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            yield OptionList(id="classes")
            yield DataTable(id="rows", cursor_type="row", zebra_stripes=True)
            with Vertical(id="right"):
                yield Static(id="spec")
                yield Static(id="details")
        yield Static(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.title = self.browser.title
        self.query_one("#rows", DataTable).add_columns(*self.browser.columns)
        self.refresh_classes()
        self.query_one("#classes", OptionList).focus()

    # -- lists

    def refresh_classes(self) -> None:
        """Redraw the class list (counts change with every edit) and the rows."""
        classes = self.browser.classes()
        names = [name for name, _ in classes]
        if self.label not in names:
            self.label = names[0] if names else None
        box = self.query_one("#classes", OptionList)
        with box.prevent(OptionList.OptionHighlighted):
            box.clear_options()
            box.add_options([Option(Text(f"{name} ({n})"), id=name) for name, n in classes])
            if self.label is not None:
                box.highlighted = names.index(self.label)
        self.refresh_rows()

    def refresh_rows(self) -> None:
        table = self.query_one("#rows", DataTable)
        at = table.cursor_row
        with table.prevent(DataTable.RowHighlighted):
            table.clear()
            for item in self.browser.items(self.label, self.filter) if self.label else []:
                table.add_row(*(Text(c) for c in item.cells), key=item.key)
        if table.row_count >= MAX_ROWS:
            self.say(f"showing the first {MAX_ROWS} rows: / narrows them")
        if table.row_count:
            table.move_cursor(row=min(at, table.row_count - 1))
            self.show_item(str(table.coordinate_to_cell_key(table.cursor_coordinate)
                               .row_key.value))
        else:
            self.show_item(None)

    def show_item(self, key: str | None) -> None:
        self.key = key
        details = self.query_one("#details", Static)
        if key is None:
            self.show_spectrogram(None)
            details.update(Text("no row" + (f" matches {self.filter!r}" if self.filter else "")))
            return
        try:
            self.show_spectrogram(self.browser.features(key))
            details.update(Text(self.browser.details(key)))
        except EditorError as exc:
            self.show_spectrogram(None)
            details.update(Text(str(exc)))

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option_list.id == "classes" and event.option_id != self.label:
            self.label = event.option_id
            table = self.query_one("#rows", DataTable)
            table.move_cursor(row=0)
            self.refresh_rows()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.show_item(str(event.row_key.value))

    def on_resize(self) -> None:
        self.call_after_refresh(self.show_item, self.key)

    # -- actions

    def _run(self, change: Callable[[], str]) -> None:
        try:
            self.say(change())
        except (EditorError, ClassNameError) as exc:
            self.say(str(exc))
            return
        self.refresh_classes()

    async def action_play(self) -> None:
        if self.key is None:
            self.say("no row selected")
            return
        key = self.key
        await self.play(lambda: self.browser.audio(key))

    def action_relabel(self, whole_file: bool) -> None:
        key = self.key
        if key is None:
            self.say("no row selected")
            return
        what = "every window of this file" if whole_file else "this row"
        self.push_screen(
            PromptScreen(f"new class for {what} (a name below, or a new one: "
                         "letters, digits, _, '-' between levels)",
                         self.browser.label_choices()),
            lambda label: self._run(lambda: self.browser.relabel(key, label, whole_file))
            if label else self.say("relabel cancelled"))

    def action_delete(self) -> None:
        key = self.key
        if key is None:
            self.say("no row selected")
            return
        self.push_screen(ConfirmScreen("delete this row?"),
                         lambda yes: self._run(lambda: self.browser.delete(key))
                         if yes else self.say("not deleted"))

    def action_accept(self) -> None:
        key = self.key
        if key is None:
            self.say("no row selected")
            return
        self._run(lambda: self.browser.accept(key))

    def action_undo(self) -> None:
        self._run(self.browser.undo)

    def action_save(self) -> None:
        self._run(self.browser.save)

    def action_filter(self) -> None:
        def apply(text: str | None) -> None:
            if text is not None:
                self.filter = text
                self.sub_title = f"filter: {text}" if text else ""
                self.refresh_rows()

        self.push_screen(PromptScreen("show the rows whose file, source, group or side "
                                      "holds these words (empty: all)", value=self.filter),
                         apply)

    def action_quit_editor(self) -> None:
        if not self.browser.dirty:
            self.exit()
            return
        self.push_screen(ConfirmScreen("unsaved changes: quit without saving?"),
                         lambda yes: self.exit() if yes else self.say("not quit: s saves"))


class ExtractorApp(_EditorApp):
    """Step through a stream window by window and save labelled windows as samples."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "play", "play"), Binding("n", "next", "next"),
        Binding("space", "next", "next", show=False), Binding("b", "back", "back"),
        Binding("l", "label", "label"), Binding("c", "channel", "channel"),
        Binding("u", "undo", "undo"), Binding("q", "quit", "quit"),
        *(Binding(str(k), f"quick_label({k - 1})", show=False) for k in range(1, 10))]
    CSS = _LAYOUT_CSS + "#view { width: 1fr; }  #labels { width: 30; padding: 0 1; }"

    def __init__(self, stepper: StreamStepper, folder: SampleFolder, labels: Sequence[str],
                 player: Player) -> None:
        super().__init__(player)
        self.stepper = stepper
        self.folder = folder
        self.labels = list(labels)
        self.channel = 0
        self._lock = asyncio.Lock()

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            with Vertical(id="view"):
                yield Static(id="spec")
                yield Static(id="details")
            yield Static(id="labels")
        yield Static(id="status")
        yield Footer()

    async def on_mount(self) -> None:
        self.title = f"extract from {self.stepper.origin.source} into {self.folder.root}"
        keys = [f"{k}  {name}" for k, name in enumerate(self.labels[:9], start=1)]
        self.query_one("#labels", Static).update(Text("\n".join(
            ["number key: label as", *keys, "l: any other label"])))
        await self.action_next()

    def show_window(self) -> None:
        win = self.stepper.current
        details = self.query_one("#details", Static)
        if win is None:
            self.show_spectrogram(None)
            details.update(Text("no window"))
            return
        params = self.stepper.params
        mono = win.audio[self.channel][None, :]
        self.show_spectrogram(window_features(mono, params)[0])
        length = self.stepper.duration_s
        of = f" of {length:.1f} s" if length else ""
        details.update(Text(
            f"window {win.index}: {win.start_s:.3f}-{win.start_s + params.window_s:.3f} s{of} "
            f"of {self.stepper.origin.source}, at {sample_time_text(win.time)}\n"
            f"channel {self.channel} of 0-{self.stepper.channels - 1} (c: next channel); "
            f"{params.fmin:g}-{params.fmax:g} Hz on a mel scale, low at the bottom"))

    async def _step(self, move: Callable[[], StreamWindow | None], none: str) -> bool:
        """Move with ``move`` off the event loop; False (and ``none`` said) if it could not."""
        async with self._lock:
            try:
                win = await asyncio.to_thread(move)
            except AudioDecodeError as exc:
                self.say(str(exc))
                return False
        if win is None:
            self.say(none)
        self.show_window()
        return win is not None

    async def action_next(self) -> None:
        await self._step(self.stepper.next, "end of the stream")

    async def action_back(self) -> None:
        await self._step(self.stepper.back, "no earlier window kept")

    def action_channel(self) -> None:
        self.channel = (self.channel + 1) % self.stepper.channels
        self.show_window()

    async def action_play(self) -> None:
        win = self.stepper.current
        if win is not None:
            rate = self.stepper.params.sample_rate
            await self.play(lambda: (win.audio[self.channel], rate))

    async def action_quick_label(self, k: int) -> None:
        if k < len(self.labels):
            await self.save_window(self.labels[k])

    def action_label(self) -> None:
        def chosen(label: str | None) -> None:
            if label:
                self.run_worker(self.save_window(label))

        self.push_screen(PromptScreen("label of this window", self.labels), chosen)

    async def save_window(self, label: str) -> None:
        """Save the current window's channel as a sample of ``label``, then step on."""
        win = self.stepper.current
        if win is None:
            self.say("no window to label")
            return
        try:
            path = self.folder.add(win.audio[self.channel], self.stepper.params.sample_rate,
                                   label, self.stepper.origin.source, self.channel, win.time)
        except (EditorError, ClassNameError) as exc:
            self.say(str(exc))
            return
        if label not in self.labels:
            self.labels.append(label)
        moved = await self._step(self.stepper.next, "")
        self.say(f"saved {path.relative_to(self.folder.root)}"
                 + ("" if moved else "; end of the stream"))

    def action_undo(self) -> None:
        try:
            self.say(self.folder.undo())
        except EditorError as exc:
            self.say(str(exc))

    def on_unmount(self) -> None:
        super().on_unmount()
        self.stepper.close()


def label_choices(*sources: Iterable[str]) -> list[str]:
    """Class names from each source in turn, each once."""
    out: list[str] = []
    for source in sources:
        out += [c for c in source if c not in out]
    return out
