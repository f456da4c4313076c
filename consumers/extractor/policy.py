"""Which windows become samples: the pure half of the extractor (no I/O).

- ``choose``: whether a rule wants a prediction's window, why, and with what
  probability: a fixed ``rate``, or ``auto``: ``unknown`` windows and windows where
  the model hesitates between two classes always, other classes by the dynamic
  distribution (``auto_probability``);
- ``draw``: the deterministic coin: the same window always gets the same draw, so a
  redelivered prediction is decided as the first time;
- ``is_centred``: the object filter (little energy at the window's edges).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from bus_schemas import ExtractionRule, Prediction

UNKNOWN = "unknown"
HESITANT_MARGIN = 0.1  # the two best scores this close: the model hesitates
HESITANT_FLOOR = 0.2  # ... and the best is at least this (not two near-zero scores)
EDGE_SHARE = 0.1  # the first and last 10 % of a window are its edges
CENTRED_EDGE_RATIO = 0.5  # centred: the edges' mean power under half the window's

Reason = Literal["rate", "auto", "unknown", "hesitant"]


@dataclass(frozen=True)
class Choice:
    label: str  # the proposed label of the sample
    confidence: float  # its score (the best score for unknown)
    reason: Reason
    probability: float  # of extracting the window


def parent(label: str) -> str:
    """``birds-american_crow`` → ``birds``; a top-level class has the root ``''``."""
    return label.rsplit("-", 1)[0] if "-" in label else ""


def auto_probability(label: str, labels: tuple[str, ...], counts: Mapping[str, int]) -> float:
    """The original's dynamic distribution done right: a class is extracted with
    probability (1 + n_rarest) / (1 + n_class), where n counts the samples already
    stored and n_rarest is the fewest among its siblings (classes of the same
    parent, the model's and those stored). The rarest sibling is always taken;
    a class with ten times its samples about one time in ten; never zero."""
    siblings = {other for other in (*labels, *counts)
                if other != UNKNOWN and parent(other) == parent(label)} | {label}
    rarest = min(counts.get(s, 0) for s in siblings)
    return min(1.0, (1 + rarest) / (1 + counts.get(label, 0)))


def hesitation(prediction: Prediction) -> tuple[str, str] | None:
    """The two classes the model hesitates between, or None."""
    if len(prediction.scores) < 2:
        return None
    order = np.argsort(prediction.scores)[::-1]
    best, second = float(prediction.scores[order[0]]), float(prediction.scores[order[1]])
    if best >= HESITANT_FLOOR and best - second <= HESITANT_MARGIN:
        return prediction.labels[order[0]], prediction.labels[order[1]]
    return None


def choose(prediction: Prediction, rule: ExtractionRule,
           counts: Mapping[str, int]) -> Choice | None:
    """Whether ``rule`` wants this window, why and how likely; None: not a candidate."""
    decided = [label for label in prediction.result if label != UNKNOWN]
    best = max(prediction.scores, default=0.0)
    if not decided:
        if rule.wants(UNKNOWN):
            return Choice(UNKNOWN, best, "unknown" if rule.rate == "auto" else "rate",
                          1.0 if rule.rate == "auto" else float(rule.rate))
        return None
    wanted = [label for label in decided if rule.wants(label)]
    pair = hesitation(prediction) if rule.rate == "auto" else None
    if pair is not None and any(rule.wants(label) for label in pair):
        label = wanted[0] if wanted else decided[0]
        return Choice(label, _score(prediction, label), "hesitant", 1.0)
    if not wanted:
        return None
    label = wanted[0]
    if rule.rate == "auto":
        return Choice(label, _score(prediction, label), "auto",
                      auto_probability(label, prediction.labels, counts))
    return Choice(label, _score(prediction, label), "rate", float(rule.rate))


def _score(prediction: Prediction, label: str) -> float:
    return prediction.score_of(label) if label in prediction.labels else 0.0


def draw(*key: object) -> float:
    """A number in [0, 1) fixed by ``key``: the same window, the same coin."""
    digest = hashlib.sha256("\x1f".join(map(str, key)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_centred(window: npt.NDArray[np.int16] | npt.NDArray[np.float32]) -> bool:
    """The object filter: the sound sits in the middle of the window, little of its
    energy touches the edges (the first and last 10 %)."""
    x = np.asarray(window, dtype=np.float64)
    edge = max(1, int(len(x) * EDGE_SHARE))
    if len(x) < 4 * edge:
        return True
    total = float(np.mean(x * x))
    if total <= 0.0:
        return False
    edges = np.concatenate([x[:edge], x[-edge:]])
    return float(np.mean(edges * edges)) < CENTRED_EDGE_RATIO * total
