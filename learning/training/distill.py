"""The fast selector: a small 48 kHz log-mel CNN distilled from the YAMNet-based one.

    python -m learning.training.distill --teacher models/selector-yamnet \\
        --out models/selector-fast

Every corpus file on the teacher's train side (its ``corpus.json``) is decoded at
48 kHz mono and cut into the teacher's windows (1.95 s) every ``hop_s`` (0.4875 s:
the live grid's offsets, three times denser), at most ``max_windows`` per file,
evenly spread. The
teacher scores each window (its calibrated scores, ``quiet`` included: the soft
targets); the student, the log-mel CNN of ``learning.training.architectures`` with
one sigmoid per label, learns them from the window's log-mel (1024-point FFT, hop
512, 64 mels: 181 frames) by binary cross-entropy, in epochs balanced over the
teacher's decisions. Its window, rate and labels are the teacher's and so is its
decision rule (threshold 0.5, margin 0): ``model deploy`` switches a running
classifier between the two without a restart.

Quality, measured on packages neither model heard (``--eval-packages``): a teacher
is refitted without them (settings and thresholds chosen again by inner package
folds), a student is distilled from it on the other packages, and both decide every
window of the held-out packages against its file's class (a window whose middle
0.975 s is below the energy gate is ``quiet``, one 30 dB below its file's loudest is
left out). Those tables go into the student's ``model.json``; then the student that
ships is distilled from the real teacher on every train-side file.

TensorFlow is imported inside the functions that need it.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.progress import Progress

from audio.decode import AudioDecodeError, decode_all
from inference.features import FeatureParams, span_features
from inference.hearing import WINDOW_48K, rms_db
from inference.hearing_model import HearingModel
from inference.modelfolder import (
    CrossVal,
    Decision,
    InputSpec,
    ModelFolder,
    ModelMeta,
    TrainingData,
    write_model_folder,
)
from inference.scoring import UNKNOWN, decide
from learning.corpus.fetch import default_cache_dir, fetch_package
from learning.corpus.manifest import CorpusFile, CorpusManifest
from learning.datasets.format import QUIET
from learning.training.crossval import Scores, score
from learning.training.yamnet_folder import CrossValRun, crossval_result, pooled_metrics

log = logging.getLogger(__name__)
console = Console(stderr=True, soft_wrap=True)
F32 = npt.NDArray[np.float32]
RATE = 48_000
RELATIVE_GATE_DB = 30.0
EVAL_PACKAGES = ("redeclipse-data", "tuxpaint-stamps-default", "berusky2-data")


@dataclass(frozen=True)
class DistillConfig:
    teacher: Path
    out: Path
    cache: Path = field(default_factory=default_cache_dir)
    eval_packages: tuple[str, ...] = EVAL_PACKAGES
    hop_s: float = 0.4875
    max_windows: int = 100
    epochs: int = 30
    per_class: int = 600
    batch_size: int = 64
    learning_rate: float = 3e-3
    width: int = 24
    seed: int = 0
    version: str = "2.0.0-fast"


def student_params(teacher: FeatureParams) -> FeatureParams:
    """The student's log-mel parameters over the teacher's window."""
    return FeatureParams(sample_rate=teacher.sample_rate, window_s=teacher.window_s)


# ------------------------------------------------------------------ windows


@dataclass
class Windows:
    """The corpus windows of the distillation: (N, window) audio and, per row, its
    file's package, truth (class, or ``a+b`` for a mixture; quiet by the gate; ""
    for a window left out of the evaluation) and file index."""

    audio: F32
    package: list[str]
    truth: list[str]
    file: npt.NDArray[np.int64]


def file_windows(audio: F32, window: int, hop: int, max_windows: int) -> F32:
    """Windows of a mono signal on the live grid, at most ``max_windows`` evenly spread;
    a signal shorter than a window is zero-padded to one."""
    if audio.shape[0] < window:
        audio = np.pad(audio, (0, window - audio.shape[0]))
    count = 1 + (audio.shape[0] - window) // hop
    index = np.arange(count)
    if count > max_windows:
        index = np.unique(np.linspace(0, count - 1, max_windows).round().astype(np.int64))
    return np.stack([audio[i * hop:i * hop + window] for i in index.tolist()])


def corpus_windows(files: Sequence[CorpusFile], cache: Path, params: FeatureParams,
                   hop_s: float, max_windows: int) -> Windows:
    window = params.window_samples
    hop = round(hop_s * params.sample_rate)
    middle = (window - WINDOW_48K) // 2 if window > WINDOW_48K else 0
    audio: list[F32] = []
    package: list[str] = []
    truth: list[str] = []
    index: list[int] = []
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("decoding the corpus", total=len(files))
        for k, f in enumerate(files):
            bar.advance(task)
            try:
                signal, _ = decode_all(cache / f.local, RATE)
            except AudioDecodeError as exc:
                console.print(f"[yellow]skipped[/] {f.package}:{f.path}: {exc}")
                continue
            w = file_windows(signal.mean(axis=0).astype(np.float32), window, hop, max_windows)
            levels = rms_db(w[:, middle:middle + min(window, WINDOW_48K)])
            peak = float(levels.max())
            label = "+".join([f.label, *f.also])
            for level in levels.tolist():
                if level < -50.0:
                    truth.append(QUIET)
                elif f.label != QUIET and level < peak - RELATIVE_GATE_DB:
                    truth.append("")
                else:
                    truth.append(label)
            audio.append(w)
            package += [f.package] * w.shape[0]
            index += [k] * w.shape[0]
    return Windows(np.concatenate(audio), package, truth, np.array(index, dtype=np.int64))


def teacher_scores(teacher: HearingModel, audio: F32, batch: int = 32) -> F32:
    out = np.empty((audio.shape[0], len(teacher.labels)), dtype=np.float32)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("teacher", total=audio.shape[0])
        for i in range(0, audio.shape[0], batch):
            out[i:i + batch] = teacher.predict(audio[i:i + batch])
            bar.advance(task, min(batch, audio.shape[0] - i))
    return out


def log_mels(audio: F32, params: FeatureParams) -> F32:
    starts = np.arange(audio.shape[0], dtype=np.int64) * audio.shape[1]
    return span_features([(audio.reshape(-1), starts)], params)


# ------------------------------------------------------------------ training


def train_student(features: F32, targets: F32, labels: Sequence[str], params: FeatureParams,
                  cfg: DistillConfig) -> Any:
    """The CNN trained on the teacher's soft ``targets`` (N, len(labels))."""
    import keras

    from learning.training.architectures import build_selector
    from learning.training.augment import balanced_epoch

    keras.utils.set_random_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    decided = np.array([labels.index(d) if (d := decide(t, labels, 0.5, 0.0)[0]) != UNKNOWN
                        else len(labels) for t in targets], dtype=np.int64)
    model = build_selector(len(labels), params, float(features.mean()), float(features.std()),
                           cfg.width, activation="sigmoid")
    per_epoch = cfg.per_class * len(np.unique(decided))
    steps = cfg.epochs * -(-per_epoch // cfg.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, steps, alpha=0.05)
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss=keras.losses.BinaryCrossentropy())
    with Progress(console=console) as bar:
        task = bar.add_task("student", total=cfg.epochs)
        for epoch in range(cfg.epochs):
            idx = balanced_epoch(decided, cfg.per_class, rng)
            hist = model.fit(features[idx], targets[idx], batch_size=cfg.batch_size, epochs=1,
                             verbose=0, shuffle=False).history
            bar.update(task, advance=1, description=(
                f"student, epoch {epoch + 1}/{cfg.epochs} loss {hist['loss'][-1]:.4f}"))
    return model


