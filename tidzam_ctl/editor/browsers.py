"""What the browsing app shows and changes: a compiled dataset (keys: row numbers) or
a sample folder (keys: file paths), behind one ``Browser`` protocol.

Features for the spectrogram: float32 (frames, mels); audio for the player: float32
(n,) with its rate (the feature sample rate, 48 kHz by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from audio.decode import AudioDecodeError, AudioStream
from inference.features import F32, FeatureParams
from learning.corpus.fetch import default_cache_dir
from learning.corpus.packages import CLASSES
from learning.datasets.samples import UNCHECKED
from tidzam_ctl.editor.dataset_edits import DatasetEdits
from tidzam_ctl.editor.errors import EditorError
from tidzam_ctl.editor.sample_folder import NO_LABEL, Sample, SampleFolder
from tidzam_ctl.editor.spectrogram import audio_spectrogram
from tidzam_ctl.editor.window_audio import window_audio

MAX_ROWS = 2000  # rows shown at once: a filter narrows a bigger class
MAX_SAMPLE_S = 30  # of a sample file shown and played (a long recording is no sample)


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
                    blocks.append(block.samples[0])
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
