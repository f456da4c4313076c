"""Leave-one-package-out cross-validation of the YAMNet-based selector.

Each Debian package is a source: its recordings were made, edited and mastered
together, so a model tested on windows of a package it trained on is tested on
its own studio. Here every package is held out in turn: the head is fitted on the
windows of every other package, its per-class thresholds are calibrated on those
packages too (inner folds by package, ``calibrate``), and the held-out package's
windows are decided; a recording group that another package ships too is left out
of that fold's training. Each window is tested exactly once; the pooled decisions give
per-class precision, recall and F1 (``Scores``) and their macro average.

The decision (``decide``): a window below the energy gate is ``quiet``; otherwise
the class whose score passes its threshold by the widest margin in logits
(``inference.hearing.calibrated``: each threshold moved to 0.5, as the live
selector does), or ``unknown`` when none passes. Optional smoothing averages each
window's scores with its neighbours in the same recording (within one hop) before
deciding.

The head's settings (its L2 strength, smoothing or not) are chosen inside each
fold (``tuned_scorer``): by inner folds of the training packages, never by the
package the fold tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from inference.hearing import HeadWeights, calibrated
from inference.scoring import UNKNOWN
from learning.datasets.format import QUIET
from learning.training.head import HeadConfig, fit

F32 = npt.NDArray[np.float32]
THRESHOLD_GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))


@dataclass
class WindowTable:
    """The corpus's windows, one row each: ``embedding`` (N, D), ``mapped`` (N, K)
    (K = len(classes), quiet not among them), ``labels`` (the true class, or quiet),
    ``quiet`` (N,) bool (below the gate), ``package``, ``group``, ``recording``
    (file index) and ``start`` (samples) for smoothing."""

    classes: tuple[str, ...]
    embedding: F32
    mapped: F32
    labels: list[str]
    quiet: npt.NDArray[np.bool_]
    package: npt.NDArray[np.str_]
    group: list[str]
    recording: npt.NDArray[np.int64]
    start: npt.NDArray[np.int64]
    # augmented rows (``learning.embeddings.mixing``): trained on, never tested; their
    # ``package`` and ``group`` name both sources, joined by "|"
    mixed: npt.NDArray[np.bool_] | None = None

    def targets(self, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        index = {c: i for i, c in enumerate(self.classes)}
        out = np.zeros((rows.size, len(self.classes)), dtype=bool)
        for r, row in enumerate(rows.tolist()):
            for label in self.labels[row].split("+"):  # "rain+thunder": a mixture
                if label in index:
                    out[r, index[label]] = True
        return out


@dataclass(frozen=True)
class ClassScore:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class Scores:
    per_class: dict[str, ClassScore]
    macro_f1: float
    n: int
    per_package_accuracy: dict[str, float] = field(default_factory=dict)


def smooth(scores: F32, recording: npt.NDArray[np.int64], start: npt.NDArray[np.int64],
           hop: int) -> F32:
    """Each window's scores averaged with its neighbours (same recording, start
    within one ``hop``)."""
    order = np.lexsort((start, recording))
    s, rec, st = scores[order], recording[order], start[order]
    total = s.astype(np.float64)
    count = np.ones(order.size)
    adjacent = (rec[1:] == rec[:-1]) & (st[1:] - st[:-1] <= hop)  # window i and i + 1
    total[1:][adjacent] += s[:-1][adjacent]
    total[:-1][adjacent] += s[1:][adjacent]
    count[1:][adjacent] += 1
    count[:-1][adjacent] += 1
    out = np.empty_like(scores)
    out[order] = (total / count[:, None]).astype(np.float32)
    return out


def decide(scores: F32, thresholds: F32, quiet: npt.NDArray[np.bool_],
           classes: Sequence[str]) -> list[str]:
    """Labels of windows: quiet by the gate, else the best class over its threshold
    (by ratio), else unknown. ``thresholds`` (K,) for all windows."""
    return decide_each(scores, np.broadcast_to(thresholds, scores.shape), quiet, classes)


def decide_each(scores: F32, thresholds: F32, quiet: npt.NDArray[np.bool_],
                classes: Sequence[str]) -> list[str]:
    """``decide`` with each window's own thresholds (N, K)."""
    fair = calibrated(scores, thresholds)
    best = fair.argmax(axis=1)
    passed = fair[np.arange(len(best)), best] >= 0.5
    return [QUIET if q else (classes[b] if p else UNKNOWN)
            for q, b, p in zip(quiet.tolist(), best.tolist(), passed.tolist(), strict=True)]


