"""Replay archived audio through two models and report where they disagree.

``tidzam_ctl model compare A B`` is the command line of this module; nothing here
publishes an event or touches SQL, so the live detections are never affected.

Which audio
    For each source, the archive files (``audio.archive``: ``<source>-YYYY-MM-DD-
    HH-MM-SS.ext``) overlapping [since, until) are decoded as ``source add --database
    DIR --date SINCE`` plays them back: every file is its own session, the first one
    sought to ``since`` (``AudioStream.seek``, sample-accurate), the later ones from
    their own start. A file whose audio cannot be read is skipped with a warning and
    counted (``CompareReport.unreadable``); what was scored before a decoding error
    in the middle of a file is kept.

Which windows
    The live classifier's grid (``consumers.classifier.classifier``, ``inference.windows``):
    window ``i`` of a session starts at sample ``i * hop``, ``hop = round(window *
    (1 - overlap))``, and a window that would run past the session's end is dropped.
    The end here is the file's end or ``until``, whichever comes first, so a window
    is scored only when it lies entirely inside [since, until).

Models with other feature parameters
    When both models have the same sample rate and window length they score the same
    windows (features still computed with each model's own parameters: mels, FFT,
    band). Otherwise each model gets its own windows (its own rate, window and hop,
    one decoding per rate) and each window of A is paired with the window of B on
    the same channel whose middle is nearest; an A window that no B window overlaps
    is counted as unpaired, not compared. Times reported are A's windows.

Decisions
    Each model decides with its own ``model.json`` rule (threshold, margin:
    ``inference.scoring.decide``), and decisions are compared as label strings
    (``unknown`` included), so models whose label lists differ compare too.

Audio at every boundary here: decoded blocks float32 (channels, n) in [-1, 1] at a
model's sample rate; windows float32 (N, window_samples), mono.
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from audio.archive import ArchiveFile, scan
from audio.decode import AudioDecodeError, AudioStream
from inference.features import FeatureParams, window_features
from inference.scoring import UNKNOWN, Scorer

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

BATCH = 256  # windows per inference call
# A file whose length cannot be read is tried when its name puts its start this
# close before ``since`` (archive files are hour files: ``audio.archive``).
UNKNOWN_LENGTH_SLACK = timedelta(hours=2)
OnProgress = Callable[[float], None]  # called with seconds of audio just decoded


class CompareError(Exception):
    """Nothing to compare: no archive folder, no archive file in the time range."""


@dataclass(frozen=True)
class Grid:
    """Where a model's windows sit: ``window`` samples every ``hop`` at ``sample_rate``."""

    sample_rate: int
    window: int
    hop: int

    @classmethod
    def of(cls, params: FeatureParams, overlap: float) -> Grid:
        """The live classifier's grid for a model (its ``hop`` formula)."""
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        window = params.window_samples
        return cls(params.sample_rate, window, max(1, round(window * (1.0 - overlap))))

    def time_ns(self, origin_ns: int, sample: int) -> int:
        """UTC ns of a session's sample index (``AudioChunk.time_of``'s arithmetic)."""
        return origin_ns + sample * 1_000_000_000 // self.sample_rate


# ------------------------------------------------------------------- audio


def source_folders(archive_dir: Path | None, databases: Sequence[Path] = (),
                   sources: Sequence[str] = ()) -> list[Path]:
    """The folders to read: ``databases`` if given, else ``archive_dir/<source>`` for
    each of ``sources``, else every sub-folder of ``archive_dir`` (one per source,
    as the archiver writes them). Raises CompareError for a folder that is not there."""
    if databases:
        folders = list(databases)
    elif archive_dir is None:
        raise CompareError("no archive folder: set TIDZAM_ARCHIVE_DIR or pass --database DIR")
    elif sources:
        folders = [archive_dir / name for name in sources]
    else:
        if not archive_dir.is_dir():
            raise CompareError(f"no archive folder {archive_dir} (TIDZAM_ARCHIVE_DIR)")
        folders = sorted(p for p in archive_dir.iterdir()
                         if p.is_dir() and not p.name.startswith("."))
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        raise CompareError(f"no archive folder {', '.join(missing)}")
    return folders


