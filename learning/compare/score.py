"""Decode each segment, cut every model's windows on its grid, decide them with each
model's own rule, pair A's windows with B's and count (``compare``).

Audio: decoded blocks float32 (channels, n) in [-1, 1] at a model's sample rate;
windows float32 (N, window_samples), mono.
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import numpy.typing as npt

from audio.decode import AudioDecodeError, AudioStream
from inference.features import FeatureParams, window_features
from inference.scoring import UNKNOWN, Scorer
from inference.windows import owned_starts
from learning.compare.plan import Grid, Segment
from learning.compare.report import CompareReport, Disagreement, ModelSide, Tally

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

BATCH = 256  # windows per inference call
OnProgress = Callable[[float], None]  # called with seconds of audio just decoded


class _Cutter:
    """The windows of one session on one grid, from blocks as they are decoded."""

    def __init__(self, grid: Grid, channels: int, stop: int) -> None:
        self.grid = grid
        self.stop = stop  # first sample index past the range
        self._pending: F32 = np.zeros((channels, 0), dtype=np.float32)
        self._base = 0  # session sample index of _pending[:, 0]
        self._first = 0  # session sample index of the next window's start (on the grid)

    def push(self, block: F32) -> tuple[F32, npt.NDArray[np.int32], I64]:
        """Windows completed by ``block`` (channels, n): samples (K, window), their
        channels (K,) and session start samples (K,), channel-major."""
        g = self.grid
        self._pending = np.concatenate([self._pending, block], axis=1)
        limit = min(self._base + self._pending.shape[1], self.stop)
        # the grid starts from here whose window ends at or before ``limit``
        starts = owned_starts(self._first, limit - g.window + 1 - self._first, g.hop)
        channels = self._pending.shape[0]
        if not starts.size:
            return (np.zeros((0, g.window), dtype=np.float32), np.zeros(0, dtype=np.int32),
                    np.zeros(0, dtype=np.int64))
        view = np.lib.stride_tricks.sliding_window_view(self._pending, g.window, axis=1)
        windows = view[:, starts - self._base].reshape(-1, g.window)
        out = (np.ascontiguousarray(windows, dtype=np.float32),
               np.repeat(np.arange(channels, dtype=np.int32), starts.size),
               np.tile(starts, channels))
        self._first = int(starts[-1]) + g.hop
        drop = self._first - self._base
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
            for piece in stream.blocks():
                block = piece.samples[:, : max(0, stop - decoded)]
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