def calibrate(scores: F32, targets: npt.NDArray[np.bool_]) -> F32:
    """Per class, the threshold of ``THRESHOLD_GRID`` with the best one-vs-rest F1;
    of tied thresholds the middle one (0.5 for a class with no positive window)."""
    out = np.full(scores.shape[1], 0.5, dtype=np.float32)
    grid = np.array(THRESHOLD_GRID, dtype=np.float32)
    for c in range(scores.shape[1]):
        pos = targets[:, c]
        if not pos.any():
            continue
        hits = scores[:, c][None, :] >= grid[:, None]  # (thresholds, windows)
        tp = (hits & pos).sum(axis=1)
        f1 = 2 * tp / (hits.sum(axis=1) + pos.sum())
        best = np.flatnonzero(f1 >= f1.max() - 1e-9)
        out[c] = grid[best[len(best) // 2]]
    return out


def score(truth: Sequence[str], decided: Sequence[str], classes: Sequence[str]) -> Scores:
    """Per-class precision/recall/F1 of single-label decisions (a mixture's window
    counts as right when the decision is any of its classes)."""
    per: dict[str, ClassScore] = {}
    truths = [t.split("+") for t in truth]
    fixed = [d if d in t else t[0] for t, d in zip(truths, decided, strict=True)]
    for c in classes:
        tp = sum(1 for t, d in zip(fixed, decided, strict=True) if t == c and d == c)
        fp = sum(1 for t, d in zip(fixed, decided, strict=True) if t != c and d == c)
        fn = sum(1 for t, d in zip(fixed, decided, strict=True) if t == c and d != c)
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        per[c] = ClassScore(round(p, 4), round(r, 4),
                            round(2 * p * r / (p + r), 4) if p + r else 0.0, tp + fn)
    present = [s.f1 for s in per.values() if s.support]
    return Scores(per, round(float(np.mean(present)), 4) if present else 0.0, len(truth))


Scorer = Callable[[WindowTable, npt.NDArray[np.int64], npt.NDArray[np.int64]],
                  tuple[F32, F32]]


def zero_shot_scorer(table: WindowTable, train: npt.NDArray[np.int64],
                     test: npt.NDArray[np.int64]) -> tuple[F32, F32]:
    """The AudioSet mapping alone, thresholds calibrated on ``train``."""
    thresholds = calibrate(table.mapped[train], table.targets(train))
    return table.mapped[test], thresholds


def _fit_rows(table: WindowTable, rows: npt.NDArray[np.int64], cfg: HeadConfig) -> HeadWeights:
    return fit(table.embedding[rows], table.mapped[rows], table.targets(rows),
               [table.group[i] for i in rows.tolist()], cfg)


def _inner_scores(table: WindowTable, rows: npt.NDArray[np.int64], cfg: HeadConfig,
                  folds: int) -> F32 | None:
    """Out-of-fold scores of ``rows`` by ``folds`` folds of their packages (a group
    shipped by a held-out package trains no inner fold); None for a single package."""
    packages = sorted(set(table.package[rows].tolist()) - {p for p in
                      table.package[rows].tolist() if "|" in p})
    if len(packages) < 2:
        return None
    scores = np.zeros((rows.size, len(table.classes)), dtype=np.float32)
    row_packages = [set(p.split("|")) for p in table.package[rows].tolist()]
    row_groups = [set(table.group[i].split("|")) for i in rows.tolist()]
    for f in range(min(folds, len(packages))):
        held = set(packages[f::folds])
        inner_test = np.array([len(p) == 1 and bool(p & held) for p in row_packages])
        held_groups = {table.group[i] for i in rows[inner_test].tolist()}
        inner_train = np.array([not (p & held) and not (g & held_groups)
                                for p, g in zip(row_packages, row_groups, strict=True)])
        head = _fit_rows(table, rows[inner_train], cfg)
        idx = rows[inner_test]
        scores[inner_test] = head.scores(table.embedding[idx], table.mapped[idx])
    return scores


@dataclass(frozen=True)
class Setting:
    """One candidate of the selection: the head's fit and whether scores are smoothed."""

    head: HeadConfig
    smooth: bool

    def describe(self) -> str:
        return (f"l2 {self.head.l2_embedding:g}/{self.head.l2_mapping:g}"
                f"{', smoothed' if self.smooth else ''}")


@dataclass(frozen=True)
class Choice:
    """What the inner folds chose, its thresholds and every candidate's inner macro-F1."""

    setting: Setting
    thresholds: F32
    inner_f1: dict[str, float]


def choose(table: WindowTable, rows: npt.NDArray[np.int64], settings: Sequence[Setting],
           hop: int, folds: int = 3) -> Choice:
    """The setting with the best macro-F1 on inner package folds of ``rows`` (the
    first of equals), with thresholds calibrated on its out-of-fold scores."""
    real = rows[~table.mixed[rows]] if table.mixed is not None else rows
    position = np.flatnonzero(np.isin(rows, real))
    truth = [table.labels[i] for i in real.tolist()]
    best: tuple[float, Setting, F32] | None = None
    inner_f1: dict[str, float] = {}
    oof: dict[HeadConfig, F32 | None] = {}
    for setting in settings:
        if setting.head not in oof:
            oof[setting.head] = _inner_scores(table, rows, setting.head, folds)
        scores = oof[setting.head]
        if scores is None:  # one package: nothing to choose by
            return Choice(settings[0], np.full(len(table.classes), 0.5, np.float32), {})
        if setting.smooth:
            scores = smooth(scores, table.recording[rows], table.start[rows], hop)
        thresholds = calibrate(scores, table.targets(rows))
        decided = decide(scores[position], thresholds, table.quiet[real], table.classes)
        f1 = score(truth, decided, (*table.classes, QUIET)).macro_f1
        inner_f1[setting.describe()] = f1
        if best is None or f1 > best[0]:
            best = (f1, setting, thresholds)
    assert best is not None
    return Choice(best[1], best[2], inner_f1)


def tuned_scorer(settings: Sequence[Setting], hop: int, inner_folds: int = 3,
                 chosen: list[Choice] | None = None) -> Scorer:
    """Per fold: ``choose`` a setting on inner folds of ``train``, fit it on all of
    ``train``, and return (the ``test`` rows' scores, smoothed if chosen, thresholds);
    each fold's choice is appended to ``chosen``."""
    if not settings:
        raise ValueError("tuned_scorer needs at least one setting")

    def run(table: WindowTable, train: npt.NDArray[np.int64],
            test: npt.NDArray[np.int64]) -> tuple[F32, F32]:
        choice = choose(table, train, settings, hop, inner_folds)
        if chosen is not None:
            chosen.append(choice)
        head = _fit_rows(table, train, choice.setting.head)
        scores = head.scores(table.embedding[test], table.mapped[test])
        if choice.setting.smooth:
            scores = smooth(scores, table.recording[test], table.start[test], hop)
        return scores, choice.thresholds
    return run


def fold_scores(table: WindowTable, scorer: Scorer,
                progress: Callable[[str], None] | None = None) -> tuple[F32, F32]:
    """Every package held out in turn: each window's scores from the fold that did not
    train on its package, and that fold's thresholds, both (N, K). Quiet windows
    (below the gate) are never trained on."""
    k = len(table.classes)
    scores = np.zeros((len(table.labels), k), dtype=np.float32)
    thresholds = np.zeros((len(table.labels), k), dtype=np.float32)
    learnable = ~table.quiet
    mixed = table.mixed if table.mixed is not None else np.zeros(len(table.labels), bool)
    row_packages = [set(p.split("|")) for p in table.package.tolist()]
    row_groups = [set(g.split("|")) for g in table.group]
    for package in sorted({p for p, m in zip(table.package.tolist(), mixed, strict=True)
                           if not m}):
        test = np.flatnonzero((table.package == package) & ~mixed)
        # a recording shipped by two packages (one group) trains neither fold's test;
        # nor does a mixture with a piece of the held-out package
        held_groups = {table.group[i] for i in test.tolist()}
        other = np.array([package not in p and not (g & held_groups)
                          for p, g in zip(row_packages, row_groups, strict=True)])
        train = np.flatnonzero(learnable & other)
        scores[test], thresholds[test] = scorer(table, train, test)
        if progress is not None:
            progress(package)
    return scores, thresholds


def evaluate(table: WindowTable, scores: F32, thresholds: F32, hop: int | None = None
             ) -> tuple[Scores, list[str]]:
    """The pooled scores of ``fold_scores``' decisions (smoothed over neighbours within
    ``hop`` first, if given) and every real (not mixed) window's decision, in row order."""
    real = np.flatnonzero(~table.mixed) if table.mixed is not None else np.arange(
        len(table.labels))
    scores, thresholds = scores[real], thresholds[real]
    if hop is not None:
        scores = smooth(scores, table.recording[real], table.start[real], hop)
    decided = decide_each(scores, thresholds, table.quiet[real], table.classes)
    truth = [table.labels[i] for i in real.tolist()]
    result = score(truth, decided, (*table.classes, QUIET))
    packages = table.package[real]
    for package in sorted(set(packages.tolist())):
        rows = np.flatnonzero(packages == package).tolist()
        right = sum(1 for i in rows if decided[i] in truth[i].split("+"))
        result.per_package_accuracy[package] = round(right / len(rows), 4)
    return result, decided


def leave_one_package_out(table: WindowTable, scorer: Scorer, hop: int | None = None,
                          progress: Callable[[str], None] | None = None
                          ) -> tuple[Scores, list[str]]:
    """``fold_scores`` then ``evaluate``: the pooled scores and every window's decision."""
    scores, thresholds = fold_scores(table, scorer, progress)
    return evaluate(table, scores, thresholds, hop)
