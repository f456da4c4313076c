"""Audio files into a dataset, on the train side: ``add_audio``.

Windowing: a file is decoded with ``decode_file`` at the feature sample rate
(every channel) and cut, gated and labelled exactly as ``build_dataset`` does
(``file_windows``: 0.5 s windows, at most ``max_windows_per_channel`` per
channel, the energy gate, a noise floor). Windows below the gate become
``quiet`` when the dataset has that class (plus a few attenuated copies),
else they are dropped. The randomness is seeded per file (seed, sha256), so
adding the same files in another order gives the same windows.

Duplicates: a source file is known by its sha256; a file already in the dataset
is not added again and is reported. ``split`` (``learning.datasets.operations``)
makes the test side.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from audio.decode import AudioDecodeError, decode_file
from learning.corpus.manifest import sha256_file
from learning.datasets.compile import DatasetConfig, file_windows
from learning.datasets.format import QUIET, TRAIN, CompiledDataset, SourceFile, Windows
from learning.datasets.operations import check_class_name
from learning.datasets.samples import AudioItem, Skipped

Progress = Callable[[str], None]  # called with a file name after each file


@dataclass
class AddReport:
    """What ``add_audio`` did: files and windows added, what it left out and why."""

    files: int = 0
    windows: dict[str, int] = field(default_factory=dict)
    new_classes: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


@dataclass
class _Batch:
    """Windows and files being added, before they join the dataset."""

    names: list[str]
    parts: list[Windows] = field(default_factory=list)
    index: list[npt.NDArray[np.int32]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    provenance: list[SourceFile] = field(default_factory=list)


def add_audio(ds: CompiledDataset, items: Sequence[AudioItem], *, licence: str = "",
              seed: int = 0, cfg: DatasetConfig | None = None,
              progress: Progress | None = None) -> tuple[CompiledDataset, AddReport]:
    """Decode, window and gate each file and add its windows to the train side.

    Files already in ``ds`` (same sha256) and files that do not decode or keep no
    window are left out and reported; classes are created as they are met.
    """
    for item in items:
        check_class_name(item.label)
    cfg = cfg or DatasetConfig(seed=seed)
    batch = _Batch(list(ds.label_names))
    report = AddReport()
    known = set(ds.files)
    for item in items:
        outcome = _add_file(ds, batch, item, known, licence, seed, cfg)
        if isinstance(outcome, Skipped):
            report.skipped.append(outcome)
        elif outcome is None:
            report.duplicates.append(str(item.path))
        else:
            report.files += 1
            for label, n in outcome.items():
                report.windows[label] = report.windows.get(label, 0) + n
        if progress is not None:
            progress(item.path.name)
    report.new_classes = batch.names[len(ds.label_names):]
    return _join(ds, batch), report


def _add_file(ds: CompiledDataset, batch: _Batch, item: AudioItem, known: set[str],
              licence: str, seed: int, cfg: DatasetConfig) -> dict[str, int] | Skipped | None:
    """Window one file into ``batch``: windows per class, a ``Skipped``, or None (duplicate)."""
    try:
        sha = sha256_file(item.path)
        if sha in known:
            return None
        audio, _ = decode_file(item.path, ds.params.sample_rate)
    except AudioDecodeError as exc:
        return Skipped(str(item.path), f"not audio that can be decoded ({exc.reason})")
    except OSError as exc:
        return Skipped(str(item.path), f"cannot be read ({exc.strerror or exc})")
    names = batch.names
    class_id = names.index(item.label) if item.label in names else len(names)
    quiet_id = names.index(QUIET) if QUIET in names else (
        class_id if item.label == QUIET else None)
    rng = np.random.default_rng([seed, int(sha[:16], 16)])
    wins = file_windows(audio, class_id, quiet_id, ds.params, cfg, rng)
    if len(wins) == 0:
        return Skipped(str(item.path), "no window passed the energy gate (silent?)")
    if class_id == len(names):
        names.append(item.label)
    known.add(sha)
    batch.parts.append(wins)
    batch.index.append(np.full(len(wins), len(ds.files) + len(batch.files), np.int32))
    batch.files.append(sha)
    batch.provenance.append(SourceFile(
        path=str(item.path.resolve()), licence=licence, label=item.label, group=item.group,
        source=item.source, channel=item.channel, time=item.time))
    ids, counts = np.unique(wins.labels, return_counts=True)
    return {names[int(i)]: int(n) for i, n in zip(ids, counts, strict=True)}


def _join(ds: CompiledDataset, batch: _Batch) -> CompiledDataset:
    if not batch.files:
        return replace(ds, label_names=tuple(batch.names),
                       class_split={n: ds.class_split.get(n, "group") for n in batch.names})
    added = Windows.concat(batch.parts)
    return replace(
        ds, windows=Windows.concat([ds.windows, added]),
        split=np.concatenate([ds.split, np.full(len(added), TRAIN, np.int8)]),
        file_index=np.concatenate([ds.file_index, *batch.index]),
        label_names=tuple(batch.names), files=(*ds.files, *batch.files),
        class_split={n: ds.class_split.get(n, "group") for n in batch.names},
        provenance=(*ds.provenance, *batch.provenance))
