"""The YAMNet-based selector's model folder (``inference.hearing_model`` runs it).

``write_selector`` chooses the head's settings by inner package folds of every
window (``learning.training.crossval.choose``, as each cross-validation fold did),
fits the head on all of them but one recording group per class (``demo_groups``:
the demo plays them, recordings the model never heard; ``corpus.json`` marks
their files ``test``), and writes ``head.npz``, ``model.json`` (per-class
thresholds from the out-of-fold scores, the leave-one-package-out tables, the
pooled confusion) and ``corpus.json``; then loads the folder and scores one window
with it, as a classifier would.
"""

from __future__ import annotations

import importlib.metadata
import io
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from inference.hearing import QUIET_GATE_DB
from inference.hearing_model import HearingModel, feature_params
from inference.modelfolder import (
    ClassMetrics,
    CrossVal,
    CrossValClass,
    CrossValResult,
    Decision,
    FrontEnd,
    Hearing,
    HeldOut,
    InputSpec,
    Metrics,
    ModelFolder,
    ModelMeta,
    TrainingData,
    write_model_folder,
)
from inference.scoring import UNKNOWN
from inference.yamnet import YamnetFrontEnd
from learning.corpus.manifest import CorpusManifest
from learning.datasets.format import QUIET
from learning.embeddings.cache import WindowConfig
from learning.training.crossval import Scores, Setting, WindowTable, choose
from learning.training.head import fit

METHOD = ("leave-one-package-out: each Debian package held out in turn, the head fitted "
          "and its thresholds and settings chosen on the other packages (inner package "
          "folds); a recording shipped by two packages never trains the fold testing it")


def crossval_result(s: Scores) -> CrossValResult:
    return CrossValResult(
        macro_f1=s.macro_f1, n_windows=s.n,
        per_class={c: CrossValClass(precision=v.precision, recall=v.recall, f1=v.f1,
                                    support=v.support) for c, v in s.per_class.items()},
        per_package_accuracy=s.per_package_accuracy)


def pooled_metrics(labels: Sequence[str], truth: Sequence[str], decided: Sequence[str],
                   s: Scores) -> Metrics:
    """``model.json``'s metrics of the pooled cross-validation decisions; a mixture's
    window counts as the class decided when that is one of its classes."""
    index = {c: i for i, c in enumerate(labels)}
    confusion = [[0] * len(labels) for _ in labels]
    right = made = 0
    for t, d in zip(truth, decided, strict=True):
        classes = t.split("+")
        true = d if d in classes else classes[0]
        right += d == true
        if d != UNKNOWN:
            made += 1
            confusion[index[true]][index[d]] += 1
    recalls = [v.recall for v in s.per_class.values() if v.support]
    return Metrics(
        split=METHOD,
        held_out=HeldOut(
            accuracy=round(right / len(truth), 4),
            balanced_accuracy=round(float(np.mean(recalls)), 4),
            decided_fraction=round(made / len(truth), 4),
            per_class={c: ClassMetrics(precision=v.precision, recall=v.recall, f1=v.f1,
                                       support=v.support, split="package")
                       for c, v in s.per_class.items()}),
        confusion=confusion)


@dataclass(frozen=True)
class CrossValRun:
    """What the cross-validation found: ``results`` (method → tables, ``head`` the
    method this model is), the settings each fold chose (package → setting), every
    real window's truth and decision by ``head``, in row order, and its seconds."""

    results: Mapping[str, Scores]
    head: str
    chosen: Mapping[str, str]
    truth: Sequence[str]
    decided: Sequence[str]
    seconds: float


def demo_groups(table: WindowTable, min_groups: int = 3) -> set[str]:
    """One recording group per class kept out of the final fit, for the demo: the
    group of the class's recording with the most windows (not a mixture), for the
    classes with at least ``min_groups`` groups (fewer: the model needs them all)."""
    real = np.flatnonzero(~table.mixed) if table.mixed is not None else np.arange(
        len(table.labels))
    held: set[str] = set()
    for label in (*table.classes, QUIET):
        rows = [i for i in real.tolist() if table.labels[i] == label]
        groups = {table.group[i] for i in rows}
        if len(groups) < min_groups:
            continue
        windows: dict[int, int] = {}
        for i in rows:
            windows[int(table.recording[i])] = windows.get(int(table.recording[i]), 0) + 1
        best = max(sorted(windows), key=lambda r: windows[r])
        held.add(next(table.group[i] for i in rows if table.recording[i] == best))
    return held


def write_selector(out: Path, version: str, table: WindowTable, manifest: CorpusManifest,
                   cfg: WindowConfig, settings: Sequence[Setting], run: CrossValRun,
                   started: float) -> ModelFolder:
    """Choose among ``settings``, fit on every window and write the folder."""
    mark = time.monotonic()
    hop = round(cfg.hop_s * 48_000)
    held = demo_groups(table)
    kept = np.array([not (set(g.split("|")) & held) for g in table.group])
    rows = np.flatnonzero(~table.quiet & kept)
    choice = choose(table, rows, settings, hop)
    head = fit(table.embedding[rows], table.mapped[rows], table.targets(rows),
               [table.group[i] for i in rows.tolist()], choice.setting.head)
    buffer = io.BytesIO()
    np.savez(buffer, mean=head.mean, std=head.std, we=head.we, wm=head.wm, b=head.b)
    hearing = Hearing(front_end=FrontEnd(folder="yamnet", sha256=YamnetFrontEnd().meta.sha256),
                      frames=3 if choice.setting.smooth else 1, frame_hop_s=cfg.hop_s,
                      quiet_gate_db=QUIET_GATE_DB)
    params = feature_params(hearing)
    labels = [*table.classes, QUIET]
    real = [p for p in table.package.tolist() if "|" not in p]
    meta = ModelMeta(
        model_id="selector", version=version, labels=labels, features=params.to_dict(),
        decision=Decision(threshold=0.5, margin=0.0, per_class={
            c: round(float(t), 4)
            for c, t in zip(table.classes, choice.thresholds.tolist(), strict=True)}),
        input=InputSpec(shape=[None, *params.shape], dtype="float32"),
        metrics=pooled_metrics(labels, run.truth, run.decided, run.results[run.head]),
        training_data=TrainingData(
            manifest="corpus.json", n_files=len(manifest.files), n_windows_train=rows.size,
            n_windows_test=len(real),
            packages={name: info.version for name, info in manifest.packages.items()}),
        created=datetime.now(UTC),
        framework={"ai_edge_litert": importlib.metadata.version("ai-edge-litert"),
                   "numpy": np.__version__, "scipy": importlib.metadata.version("scipy"),
                   "python": platform.python_version()},
        timings={"crossval_s": round(run.seconds, 1),
                 "fit_s": round(time.monotonic() - mark, 1),
                 "total_s": round(time.monotonic() - started, 1)},
        engine="yamnet-head", hearing=hearing,
        crossval=CrossVal(method=METHOD, packages=sorted(set(real)),
                          results={k: crossval_result(v) for k, v in run.results.items()},
                          chosen={"final": choice.setting.describe(),
                                  **{f"fold {k}": v for k, v in run.chosen.items()}}))
    split = manifest.model_copy(update={"files": [
        f.model_copy(update={"split": "test" if f.group in held else "train"})
        for f in manifest.files]})
    folder = write_model_folder(out, meta, buffer.getvalue(),
                                split.model_dump_json(indent=1, by_alias=True) + "\n")
    HearingModel(folder).predict(np.zeros((1, *params.shape), dtype=np.float32))
    return folder
