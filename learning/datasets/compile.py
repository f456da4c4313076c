"""From a corpus manifest to labelled log-mel windows, split held-out by recording.

Every file is decoded at 48 kHz; each channel is cut into 0.5 s windows (the
hop grows for long recordings so that no recording brings more than
``max_windows_per_channel`` windows, and shrinks to ``min_hop_s`` for short
ones); a white noise floor (-90..-70 dBFS) is added like a real microphone's.

Labels (the energy gate): a window below ``gate_db`` RMS is ``quiet`` whatever
its file's class; a window more than ``relative_gate_db`` below its file's
loudest window is dropped (a gap between calls); the others take the file's
class. A few real windows per recording are also attenuated into
``quiet_levels_db`` and labelled ``quiet`` (see
``learning.corpus.packages.QUIET_DEFINITION``).

Split (``assign_splits``): by recording group, never by window. Files whose
decoded audio is the same recording (equal length, correlated envelopes) are
merged into one group first. For each class the groups are shuffled (seeded)
and moved to the test side until it holds about ``test_fraction`` of the class's
windows, keeping at least one group on each side. A class with a single group
cannot be split by recording: each of its files is split in time (train
windows end before ``(1 - test_fraction) * duration``, test windows start one
window later) and the class is reported with split ``"time"``. Quiet windows
follow the side of the recording they come from.

The compiled dataset's format (``CompiledDataset``) is in ``learning.datasets.format``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from rich.progress import Progress

from audio.decode import decode_file
from inference.features import F32, FeatureParams, frame_windows, window_features
from inference.hearing import QUIET_GATE_DB, rms_db  # rms_db: also this module's API
from learning.corpus.manifest import CorpusFile, CorpusManifest, ExcludedFile
from learning.corpus.packages import CLASSES
from learning.datasets.format import (
    DROPPED,
    I8,
    I16,
    I32,
    QUIET,
    TEST,
    TRAIN,
    CompiledDataset,
    SourceFile,
    Windows,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetConfig:
    """How recordings become windows and how they are split."""

    min_hop_s: float = 0.1
    max_windows_per_channel: int = 120
    gate_db: float = QUIET_GATE_DB
    relative_gate_db: float = 30.0
    noise_floor_db: tuple[float, float] = (-90.0, -70.0)
    quiet_levels_db: tuple[float, float] = (-80.0, -52.0)
    quiet_per_recording: int = 2
    test_fraction: float = 0.2
    seed: int = 0

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)



def channel_windows(signal: F32, params: FeatureParams, cfg: DatasetConfig
                    ) -> tuple[F32, F32]:
    """Windows of one channel (float32 (N, window_samples)) and their start times (s).

    A signal shorter than one window is centred in a zero-padded window.
    """
    w = params.window_samples
    if signal.shape[0] < w:
        padded = np.zeros(w, dtype=np.float32)
        start = (w - signal.shape[0]) // 2
        padded[start:start + signal.shape[0]] = signal
        signal = padded
    span = signal.shape[0] - w
    min_hop = max(1, round(cfg.min_hop_s * params.sample_rate))
    hop = max(min_hop, int(np.ceil(span / max(1, cfg.max_windows_per_channel - 1))))
    windows = frame_windows(signal, params, hop)
    offsets = (np.arange(windows.shape[0]) * hop / params.sample_rate).astype(np.float32)
    return windows, offsets


def _label_windows(levels: F32, peak_db: float, class_id: int, quiet_id: int | None,
                   cfg: DatasetConfig) -> I16:
    """The energy gate: quiet below ``gate_db``, dropped in gaps, else the class."""
    labels = np.full(levels.shape, class_id, dtype=np.int16)
    labels[levels < peak_db - cfg.relative_gate_db] = DROPPED
    labels[levels < cfg.gate_db] = DROPPED if quiet_id is None else quiet_id
    return labels


def _pick_quiet_copies(levels: F32, labels: I16, quiet_id: int, cfg: DatasetConfig,
                       rng: np.random.Generator) -> tuple[I32, F32]:
    """Which loud windows to copy as attenuated quiet ones, and the gain (dB) of each."""
    loud = np.flatnonzero((labels != DROPPED) & (labels != quiet_id))
    n = min(cfg.quiet_per_recording, loud.size)
    pick = np.sort(rng.choice(loud, size=n, replace=False)).astype(np.int32)
    target = rng.uniform(*cfg.quiet_levels_db, size=n).astype(np.float32)
    return pick, (target - levels[pick]).astype(np.float32)


def _channel(wins: F32, offsets: F32, class_id: int, quiet_id: int | None, peak_db: float,
             with_copies: bool, cfg: DatasetConfig, rng: np.random.Generator
             ) -> tuple[F32, I16, F32, F32]:
    """Gate one channel's windows and append its attenuated quiet copies.

    Returns (windows, labels, offsets, gain_db) of the kept windows.
    """
    levels = rms_db(wins)
    if class_id == quiet_id:
        labels = np.full(levels.shape, class_id, dtype=np.int16)
    else:
        labels = _label_windows(levels, peak_db, class_id, quiet_id, cfg)
    gains = np.zeros(levels.shape, np.float32)
    if with_copies and quiet_id is not None and class_id != quiet_id:
        pick, gain = _pick_quiet_copies(levels, labels, quiet_id, cfg, rng)
        copies = wins[pick] * (10.0 ** (gain / 20.0)).astype(np.float32)[:, None]
        wins = np.concatenate([wins, copies.astype(np.float32)])
        offsets = np.concatenate([offsets, offsets[pick]])
        labels = np.concatenate([labels, np.full(pick.size, quiet_id, np.int16)])
        gains = np.concatenate([gains, gain])
    keep = labels != DROPPED
    return wins[keep], labels[keep], offsets[keep], gains[keep]


def add_noise_floor(windows: F32, cfg: DatasetConfig, rng: np.random.Generator) -> F32:
    """Windows plus white noise at a random ``noise_floor_db`` RMS each (a microphone's
    self-noise, so that no band is digitally empty). float32 (N, samples)."""
    level = rng.uniform(*cfg.noise_floor_db, size=(windows.shape[0], 1))
    noise = rng.standard_normal(windows.shape, dtype=np.float32) * (10.0 ** (level / 20.0))
    return (windows + noise.astype(np.float32)).astype(np.float32)


def file_windows(audio: F32, class_id: int, quiet_id: int | None, params: FeatureParams,
                 cfg: DatasetConfig, rng: np.random.Generator) -> Windows:
    """Labelled log-mel windows of one decoded file, audio float32 (channels, n) at 48 kHz.

    Attenuated quiet copies are taken from the first channel only.
    """
    cut = [channel_windows(audio[ch], params, cfg) for ch in range(audio.shape[0])]
    peak_db = float(max(rms_db(w).max() for w, _ in cut))
    parts = []
    for ch, (wins, offsets) in enumerate(cut):
        kept, labels, offs, gains = _channel(wins, offsets, class_id, quiet_id, peak_db,
                                             ch == 0, cfg, rng)
        parts.append(Windows(
            features=window_features(add_noise_floor(kept, cfg, rng), params),
            labels=labels, channel=np.full(labels.shape, ch, np.int8), offset_s=offs,
            level_db=rms_db(kept), gain_db=gains))
    return Windows.concat(parts)


# ---------------------------------------------------------------- recordings and groups


def fingerprint(audio: F32, sample_rate: int) -> F32:
    """A gain-independent outline of a recording: the 100 ms RMS envelope in dB
    of the channel mix, mean removed; float32 (frames,)."""
    mono = audio.mean(axis=0)
    step = sample_rate // 10
    n = max(1, mono.shape[0] // step)
    frames = np.resize(mono, n * step).reshape(n, step) if mono.shape[0] >= step else mono[None]
    env = rms_db(frames.astype(np.float32))
    outline: F32 = (env - env.mean()).astype(np.float32)
    return outline


def _same_recording(a: F32, b: F32, threshold: float = 0.97, min_frames: int = 30) -> bool:
    """Equal length (±100 ms) and envelopes correlated above ``threshold``; recordings
    shorter than ``min_frames`` (3 s) are too short to tell from chance."""
    if abs(a.shape[0] - b.shape[0]) > 1 or min(a.shape[0], b.shape[0]) < min_frames:
        return False
    n = min(a.shape[0], b.shape[0])
    x, y = a[:n] - a[:n].mean(), b[:n] - b[:n].mean()
    denom = float(np.sqrt(np.dot(x, x) * np.dot(y, y)))
    return denom > 0 and float(np.dot(x, y)) / denom >= threshold


def merge_groups(entries: Sequence[CorpusFile], prints: Sequence[F32]) -> dict[str, str]:
    """Group renames that put files holding the same recording (at any gain) together.

    Returns {old group: merged group}; only files of the same class are compared.
    """
    parent: dict[str, str] = {e.group: e.group for e in entries}

    def root(g: str) -> str:
        while parent[g] != g:
            g = parent[g]
        return g

    order = sorted(range(len(entries)), key=lambda i: prints[i].shape[0])
    for pos, i in enumerate(order):
        for j in order[pos + 1:]:
            if prints[j].shape[0] > prints[i].shape[0] + 1:
                break
            a, b = entries[i], entries[j]
            if a.label == b.label and root(a.group) != root(b.group) and \
                    _same_recording(prints[i], prints[j]):
                ra, rb = sorted((root(a.group), root(b.group)))
                parent[rb] = ra
                log.info("same recording: %s and %s -> group %s", a.path, b.path, ra)
    return {g: root(g) for g in parent}


def assign_splits(entries: Sequence[CorpusFile], counts: Sequence[int], cfg: DatasetConfig
                  ) -> tuple[dict[str, str], dict[str, str]]:
    """Side of each recording group and split method of each class.

    ``counts[i]``: windows of ``entries[i]`` labelled with its class. Returns
    ({group: "train" | "test" | "time"}, {class: "group" | "time"}).
    """
    by_class: dict[str, dict[str, int]] = {}
    for entry, n in zip(entries, counts, strict=True):
        groups = by_class.setdefault(entry.label, {})
        groups[entry.group] = groups.get(entry.group, 0) + n
    sides: dict[str, str] = {}
    methods: dict[str, str] = {}
    for label, groups in sorted(by_class.items()):
        if len(groups) == 1:
            sides.update({g: "time" for g in groups})
            methods[label] = "time"
            if label != QUIET:  # quiet windows mostly come from the other classes' files
                log.warning("class %s has a single recording group: split in time", label)
            continue
        test = pick_test_groups(label, groups, cfg)
        sides.update({g: "test" if g in test else "train" for g in groups})
        methods[label] = "group"
    return sides, methods


def pick_test_groups(label: str, groups: dict[str, int], cfg: DatasetConfig) -> set[str]:
    """Shuffled groups into the test side until ~test_fraction of the windows, never
    overshooting twice the target, one group at least on each side."""
    order = sorted(groups)
    random.Random(f"{cfg.seed}:{label}").shuffle(order)
    target = cfg.test_fraction * sum(groups.values())
    test: set[str] = set()
    count = 0
    for g in order:
        if count >= target or len(test) == len(groups) - 1:
            break
        if count + groups[g] <= 2 * target:
            test.add(g)
            count += groups[g]
    if not test:
        test.add(min(order, key=lambda g: groups[g]))
    return test


def window_sides(side: str, offsets: F32, cut_s: float, window_s: float) -> I8:
    """0 (train), 1 (test) or -1 (dropped: the one-window gap of a time split) per window."""
    if side == "train":
        return np.zeros(offsets.shape, np.int8)
    if side == "test":
        return np.ones(offsets.shape, np.int8)
    out = np.full(offsets.shape, DROPPED, np.int8)
    out[offsets + window_s <= cut_s] = TRAIN
    out[offsets >= cut_s + window_s] = TEST
    return out



def dataset_key(manifest: CorpusManifest, params: FeatureParams, cfg: DatasetConfig,
                classes: Sequence[str] | None) -> str:
    """A short hash of everything a compiled dataset depends on (for caching)."""
    digest = hashlib.sha256()
    for f in manifest.files:
        digest.update(f"{f.sha256}:{f.label}:{f.group}\n".encode())
    digest.update(json.dumps(params.to_dict(), sort_keys=True).encode())
    digest.update(cfg.key().encode())
    digest.update(repr(sorted(classes) if classes else None).encode())
    return digest.hexdigest()[:16]


@dataclass
class _Decoded:
    entry: CorpusFile
    windows: Windows
    print: F32
    duration_s: float


def _decode_all(files: Sequence[CorpusFile], cache: Path, names: tuple[str, ...],
                params: FeatureParams, cfg: DatasetConfig, progress: bool
                ) -> Iterator[_Decoded | tuple[CorpusFile, str]]:
    """Decode and window every file; a file that fails to decode yields (entry, reason)."""
    rng = np.random.default_rng(cfg.seed)
    quiet_id = names.index(QUIET) if QUIET in names else None
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("decoding and windowing", total=len(files))
        for entry in files:
            bar.advance(task)
            try:
                audio, _ = decode_file(cache / entry.local, params.sample_rate)
            except Exception as exc:  # a corrupt corpus file is reported, not fatal
                yield entry, str(exc)
                continue
            wins = file_windows(audio, names.index(entry.label), quiet_id, params, cfg, rng)
            yield _Decoded(entry, wins, fingerprint(audio, params.sample_rate),
                           audio.shape[1] / params.sample_rate)


def build_dataset(manifest: CorpusManifest, cache: Path, params: FeatureParams | None = None,
                  cfg: DatasetConfig | None = None, classes: Sequence[str] | None = None,
                  progress: bool = True) -> tuple[CompiledDataset, CorpusManifest]:
    """Window, label and split the corpus (``classes``: a subset, quiet always included).

    Returns the dataset and the manifest updated with each file's merged group,
    side of the split and window counts (files that failed to decode move to
    ``excluded``).
    """
    params = params or FeatureParams()
    cfg = cfg or DatasetConfig()
    wanted = set(classes) if classes else set(CLASSES)
    files = [f for f in manifest.files if f.label in wanted]
    if not files:
        raise ValueError(f"the corpus has no file of the classes {sorted(wanted)}")
    names = tuple(c for c in CLASSES if c in {f.label for f in files} or c == QUIET)
    decoded: list[_Decoded] = []
    excluded = list(manifest.excluded)
    for item in _decode_all(files, cache, names, params, cfg, progress):
        if isinstance(item, _Decoded):
            decoded.append(item)
        else:
            log.warning("skipping %s: %s", item[0].path, item[1])
            excluded.append(ExcludedFile(package=item[0].package, path=item[0].path,
                                         sha256=item[0].sha256, reason=item[1]))
    if not decoded:
        raise ValueError("no file of the corpus could be decoded; see the warnings above")
    renames = merge_groups([d.entry for d in decoded], [d.print for d in decoded])
    entries = [d.entry.model_copy(update={"group": renames[d.entry.group],
                                          "duration_s": round(d.duration_s, 3)})
               for d in decoded]
    counts = [int(np.count_nonzero(d.windows.labels == names.index(e.label)))
              for d, e in zip(decoded, entries, strict=True)]
    sides, methods = assign_splits(entries, counts, cfg)
    if any(side != "time" for side in sides.values()):
        methods[QUIET] = "group"  # quiet windows follow their recordings' groups
    dataset, entries = _assemble(decoded, entries, sides, names, methods, params, cfg)
    updated = manifest.model_copy(update={"files": entries, "excluded": excluded})
    return dataset, updated


def _assemble(decoded: Sequence[_Decoded], entries: list[CorpusFile], sides: dict[str, str],
              names: tuple[str, ...], methods: dict[str, str], params: FeatureParams,
              cfg: DatasetConfig) -> tuple[CompiledDataset, list[CorpusFile]]:
    """Give every window its side, drop the time-split gaps, stack everything."""
    parts: list[Windows] = []
    splits: list[I8] = []
    index: list[I32] = []
    for i, (d, entry) in enumerate(zip(decoded, entries, strict=True)):
        side = sides[entry.group]
        cut = (1.0 - cfg.test_fraction) * d.duration_s
        which = window_sides(side, d.windows.offset_s, cut, params.window_s)
        keep = which != DROPPED
        parts.append(d.windows.take(keep))
        splits.append(which[keep])
        index.append(np.full(int(keep.sum()), i, np.int32))
        entries[i] = entry.model_copy(update={
            "split": side, "time_split_s": round(cut, 3) if side == "time" else None,
            "windows_train": int(np.count_nonzero(which == TRAIN)),
            "windows_test": int(np.count_nonzero(which == TEST))})
    dataset = CompiledDataset(
        windows=Windows.concat(parts), split=np.concatenate(splits),
        file_index=np.concatenate(index), label_names=names,
        files=tuple(e.sha256 for e in entries),
        class_split={c: methods.get(c, "group") for c in names}, params=params,
        provenance=tuple(SourceFile(path=e.path, licence=e.licence, package=e.package,
                                    label=e.label, group=e.group) for e in entries))
    return dataset, entries
