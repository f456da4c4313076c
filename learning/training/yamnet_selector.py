"""The YAMNet-based selector: cross-validate it and build its model folder.

    python -m learning.training.yamnet_selector --out models/selector-yamnet \
        [--old-selector models/selector]

fetches the corpus packages (``learning.corpus``), computes the front end's view of
every window once (``learning.embeddings.cache``, cached), and runs the
leave-one-package-out cross-validation (``learning.training.crossval``) of the
zero-shot AudioSet mapping and of the head side by side, printing per-class
precision/recall/F1, macro-F1 and each package's accuracy (``--json`` for a file).
The head's settings (L2, smoothing over neighbouring frames) are chosen inside each
fold by inner package folds; ``--out`` then chooses them the same way on every
package, fits the head on every window, and writes the model folder with the
cross-validation in its ``model.json`` (``--crossval`` alone writes nothing).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from audio.decode import AudioDecodeError
from inference.hearing import mapped_scores, mapping_indices
from inference.modelfolder import ModelFolder
from inference.yamnet import YamnetFrontEnd
from learning.corpus.build import build_corpus
from learning.corpus.fetch import default_cache_dir
from learning.corpus.manifest import CorpusManifest
from learning.corpus.packages import CLASSES, CURATED_PACKAGES
from learning.datasets.format import QUIET
from learning.embeddings.cache import DROPPED, WindowConfig, corpus_windows
from learning.embeddings.mixing import mixtures
from learning.training import old_selector
from learning.training.crossval import (
    Choice,
    Scores,
    Setting,
    WindowTable,
    evaluate,
    fold_scores,
    score,
    tuned_scorer,
    zero_shot_scorer,
)
from learning.training.head import HeadConfig
from learning.training.yamnet_folder import CrossValRun, write_selector

HEAD_CLASSES = tuple(c for c in CLASSES if c != QUIET)
HEAD = "head"
# what the inner folds choose among: the head's L2 toward the AudioSet mapping, and
# whether a window's scores are the mean over it and its neighbours (3 frames)
SETTINGS = tuple(Setting(HeadConfig(l2_embedding=l2), smoothed)
                 for l2 in (1.0, 3.0, 10.0) for smoothed in (False, True))
console = Console()


def build_table(manifest: CorpusManifest, cache: Path, cfg: WindowConfig,
                front_end: YamnetFrontEnd, mix: bool = False) -> WindowTable:
    """Every labelled window of the corpus (gaps dropped) as one table, then the
    mixtures (``learning.embeddings.mixing``) if ``mix``."""
    indices = mapping_indices(HEAD_CLASSES, front_end.labels)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("front end", total=len(manifest.files))
        per_file = corpus_windows(manifest.files, cache, cfg, front_end,
                                  progress=lambda _p: bar.advance(task))
    emb, mapped, labels, quiet, package, group, recording, start = ([] for _ in range(8))
    for r, (entry, fw) in enumerate(zip(manifest.files, per_file, strict=True)):
        if isinstance(fw, AudioDecodeError):
            console.print(f"[yellow]skipped[/] {entry.package}:{entry.path}: {fw}")
            continue
        keep = [i for i, lab in enumerate(fw.labels(entry.label, cfg)) if lab != DROPPED]
        if not keep:
            continue
        gated = fw.labels(entry.label, cfg)
        emb.append(np.concatenate([fw.embeddings[keep], fw.highband[keep]], axis=1))
        mapped.append(mapped_scores(fw.scores[keep], indices))
        mixture = "+".join([entry.label, *entry.also])  # a mixture's windows: every class
        labels += [mixture if gated[i] == entry.label else gated[i] for i in keep]
        quiet += [gated[i] == QUIET for i in keep]
        package += [entry.package] * len(keep)
        group += [entry.group] * len(keep)
        recording += [r] * len(keep)
        start += fw.starts[keep].tolist()
    mixed = [False] * len(labels)
    if mix:
        with console.status("mixing events over beds"):
            made = mixtures(manifest.files, cache, front_end, wcfg=cfg)
        for n, m in enumerate(made):
            emb.append(np.concatenate([m.windows.embeddings, m.windows.highband], axis=1))
            mapped.append(mapped_scores(m.windows.scores, indices))
            labels.append(m.label)
            quiet.append(False)
            package.append("|".join(m.packages))
            group.append("|".join(m.groups))
            recording.append(-1 - n)  # no neighbours: never smoothed with anything
            start.append(0)
            mixed.append(True)
    return WindowTable(HEAD_CLASSES, np.concatenate(emb), np.concatenate(mapped), labels,
                       np.array(quiet), np.array(package), group,
                       np.array(recording, dtype=np.int64), np.array(start, dtype=np.int64),
                       np.array(mixed))


def scores_table(title: str, results: dict[str, Scores]) -> Table:
    table = Table(title=title)
    table.add_column("class")
    for name in results:
        table.add_column(f"{name} P/R/F1")
    first = next(iter(results.values()))
    for c in first.per_class:
        table.add_row(c, *[_prf(r, c) for r in results.values()])
    table.add_row("macro-F1", *[f"{r.macro_f1:.3f}" for r in results.values()])
    return table


def _prf(r: Scores, c: str) -> str:
    s = r.per_class[c]
    return f"{s.precision:.2f} / {s.recall:.2f} / {s.f1:.2f}  (n={s.support})"


def _against_old(table: WindowTable, manifest: CorpusManifest, cache: Path, folder: Path,
                 decided: dict[str, list[str]]) -> dict[str, Scores]:
    """The old selector and the new ones on the packages the old one never heard."""
    training = ModelFolder.load(folder).meta.training_data
    trained_on = set(training.packages) if training else set()
    real = {p for p in table.package.tolist() if "|" not in p}  # not the mixtures
    unseen = sorted(real - trained_on)
    old = old_selector.decisions(table, manifest.files, cache, folder, unseen)
    rows = sorted(old)
    labels = (*table.classes, QUIET)
    truth = [table.labels[i] for i in rows]
    out = {f"{name} (unseen)": score(truth, [d[i] for i in rows], labels)
           for name, d in decided.items()}
    out["old selector (unseen)"] = score(truth, [old[i] for i in rows], labels)
    console.print(scores_table(f"{len(rows)} windows of {len(unseen)} packages the old "
                               f"selector never heard: {', '.join(unseen)}", {
                                   k: out[k] for k in sorted(out, reverse=True)}))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m learning.training.yamnet_selector",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--crossval", action="store_true",
                        help="leave-one-package-out cross-validation")
    parser.add_argument("--packages", nargs="+", default=list(CURATED_PACKAGES),
                        help="the corpus packages (default: every curated one)")
    parser.add_argument("--cache", type=Path, default=None, help="the corpus cache")
    parser.add_argument("--mix", action="store_true",
                        help="train on mixtures of events over rain/wind/water too")
    parser.add_argument("--old-selector", type=Path, metavar="FOLDER",
                        help="also decide the packages this log-mel selector never "
                        "trained on (e.g. models/selector)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--out", type=Path, metavar="FOLDER",
                        help="write the model folder here (after the cross-validation)")
    parser.add_argument("--version", default="2.0.0", help="the model's version (2.0.0)")
    args = parser.parse_args(argv)
    if not (args.crossval or args.out):
        parser.error("nothing to do: give --crossval or --out")
    cache = args.cache or default_cache_dir()
    t0 = time.monotonic()
    manifest = build_corpus(cache, packages=args.packages)
    cfg = WindowConfig()
    table = build_table(manifest, cache, cfg, YamnetFrontEnd(), mix=args.mix)
    hop = round(cfg.hop_s * 48_000)
    results: dict[str, Scores] = {}
    decided: dict[str, list[str]] = {}
    scores, thresholds = fold_scores(table, zero_shot_scorer)
    results["zero-shot"], decided["zero-shot"] = evaluate(table, scores, thresholds)
    results["zero-shot smoothed"], decided["zero-shot smoothed"] = evaluate(
        table, scores, thresholds, hop)
    chosen: list[Choice] = []
    folds = sorted({p for p in table.package.tolist() if "|" not in p})
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("head, package by package", total=len(folds))
        scores, thresholds = fold_scores(table, tuned_scorer(SETTINGS, hop, chosen=chosen),
                                         progress=lambda _p: bar.advance(task))
    results[HEAD], decided[HEAD] = evaluate(table, scores, thresholds)
    choices = {p: c.setting.describe() for p, c in zip(folds, chosen, strict=True)}
    real = [p for p in table.package.tolist() if "|" not in p]
    console.print(scores_table(f"leave-one-package-out, {len(real)} windows, "
                               f"{len(set(real))} packages", results))
    for name, r in results.items():
        console.print(name, r.per_package_accuracy)
    console.print("settings the inner folds chose:", choices)
    if args.old_selector:
        results.update(_against_old(table, manifest, cache, args.old_selector, decided))
    crossval_s = time.monotonic() - t0
    console.print(f"cross-validation: {crossval_s:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({k: asdict(v) for k, v in results.items()}, indent=1))
    if args.out:
        truth = [table.labels[i] for i in np.flatnonzero(~table.mixed).tolist()] \
            if table.mixed is not None else list(table.labels)
        run = CrossValRun(results, HEAD, choices, truth, decided[HEAD], crossval_s)
        folder = write_selector(args.out, args.version, table, manifest, cfg, SETTINGS, run, t0)
        console.print(f"wrote {folder.path} ({folder.meta.model_id}@{folder.meta.version}, "
                      f"{time.monotonic() - t0:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
