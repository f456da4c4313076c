"""The actions of ``tidzam_ctl dataset`` (create, add-folder, merge, split, balance,
randomize, info, examples, from-samples ...) over ``learning.datasets``, and how
they report: one line per step, warnings for skipped files (exit code 3).
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from inference.features import FeatureParams
from learning.datasets.add import add_audio
from learning.datasets.compile import DatasetConfig
from learning.datasets.errors import BadInput, DatasetExists
from learning.datasets.format import TEST, TRAIN, CompiledDataset
from learning.datasets.operations import (
    add_class,
    balance,
    check_class_name,
    check_same_features,
    class_list,
    create,
    dataset_path,
    file_count,
    info,
    load,
    logged,
    merge,
    randomize,
    rename,
    save,
    split_in_place,
    split_off,
    with_corpus_provenance,
)
from learning.datasets.samples import (
    AudioItem,
    Skipped,
    extracted_items,
    folder_items,
    has_sidecars,
    sample_items,
)
from tidzam_ctl.errors import EXIT_ERROR, EXIT_OK, EXIT_PARTIAL, CliError

DELETED = "deleted"  # the editor's deleted samples (tidzam_ctl.editor.sample_folder.DELETED)

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


# ------------------------------------------------------------------- output


@dataclass
class Report:
    """What the command prints, and whether some files were skipped.

    With JSON output asked for, stdout holds only the JSON: the lines go to stderr.
    """

    json: bool = False
    partial: bool = False

    def say(self, text: str) -> None:
        (console if self.json else out).print(escape(text))

    def warn(self, text: str) -> None:
        console.print(f"[yellow]warning:[/yellow] {escape(text)}")

    def skipped(self, items: Sequence[Skipped]) -> None:
        """A warning per file that could not be used (exit 3); one line for the files
        left out on purpose (samples discarded or not reviewed)."""
        problems = [item for item in items if not item.intended]
        for item in problems:
            self.warn(f"skipped {item.path}: {item.reason}")
        left = Counter(item.reason for item in items if item.intended)
        if left:
            self.say("left out: " + ", ".join(f"{n} {why}" for why, n in sorted(left.items())))
        self.partial = self.partial or bool(problems)

    def code(self) -> int:
        return EXIT_PARTIAL if self.partial else EXIT_OK


@contextlib.contextmanager
def _bar(total: int, what: str) -> Iterator[Callable[[str], None]]:
    """A progress bar over ``total`` files; yields the per-file callback."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("{task.fields[file]}"), console=console,
                  transient=True) as bar:
        task = bar.add_task(what, total=total, file="")
        yield lambda name: bar.update(task, advance=1, file=escape(name))


def _counts(per_class: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(per_class.items())) or "none"


def print_info(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(data))
        return
    fp = FeatureParams.from_dict(data["feature_params"])
    out.print(escape(f"{data['path']}: {data['windows']} windows ({data['train']} train, "
                     f"{data['test']} test), {data['files']} files, {data['groups']} "
                     f"recording groups, {data['size_bytes']} bytes, format "
                     f"v{data['format_version']}"))
    out.print(f"features: {fp.shape[0]}x{fp.shape[1]} log-mel, {fp.window_s} s at "
              f"{fp.sample_rate} Hz, {fp.fmin:g}-{fp.fmax:g} Hz")
    table = Table("class", "train", "test", "files", "groups", "split")
    for c in data["classes"]:
        table.add_row(escape(c["name"]), str(c["train"]), str(c["test"]), str(c["files"]),
                      str(c["groups"]), c["split"])
    out.print(table)
    for line in data["history"][-5:]:
        out.print(escape(f"  {line}"))


# ------------------------------------------------------------------- operations


def _feature_params(path: Path | None) -> FeatureParams:
    """A JSON file of feature parameters, or a model folder / model.json to match."""
    if path is None:
        return FeatureParams()
    file = path / "model.json" if path.is_dir() else path
    try:
        data = json.loads(file.read_text())
        if "features" in data or "feature_params" in data:
            data = data.get("features") or data["feature_params"]
        return FeatureParams.from_dict(data)
    except (OSError, ValueError, TypeError) as exc:
        raise BadInput(f"cannot use {file} as feature parameters: {exc}") from None