def find_sources(folders: Sequence[Path], names: Sequence[str] = ()
                 ) -> dict[str, list[ArchiveFile]]:
    """Archive files of ``folders`` by source name (from the file names), in time
    order; only the sources ``names`` if given (CompareError if one has no file)."""
    found: dict[str, list[ArchiveFile]] = {}
    for folder in folders:
        for f in scan(folder):
            if not names or f.name in names:
                found.setdefault(f.name, []).append(f)
    absent = [n for n in names if n not in found]
    if absent:
        raise CompareError(f"no archive file of source(s) {', '.join(absent)} in "
                           f"{', '.join(map(str, folders))}")
    return {name: sorted(files, key=lambda f: f.start) for name, files in sorted(found.items())}


@dataclass(frozen=True)
class Segment:
    """The part of one archive file inside [since, until), played as one session.

    Decoding starts ``offset_s`` into the file; its first sample is at ``origin_ns``
    (UTC); nothing at or after ``stop_ns`` is scored. ``expected_s``: the audio
    in range, None where the file's length could not be read."""

    source: str
    path: Path
    origin_ns: int
    offset_s: float
    stop_ns: int
    expected_s: float | None


def plan(sources: Mapping[str, Sequence[ArchiveFile]], since: datetime,
         until: datetime) -> list[Segment]:
    """The segments to decode, by source then time; CompareError if none."""
    if until <= since:
        raise CompareError(f"--until {until.isoformat()} is not after --since "
                           f"{since.isoformat()}")
    since_ns, until_ns = _ns(since), _ns(until)
    segments = []
    for source, files in sources.items():
        for f in files:
            start_ns = _ns(f.start)
            if start_ns >= until_ns:
                continue
            if f.duration_s is None:
                if f.start < since - UNKNOWN_LENGTH_SLACK:
                    continue
            elif _ns(f.end) <= since_ns:
                continue
            origin_ns = max(start_ns, since_ns)
            expected = None if f.duration_s is None else \
                (min(_ns(f.end), until_ns) - origin_ns) / 1e9
            segments.append(Segment(source, f.path, origin_ns, (origin_ns - start_ns) / 1e9,
                                    until_ns, expected))
    if not segments:
        covered = ", ".join(f"{s} {_span(fs)}" for s, fs in sources.items()) or "no file at all"
        raise CompareError(f"no archived audio between {since.isoformat()} and "
                           f"{until.isoformat()} (archives: {covered})")
    return segments


def _span(files: Sequence[ArchiveFile]) -> str:
    known = [f for f in files if f.duration_s is not None]
    if not known:
        return "(unreadable)"
    return f"{known[0].start.isoformat()} to {max(f.end for f in known).isoformat()}"


def _ns(t: datetime) -> int:
    """UTC ns of an aware datetime, exactly (no float rounding)."""
    delta = t - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


# ----------------------------------------------------------------- windows


class _Cutter:
    """The windows of one session on one grid, from blocks as they are decoded."""

    def __init__(self, grid: Grid, channels: int, stop: int) -> None:
        self.grid = grid
        self.stop = stop  # first sample index past the range
        self._pending: F32 = np.zeros((channels, 0), dtype=np.float32)
        self._base = 0  # session sample index of _pending[:, 0]
        self._next = 0  # index of the next window on the grid

    def push(self, block: F32) -> tuple[F32, npt.NDArray[np.int32], I64]:
        """Windows completed by ``block`` (channels, n): samples (K, window), their
        channels (K,) and session start samples (K,), channel-major."""
        g = self.grid
        self._pending = np.concatenate([self._pending, block], axis=1)
        limit = min(self._base + self._pending.shape[1], self.stop)
        last = (limit - g.window) // g.hop
        channels = self._pending.shape[0]
        if last < self._next:
            return (np.zeros((0, g.window), dtype=np.float32), np.zeros(0, dtype=np.int32),
                    np.zeros(0, dtype=np.int64))
        starts = np.arange(self._next, last + 1, dtype=np.int64) * g.hop
        view = np.lib.stride_tricks.sliding_window_view(self._pending, g.window, axis=1)
        windows = view[:, starts - self._base].reshape(-1, g.window)
        out = (np.ascontiguousarray(windows, dtype=np.float32),
               np.repeat(np.arange(channels, dtype=np.int32), starts.size),
               np.tile(starts, channels))
        self._next = last + 1
        drop = self._next * g.hop - self._base
        self._pending, self._base = self._pending[:, drop:], self._base + drop
        return out