def _decisions(scores: F32, labels: Sequence[str]) -> list[str]:
    return [decide(s, labels, 0.5, 0.0)[0] for s in scores]


def evaluate_on(truth: Sequence[str], decided: Sequence[str], labels: Sequence[str]) -> Scores:
    rows = [i for i, t in enumerate(truth) if t]
    return score([truth[i] for i in rows], [decided[i] for i in rows], labels)


# ---------------------------------------------------------------- the teacher refit


def refit_teacher(teacher: ModelFolder, held_out: Sequence[str], out: Path) -> HearingModel:
    """The teacher chosen and fitted again without ``held_out`` packages (inner folds
    choose its L2 and thresholds, as for the real one; its window stays the
    teacher's), in a folder at ``out``."""
    from inference.yamnet import YamnetFrontEnd
    from learning.corpus.build import build_corpus
    from learning.embeddings.cache import WindowConfig
    from learning.training.crossval import choose
    from learning.training.head import fit
    from learning.training.yamnet_selector import SETTINGS, build_table

    manifest = build_corpus(default_cache_dir(), packages=sorted(
        set(teacher.meta.training_data.packages if teacher.meta.training_data else ())))
    cfg = WindowConfig()
    table = build_table(manifest, default_cache_dir(), cfg, YamnetFrontEnd())
    keep = np.array([not (set(p.split("|")) & set(held_out)) for p in table.package.tolist()])
    rows = np.flatnonzero(~table.quiet & keep)
    smoothed = teacher.meta.hearing is not None and teacher.meta.hearing.frames > 1
    choice = choose(table, rows, [s for s in SETTINGS if s.smooth == smoothed],
                    round(cfg.hop_s * RATE))
    head = fit(table.embedding[rows], table.mapped[rows], table.targets(rows),
               [table.group[i] for i in rows.tolist()], choice.setting.head)
    shutil.copytree(teacher.path, out)
    buffer = io.BytesIO()
    np.savez(buffer, mean=head.mean, std=head.std, we=head.we, wm=head.wm, b=head.b)
    (out / "head.npz").write_bytes(buffer.getvalue())
    meta = json.loads((out / "model.json").read_text())
    meta["decision"]["per_class"] = {c: round(float(t), 4) for c, t in zip(
        table.classes, choice.thresholds.tolist(), strict=True)}
    (out / "model.json").write_text(json.dumps(meta))
    console.print(f"teacher without {', '.join(held_out)}: {choice.setting.describe()}")
    return HearingModel(out)


