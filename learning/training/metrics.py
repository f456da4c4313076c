"""Held-out metrics of a classifier's scores: confusion matrix, per-class precision,
recall and F1, and a plain-text table of them (numpy only, no TensorFlow)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from inference.features import F32
from inference.modelfolder import ClassMetrics, HeldOut, Metrics

SPLIT_DESCRIPTION = (
    "held out by recording group (content hash, or one source/speaker/recording shared by "
    "several files; same-recording files merged by envelope correlation); a class with a "
    "single group is split in time with a one-window gap (split 'time')"
)


def confusion_matrix(truth: npt.NDArray[np.integer[Any]], predicted: npt.NDArray[np.integer[Any]],
                     n_classes: int) -> npt.NDArray[np.int64]:
    """``m[i, j]`` = windows of true class i predicted as j."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (truth.astype(np.int64), predicted.astype(np.int64)), 1)
    return m


def held_out_metrics(scores: F32, truth: npt.NDArray[np.integer[Any]],
                     names: Sequence[str], class_split: dict[str, str]) -> Metrics:
    """Accuracy, per-class precision/recall/F1/support and the confusion matrix of
    held-out scores (N, n_classes) against true class indices (N,)."""
    m = confusion_matrix(truth, scores.argmax(axis=1), len(names))
    per_class = {}
    recalls = []
    for i, name in enumerate(names):
        tp, support, predicted = int(m[i, i]), int(m[i].sum()), int(m[:, i].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        if support:
            recalls.append(recall)
        per_class[name] = ClassMetrics(
            precision=round(precision, 4), recall=round(recall, 4), f1=round(f1, 4),
            support=support, split="time" if class_split.get(name) == "time" else "group")
    total = int(m.sum())
    held_out = HeldOut(
        accuracy=round(float(np.trace(m)) / total, 4) if total else 0.0,
        balanced_accuracy=round(float(np.mean(recalls)), 4) if recalls else None,
        per_class=per_class)
    return Metrics(split=SPLIT_DESCRIPTION, held_out=held_out, confusion=m.tolist())


def metrics_table(metrics: Metrics) -> str:
    """A plain-text per-class table of held-out metrics."""
    rows = [f"{'class':<9} {'prec':>6} {'recall':>6} {'f1':>6} {'support':>8}  split"]
    for name, c in metrics.held_out.per_class.items():
        rows.append(f"{name:<9} {c.precision:6.3f} {c.recall:6.3f} {c.f1:6.3f} "
                    f"{c.support:8d}  {c.split}")
    h = metrics.held_out
    rows.append(f"accuracy {h.accuracy:.3f}, balanced accuracy {h.balanced_accuracy}")
    return "\n".join(rows)