@dataclass
class _Decisions:
    """One model's decisions over a segment, in the order the windows were cut."""

    channels: list[npt.NDArray[np.int32]] = field(default_factory=list)
    starts: list[I64] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    def arrays(self) -> tuple[npt.NDArray[np.int32], I64, npt.NDArray[np.str_]]:
        """(channels, starts, labels), sorted by channel then start."""
        if not self.labels:
            return (np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int64),
                    np.zeros(0, dtype=np.str_))
        ch, st = np.concatenate(self.channels), np.concatenate(self.starts)
        order = np.lexsort((st, ch))
        return ch[order], st[order], np.asarray(self.labels)[order]


def _decide(model: Scorer, features: F32) -> list[str]:
    """Decisions of a batch of features (N, frames, mels) with the model's own rule."""
    return ["+".join(model.decide(s)) for s in model.predict(features)]


class _Batcher:
    """Windows of one grid gathered into batches of BATCH for every model on it."""

    def __init__(self, models: Sequence[tuple[Scorer, _Decisions]]) -> None:
        self.models = models
        self._parts: list[tuple[F32, npt.NDArray[np.int32], I64]] = []
        self._n = 0

    def add(self, part: tuple[F32, npt.NDArray[np.int32], I64]) -> None:
        if part[0].shape[0]:
            self._parts.append(part)
            self._n += part[0].shape[0]
        if self._n >= BATCH:
            self.flush()

    def flush(self) -> None:
        if not self._parts:
            return
        windows = np.concatenate([p[0] for p in self._parts])
        features: dict[FeatureParams, F32] = {}  # two versions often share their params
        for model, decisions in self.models:
            params = model.features
            if params not in features:
                features[params] = window_features(windows, params)
            decisions.labels.extend(_decide(model, features[params]))
            decisions.channels.extend(p[1] for p in self._parts)
            decisions.starts.extend(p[2] for p in self._parts)
        self._parts, self._n = [], 0


# ------------------------------------------------------------------ report


@dataclass(frozen=True)
class ClassCount:
    """For one label: windows A decided it, B decided it, and both did."""

    label: str
    a: int
    b: int
    both: int


@dataclass
class Tally:
    """Counts over compared windows: ``pairs[(A label, B label)]`` windows."""

    pairs: Counter[tuple[str, str]] = field(default_factory=Counter)
    unpaired: int = 0  # A windows no B window overlaps (different grids only)

    @property
    def windows(self) -> int:
        return sum(self.pairs.values())

    @property
    def agree(self) -> int:
        return sum(n for (a, b), n in self.pairs.items() if a == b)

    @property
    def agreement(self) -> float | None:
        return self.agree / self.windows if self.windows else None

    def add(self, other: Tally) -> None:
        self.pairs.update(other.pairs)
        self.unpaired += other.unpaired

    def classes(self, order: Sequence[str]) -> list[ClassCount]:
        """One row per label of ``order`` then any other label decided."""
        a, b = Counter[str](), Counter[str]()
        for (la, lb), n in self.pairs.items():
            a[la] += n
            b[lb] += n
        seen = list(order) + sorted((set(a) | set(b)) - set(order))
        return [ClassCount(label, a[label], b[label], self.pairs[(label, label)])
                for label in seen]


@dataclass(frozen=True)
class Disagreement:
    """Consecutive windows of one channel where A and B decided the same two
    different labels: listen to ``path`` from ``offset_s`` for ``end - start``."""

    source: str
    channel: int
    start_ns: int
    end_ns: int
    a_label: str
    b_label: str
    windows: int
    path: Path
    offset_s: float

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "channel": self.channel, "start": _iso(self.start_ns),
                "end": _iso(self.end_ns), "seconds": (self.end_ns - self.start_ns) / 1e9,
                "a": self.a_label, "b": self.b_label, "windows": self.windows,
                "file": str(self.path), "offset_s": round(self.offset_s, 6)}


@dataclass(frozen=True)
class ModelSide:
    """What the report says about a compared model."""

    spec: str
    labels: tuple[str, ...]
    grid: Grid