def add_items(ds: CompiledDataset, found: tuple[list[AudioItem], list[Skipped]], op: str,
               folder: Path, licence: str, seed: int, report: Report) -> CompiledDataset:
    items, skipped = found
    with _bar(len(items), f"decoding {folder.name}") as step:
        ds, added = add_audio(ds, items, licence=licence, seed=seed, progress=step)
    skipped = [*skipped, *added.skipped]
    report.skipped(skipped)
    if added.duplicates:
        report.warn(f"{len(added.duplicates)} file(s) already in the dataset, not added again")
    if added.files == 0 and skipped:
        raise CliError(f"nothing added from {folder}: {len(skipped)} file(s) skipped, "
                       "see the warnings above", EXIT_ERROR)
    report.say(f"+{added.files} file(s), +{sum(added.windows.values())} windows "
               f"({_counts(added.windows)}); {len(skipped)} skipped")
    return logged(ds, op, f"{folder} (+{added.files} files)")


def merge_dataset(ds: CompiledDataset, other_name: str, classe: str | None, report: Report
           ) -> CompiledDataset:
    other_path = dataset_path(other_name)
    merged, done = merge(ds, load(other_path), classe)
    if done.duplicates:
        report.warn(f"{len(done.duplicates)} file(s) of {other_path} already in the dataset: "
                    "their windows were not added again")
    if done.moved_to_train:
        report.warn(f"{len(done.moved_to_train)} recording group(s) were on both sides: "
                    "moved to the train side")
    new = f"; new classes: {', '.join(done.new_classes)}" if done.new_classes else ""
    report.say(f"merged {other_path}: +{done.files} file(s), +{done.windows} windows{new}")
    return logged(merged, "merge", f"{other_path}" + (f" into {classe}" if classe else ""))


def split_dataset(ds: CompiledDataset, path: Path, proportion: float, name: str | None, seed: int,
           report: Report) -> CompiledDataset:
    detail = f"p={proportion} seed={seed}"
    if name is None:
        ds, single = split_in_place(ds, proportion, seed)
        report.say(f"{ds.count(TEST)} test / {ds.count(TRAIN)} train windows ({detail})")
    else:
        target = dataset_path(name, beside=path)
        if target.exists():
            raise DatasetExists(f"{target} already exists: remove it or choose another "
                                "--split-name")
        result = split_off(ds, proportion, seed)
        save(logged(result.extracted, "split", f"test side of {path.name}, {detail}"), target,
             new=True)
        ds = logged(result.kept, "split", f"{detail}, test side in {target.name}")
        single = result.single_group
        report.say(f"{target}: {result.extracted.count(TEST)} windows of "
                   f"{len(result.extracted.files)} file(s) for testing; {path}: "
                   f"{ds.count(TRAIN)} windows left for training")
    if single:
        report.warn(f"single recording group, kept whole on the train side: {', '.join(single)}")
    return ds


def balance_dataset(ds: CompiledDataset, seed: int, report: Report) -> CompiledDataset:
    ds, done = balance(ds, seed)
    report.say(f"balanced to {done.target} train windows per class; added "
               f"{_counts(done.added)}")
    if done.empty:
        report.warn(f"no train window to duplicate in: {', '.join(done.empty)}")
    return logged(ds, "balance", f"seed={seed}")


def print_count(ds: CompiledDataset, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps({"files": file_count(ds)}))
    else:
        out.print(str(file_count(ds)))


# ------------------------------------------------------------------- actions


def _modify(name: str, change: Callable[[CompiledDataset], CompiledDataset]) -> None:
    path = dataset_path(name)
    save(change(load(path)), path)


def run_action(args: argparse.Namespace, report: Report) -> None:
    a = args.action
    if a == "create":
        path = dataset_path(args.name)
        ds = create(_feature_params(args.feature_params))
        save(ds, path, new=True)
        report.say(f"created {path} (features {ds.params.shape[0]}x{ds.params.shape[1]})")
    elif a == "rename":
        report.say(f"renamed to {rename(dataset_path(args.name), args.new)}")
    elif a == "add-class":
        _modify(args.name, lambda ds: logged(add_class(ds, args.classe), "add-class",
                                             args.classe))
        report.say(f"added the empty class {args.classe}")
    elif a == "add-folder":
        folder, classe = args.folder, args.classe and check_class_name(args.classe)
        _modify(args.name, lambda ds: add_items(ds, folder_items(folder, classe), "add-folder",
                                                 folder, args.licence, args.seed, report))
    elif a == "merge":
        _modify(args.name, lambda ds: merge_dataset(ds, args.other, args.classe, report))
    elif a == "split":
        path = dataset_path(args.name)
        save(split_dataset(load(path), path, args.split, args.split_name, args.seed, report), path)
    elif a == "balance":
        _modify(args.name, lambda ds: balance_dataset(ds, args.seed, report))
    elif a == "randomize":
        _modify(args.name, lambda ds: logged(randomize(ds, args.seed), "randomize",
                                             f"seed={args.seed}"))
        report.say("randomized")
    else:
        _read_action(args)