# ------------------------------------------------------------------ the run


def distill(cfg: DistillConfig) -> ModelFolder:
    from learning.training.export import export_tflite, framework_versions

    started = time.monotonic()
    teacher_folder = ModelFolder.load(cfg.teacher)
    teacher = HearingModel(teacher_folder)
    labels = teacher.labels
    manifest = CorpusManifest.load(cfg.teacher / "corpus.json")
    for package in sorted({f.package for f in manifest.files}):
        fetch_package(package, cfg.cache)
    train_files = [f for f in manifest.files if f.split != "test"]
    params = student_params(teacher.features)
    data = corpus_windows(train_files, cfg.cache, params, cfg.hop_s, cfg.max_windows)
    features = log_mels(data.audio, params)
    console.print(f"{data.audio.shape[0]} windows of {len(train_files)} files; "
                  f"features {features.shape[1:]}")
    held = np.isin(np.array(data.package), cfg.eval_packages)
    results: dict[str, Scores] = {}
    eval_truth = [t for t, h in zip(data.truth, held.tolist(), strict=True) if h]
    with tempfile.TemporaryDirectory(prefix="tidzam-distill-") as tmp:
        fold_teacher = refit_teacher(teacher_folder, cfg.eval_packages, Path(tmp) / "teacher")
        fold_targets = teacher_scores(fold_teacher, data.audio[~held])
        fold_student = train_student(features[~held], fold_targets, labels, params, cfg)
        teacher_decided = _decisions(teacher_scores(fold_teacher, data.audio[held]), labels)
        student_scores = fold_student.predict(features[held], verbose=0)
        results["teacher (YAMNet head)"] = evaluate_on(eval_truth, teacher_decided, labels)
        student_decided = _decisions(student_scores, labels)
        results["student (fast CNN)"] = evaluate_on(eval_truth, student_decided, labels)
        agree = np.mean([a == b for a, b in zip(teacher_decided, student_decided, strict=True)])
    for name, r in results.items():
        console.print(f"{name}: macro-F1 {r.macro_f1:.3f} on {r.n} windows of "
                      f"{', '.join(cfg.eval_packages)}")
    console.print(f"the student decides as its teacher on {agree:.1%} of them")
    eval_s = time.monotonic() - started
    mark = time.monotonic()
    targets = teacher_scores(teacher, data.audio)
    model = train_student(features, targets, labels, params, cfg)
    fit_s = time.monotonic() - mark
    tflite = export_tflite(model, params)
    rows = [i for i, t in enumerate(eval_truth) if t]
    run = CrossValRun(results, "student (fast CNN)", {}, [eval_truth[i] for i in rows],
                      [student_decided[i] for i in rows], eval_s)
    method = (f"distilled from {teacher_folder.meta.model_id}@{teacher_folder.meta.version}; "
              f"quality on the packages {', '.join(cfg.eval_packages)}, which neither a "
              "teacher refitted without them nor the student distilled from it heard")
    meta = ModelMeta(
        model_id=teacher_folder.meta.model_id, version=cfg.version, labels=list(labels),
        features=params.to_dict(), decision=Decision(threshold=0.5, margin=0.0),
        input=InputSpec(shape=[None, *params.shape], dtype="float32"),
        metrics=pooled_metrics(labels, run.truth, run.decided, results[run.head]).model_copy(
            update={"split": method}),
        training_data=TrainingData(
            manifest="corpus.json", n_files=len(train_files),
            n_windows_train=int(features.shape[0]), n_windows_test=len(rows),
            packages={n: i.version for n, i in manifest.packages.items()}),
        created=datetime.now(UTC), framework=framework_versions(),
        timings={"evaluation_s": round(eval_s, 1), "training_s": round(fit_s, 1),
                 "total_s": round(time.monotonic() - started, 1),
                 "teacher_agreement": round(float(agree), 4)},
        crossval=CrossVal(method=method, packages=list(cfg.eval_packages),
                          results={k: crossval_result(v) for k, v in results.items()}))
    return write_model_folder(cfg.out, meta, tflite,
                              (cfg.teacher / "corpus.json").read_text())


def main(argv: Sequence[str] | None = None) -> int:
    d = DistillConfig(teacher=Path(), out=Path())
    p = argparse.ArgumentParser(prog="python -m learning.training.distill",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", type=Path, required=True, help="the YAMNet-based model folder")
    p.add_argument("--out", type=Path, required=True, help="the model folder to write")
    p.add_argument("--eval-packages", default=",".join(d.eval_packages),
                   help="packages held out to measure both models (comma-separated)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--max-windows", type=int, default=d.max_windows,
                   help="windows per file at most")
    p.add_argument("--per-class", type=int, default=d.per_class,
                   help="windows per teacher decision per epoch")
    p.add_argument("--width", type=int, default=d.width)
    p.add_argument("--version", default=d.version)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    cfg = DistillConfig(teacher=args.teacher, out=args.out,
                        eval_packages=tuple(x for x in args.eval_packages.split(",") if x),
                        epochs=args.epochs, max_windows=args.max_windows, width=args.width,
                        per_class=args.per_class,
                        version=args.version)
    folder = distill(cfg)
    console.print(f"wrote {folder.path} ({folder.meta.model_id}@{folder.meta.version})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
