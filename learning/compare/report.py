"""What ``compare`` found: counts of decision pairs, per source and in total, and the
longest ranges where the two models disagree (``CompareReport``, ``--json``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from inference.scoring import UNKNOWN
from learning.compare.plan import Grid


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