def _read_action(args: argparse.Namespace) -> None:
    path = dataset_path(args.name)
    ds = load(path)
    if args.action == "file-count":
        print_count(ds, args.json)
        return
    if args.action == "metadata":
        _store_metadata(ds, path)
    else:
        print_info(info(ds, path), args.json)


def _store_metadata(ds: CompiledDataset, path: Path) -> None:
    save(ds, path)
    out.print_json(json.dumps(ds.summary()))


def examples(args: argparse.Namespace, report: Report) -> None:
    from learning.corpus.fetch import CorpusError
    from learning.corpus.packages import CLASSES, CURATED_PACKAGES, PACKAGES
    from learning.training.selector import TrainConfig, compile_dataset

    path = dataset_path(args.out)
    if path.exists() and not args.force:
        raise DatasetExists(f"{path} already exists: remove it or pass --force")
    packages = tuple(p.strip() for p in (args.packages or "").split(",") if p.strip()) \
        or CURATED_PACKAGES
    unknown = [p for p in packages if p not in PACKAGES]
    if unknown:
        raise BadInput(f"unknown corpus package {', '.join(unknown)}; known: "
                       f"{', '.join(PACKAGES)}")
    classes = class_list(args.classes, CLASSES) if args.classes else None
    cfg = TrainConfig(out=path.parent, packages=packages, classes=classes, progress=True,
                      dataset=DatasetConfig(seed=args.seed))
    if args.cache is not None:
        cfg = replace(cfg, cache=args.cache)
    report.say(f"fetching {', '.join(packages)} into {cfg.cache} (apt-get download, once)")
    try:
        ds, manifest = compile_dataset(cfg)
    except (CorpusError, ValueError) as exc:
        raise CliError(str(exc), EXIT_ERROR) from None
    ds = logged(with_corpus_provenance(ds, manifest), "examples",
                f"packages {','.join(packages)}" + (f" classes {args.classes}" if classes else ""))
    save(ds, path)
    report.say(f"{path}: {ds.count(TRAIN)} train / {ds.count(TEST)} test windows of "
               f"{len(ds.files)} recordings, classes {', '.join(ds.label_names)}")


def from_samples(args: argparse.Namespace, report: Report,
                 reviews: Callable[[], dict[str, str]] | None = None) -> None:
    """Samples of a folder into a dataset: the Tidzam extractor's (FLAC + sidecar,
    classes from ``reviews()``: sample id → reviewed label), or the original's."""
    path = dataset_path(args.out)
    classe = args.classe and check_class_name(args.classe)
    if has_sidecars(args.folder):
        reviewed = reviews() if reviews is not None and not classe else {}
        found = extracted_items(args.folder, reviewed, classe, args.include_unchecked)
    else:
        found = _not_deleted(args.folder,
                             sample_items(args.folder, classe, args.include_unchecked))
    if path.exists():
        ds = load(path)
        if args.feature_params is not None:
            check_same_features(ds.params, _feature_params(args.feature_params))
    else:
        ds = create(_feature_params(args.feature_params))
    ds = add_items(ds, found, "from-samples", args.folder, args.licence, args.seed, report)
    save(ds, path)
    report.say(f"{path}: {len(ds.files)} files, classes {', '.join(ds.label_names)}")


def _not_deleted(folder: Path, found: tuple[list[AudioItem], list[Skipped]]
                 ) -> tuple[list[AudioItem], list[Skipped]]:
    """Samples the editor deleted (moved into ``deleted/``) are no class: left out."""
    items, skipped = found
    gone = [i for i in items if i.path.relative_to(folder).parts[0] == DELETED]
    return ([i for i in items if i not in gone],
            [*skipped, *(Skipped(str(i.path), "deleted in the editor") for i in gone)])