@dataclass
class CompareReport:
    """The outcome of ``compare``: totals, per source, top disagreement ranges."""

    a: ModelSide
    b: ModelSide
    since: datetime
    until: datetime
    overlap: float
    total: Tally = field(default_factory=Tally)
    sources: dict[str, Tally] = field(default_factory=dict)
    top: list[Disagreement] = field(default_factory=list)  # longest first
    n_ranges: int = 0
    files: int = 0
    audio_s: float = 0.0
    unreadable: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def shared_windows(self) -> bool:
        return self.a.grid == self.b.grid

    @property
    def label_order(self) -> list[str]:
        return list(dict.fromkeys([*self.a.labels, *self.b.labels, UNKNOWN]))

    def to_json(self) -> dict[str, Any]:
        """Machine output (``--json``)."""
        def side(m: ModelSide) -> dict[str, Any]:
            g = m.grid
            return {"spec": m.spec, "labels": list(m.labels), "sample_rate": g.sample_rate,
                    "window_samples": g.window, "hop_samples": g.hop}

        return {"a": side(self.a), "b": side(self.b), "since": self.since.isoformat(),
                "until": self.until.isoformat(), "overlap": self.overlap,
                "shared_windows": self.shared_windows, "files": self.files,
                "audio_s": round(self.audio_s, 3),
                "unreadable": [{"file": str(p), "reason": r} for p, r in self.unreadable],
                "total": self._tally_json(self.total),
                "sources": {s: self._tally_json(t) for s, t in self.sources.items()},
                "disagreements": {"ranges": self.n_ranges,
                                  "top": [d.to_json() for d in self.top]}}

    def _tally_json(self, t: Tally) -> dict[str, Any]:
        return {"windows": t.windows, "agree": t.agree, "agreement": t.agreement,
                "unpaired": t.unpaired,
                "classes": [vars(c) for c in t.classes(self.label_order)],
                "pairs": [{"a": a, "b": b, "windows": n}
                          for (a, b), n in sorted(t.pairs.items(), key=lambda x: -x[1])]}


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC).replace(
        microsecond=ns % 1_000_000_000 // 1_000).isoformat()


# ----------------------------------------------------------------- compare


def compare(a: Scorer, b: Scorer, segments: Sequence[Segment], since: datetime,
            until: datetime, *, overlap: float = 0.25, top: int = 20,
            progress: OnProgress | None = None) -> CompareReport:
    """Score every window of ``segments`` (``plan``) with ``a`` (the reference) and
    ``b`` (the candidate); count where their decisions differ. Reads audio only."""
    report = CompareReport(ModelSide(f"{a.model_id}@{a.version}", a.labels,
                                     Grid.of(a.features, overlap)),
                           ModelSide(f"{b.model_id}@{b.version}", b.labels,
                                     Grid.of(b.features, overlap)),
                           since, until, overlap)
    # a min-heap of the ``top`` longest ranges: (windows, -start, arrival, range)
    ranges: list[tuple[int, int, int, Disagreement]] = []
    for seg in segments:
        da, db = _Decisions(), _Decisions()
        try:
            _score(seg, [(a, report.a.grid, da), (b, report.b.grid, db)], report, progress)
        except AudioDecodeError as exc:
            log.warning("skipped %s: %s", seg.path, exc.reason)
            report.unreadable.append((seg.path, exc.reason))
        tally = _paired(seg, report, da, db, ranges, top)
        report.total.add(tally)
        report.sources.setdefault(seg.source, Tally()).add(tally)
        report.files += 1
    report.top = [d for *_, d in sorted(ranges, key=lambda e: (-e[0], -e[1], e[2]))]
    return report


def _score(seg: Segment, models: Sequence[tuple[Scorer, Grid, _Decisions]],
           report: CompareReport, progress: OnProgress | None) -> None:
    """Decode ``seg`` once per sample rate and decide every window of every model."""
    rates = sorted({g.sample_rate for _, g, _ in models})
    for rate in rates:
        with AudioStream(seg.path, rate) as stream:
            stream.seek(seg.offset_s)
            stop = (seg.stop_ns - seg.origin_ns) * rate // 1_000_000_000
            grids = {g for _, g, _ in models if g.sample_rate == rate}
            work = [(_Cutter(g, stream.info.channels, stop),
                     _Batcher([(m, d) for m, mg, d in models if mg == g])) for g in grids]
            decoded = 0
            for block in stream.blocks():
                block = block[:, : max(0, stop - decoded)]
                decoded += block.shape[1]
                for cutter, batcher in work:
                    batcher.add(cutter.push(block))
                seconds = block.shape[1] / rate / len(rates)
                report.audio_s += seconds
                if progress is not None:
                    progress(seconds)
                if decoded >= stop:
                    break
            for _, batcher in work:
                batcher.flush()


def _paired(seg: Segment, report: CompareReport, da: _Decisions, db: _Decisions,
            ranges: list[tuple[int, int, int, Disagreement]], top: int) -> Tally:
    """Pair A's windows with B's, count the pairs, and collect disagreement ranges."""
    ga, gb = report.a.grid, report.b.grid
    ch_a, st_a, lab_a = da.arrays()
    ch_b, st_b, lab_b = db.arrays()
    if ga == gb:
        # one batcher scored both: the same windows in the same order
        assert np.array_equal(st_a, st_b) and np.array_equal(ch_a, ch_b)
        keep = np.ones(lab_a.size, dtype=bool)
    else:
        index, keep = _nearest(ga, ch_a, st_a, gb, ch_b, st_b)
        lab_b = lab_b[index] if lab_b.size else np.full(lab_a.size, UNKNOWN)
    tally = Tally(Counter(zip(lab_a[keep].tolist(), lab_b[keep].tolist(), strict=True)),
                  int((~keep).sum()))
    for d in _runs(seg, ga, ch_a[keep], st_a[keep], lab_a[keep], lab_b[keep]):
        report.n_ranges += 1
        entry = (d.windows, -d.start_ns, report.n_ranges, d)
        if len(ranges) < top:
            heapq.heappush(ranges, entry)
        elif top:
            heapq.heappushpop(ranges, entry)  # drops the shortest (then latest)
    return tally


def _runs(seg: Segment, grid: Grid, ch: npt.NDArray[np.int32], st: I64,
          la: npt.NDArray[np.str_], lb: npt.NDArray[np.str_]) -> list[Disagreement]:
    """Disagreeing windows merged: consecutive on the grid, same channel, same pair
    of labels. Inputs sorted by channel then start."""
    rows = np.flatnonzero(la != lb)
    out: list[Disagreement] = []
    first = 0
    for k in range(1, rows.size + 1):
        prev = rows[k - 1]
        if k < rows.size:
            cur = rows[k]
            if (ch[cur] == ch[prev] and st[cur] - st[prev] == grid.hop
                    and la[cur] == la[prev] and lb[cur] == lb[prev]):
                continue
        head = rows[first]
        out.append(Disagreement(
            seg.source, int(ch[head]), grid.time_ns(seg.origin_ns, int(st[head])),
            grid.time_ns(seg.origin_ns, int(st[prev]) + grid.window), str(la[head]),
            str(lb[head]), k - first, seg.path,
            seg.offset_s + int(st[head]) / grid.sample_rate))
        first = k
    return out


def _nearest(ga: Grid, ch_a: npt.NDArray[np.int32], st_a: I64, gb: Grid,
             ch_b: npt.NDArray[np.int32], st_b: I64) -> tuple[I64, npt.NDArray[np.bool_]]:
    """For each A window, the index of the B window of its channel whose middle is
    nearest, and whether that B window overlaps it at all."""
    mid_a = (st_a + ga.window / 2) / ga.sample_rate  # seconds into the session
    mid_b = (st_b + gb.window / 2) / gb.sample_rate
    index = np.zeros(st_a.size, dtype=np.int64)
    keep = np.zeros(st_a.size, dtype=bool)
    reach = (ga.window / ga.sample_rate + gb.window / gb.sample_rate) / 2
    for ch in np.unique(ch_a):
        rows_a, rows_b = np.flatnonzero(ch_a == ch), np.flatnonzero(ch_b == ch)
        if not rows_b.size:
            continue
        mb = mid_b[rows_b]
        pos = np.clip(np.searchsorted(mb, mid_a[rows_a]), 1, max(1, mb.size - 1))
        left = np.maximum(pos - 1, 0)
        right = np.minimum(pos, mb.size - 1)
        ma = mid_a[rows_a]
        best = np.where(np.abs(mb[left] - ma) <= np.abs(mb[right] - ma), left, right)
        index[rows_a] = rows_b[best]
        keep[rows_a] = np.abs(mb[best] - ma) < reach
    return index, keep
