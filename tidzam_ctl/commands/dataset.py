"""``tidzam_ctl dataset``: the original Database Tool, over ``learning.datasets.operations``.

Two ways to call it, the same operations underneath:

- sub-actions: ``tidzam_ctl dataset add-folder birds.npz recordings/`` — each
  loads the dataset, does one thing and writes it back (atomically);
- the original TidzamDatabase flags: ``tidzam_ctl dataset --dataset D
  --audio-folder F --classe C --split 0.2 --split-name test --balance
  --randomize --info`` — applied in the original's order (rename; audio
  folder, else merge, else empty class; split; balance; randomize; metadata;
  file count; info) and written once at the end, so a failing step writes
  nothing. A missing ``--dataset`` is created when the call adds something to
  it (or asks for nothing else); any other call on it is an error.

``tidzam_ctl dataset edit`` opens the Database Editor (``dataset_editor``):
a dataset or a sample folder to browse, play, relabel and delete, or a stream
(``--stream``) to extract labelled samples from. The original editor's flags
work too: ``--dataset D --stream S``, ``--dataset D --play [--play-id C]``.

Each file is written atomically. A split into a second dataset writes that
one first and the source last: a crash in between leaves the source as it
was, and a retry refuses to overwrite the test dataset until it is removed.

Exit codes: 0 done; 1 the operation failed (feature parameters differ, nothing
could be added, unreadable dataset, corpus not fetched); 2 bad arguments
(missing dataset or folder, empty folder, bad class name, unknown class,
existing target); 3 done, but some files were skipped (not audio, unreadable,
silent, unnamed) — each is listed as a warning.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from inference.features import FeatureParams
from learning.datasets.compile import TEST, TRAIN, CompiledDataset, DatasetConfig
from learning.datasets.operations import (
    UNCHECKED,
    AudioItem,
    BadInput,
    ClassNameError,
    DatasetError,
    DatasetExists,
    DatasetNotFound,
    Skipped,
    add_audio,
    add_class,
    balance,
    check_class_name,
    check_same_features,
    class_list,
    create,
    dataset_path,
    file_count,
    folder_items,
    info,
    load,
    logged,
    merge,
    randomize,
    rename,
    sample_items,
    save,
    split_in_place,
    split_off,
    with_corpus_provenance,
)
from tidzam_ctl.errors import EXIT_ERROR, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, CliError
from tidzam_ctl.settings import CtlSettings

DELETED = "deleted"  # the editor's folder of deleted samples (dataset_editor.DELETED)

if TYPE_CHECKING:  # not subscriptable at run time
    Actions = argparse._SubParsersAction[argparse.ArgumentParser]

console = Console(stderr=True)
out = Console(soft_wrap=True)

_USAGE_ERRORS = (DatasetNotFound, DatasetExists, ClassNameError, BadInput)
_CHANGES = ("rename", "classe", "audio_folder", "merge", "split", "balance", "randomize")
_FLAGS = (*_CHANGES, "split_name", "file_count", "metadata", "info")
_EDITOR_FLAGS = ("stream", "play", "play_id")

DESCRIPTION = """\
Build and edit compiled datasets: one .npz file each holding log-mel windows, their
labels, their side (train/test) and where every window came from (file, offset,
licence, recording group). A split never puts one recording on both sides.

NAME is a path, .npz added when missing (birds, data/birds.npz). A bare NAME for a
derived dataset (--split-name, rename) lies beside the dataset it comes from.

Either use an ACTION below (`tidzam_ctl dataset ACTION -h` for its options) or the
original TidzamDatabase flags, e.g.
  tidzam_ctl dataset --dataset D --audio-folder F --classe birds
  tidzam_ctl dataset --dataset D --split 0.2 --split-name test --balance --randomize
The flags apply in the original's order (rename; audio folder, else merge, else
empty class; split; balance; randomize; metadata; file count; info) and the dataset
is written once, at the end.

Exit codes: 0 done, 1 failed, 2 bad arguments, 3 done but some files were skipped.
"""


# ------------------------------------------------------------------- the parser


def _proportion(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def add_dataset_parser(sub: Actions) -> None:
    """The ``dataset`` command: its actions and the original's flags."""
    p = sub.add_parser("dataset", help="build and edit compiled datasets (the Database Tool)",
                       description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_flags(p)
    _add_editor_flags(p)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    _add_editor_action(actions)
    _add_edit_actions(actions)
    _add_read_actions(actions)
    _add_build_actions(actions)


def _add_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("the original TidzamDatabase flags (instead of an ACTION)")
    g.add_argument("--dataset", dest="f_dataset", metavar="NAME",
                   help="the dataset to open (created if the call adds something to it)")
    g.add_argument("--rename", dest="f_rename", metavar="NEW", help="rename the dataset")
    g.add_argument("--classe", dest="f_classe", metavar="CLASSE",
                   help="create an empty class; with --audio-folder or --merge: put "
                   "everything into this one class")
    g.add_argument("--audio-folder", dest="f_audio_folder", type=Path, metavar="FOLDER",
                   help="add the audio files of FOLDER (class = sub-folder name)")
    g.add_argument("--merge", dest="f_merge", metavar="OTHER",
                   help="add the windows of dataset OTHER (classes matched by name)")
    g.add_argument("--split", dest="f_split", type=_proportion, metavar="P",
                   help="proportion (0..1) of the windows extracted for testing, by "
                   "recording group; with --split-name into a new dataset, else marked "
                   "as the test side in place")
    g.add_argument("--split-name", dest="f_split_name", metavar="NAME",
                   help="name of the test dataset that --split writes")
    g.add_argument("--balance", dest="f_balance", action="store_true",
                   help="duplicate train windows of small classes up to the largest")
    g.add_argument("--randomize", dest="f_randomize", action="store_true",
                   help="shuffle the windows")
    g.add_argument("--file-count", dest="f_file_count", action="store_true",
                   help="print the number of source audio files")
    g.add_argument("--metadata", dest="f_metadata", action="store_true",
                   help="rewrite the summary stored in the file (and upgrade the format); "
                   "print it as JSON")
    g.add_argument("--info", dest="f_info", action="store_true",
                   help="print classes, windows per class and side, files, feature params")
    g.add_argument("--seed", dest="f_seed", type=int, default=0, metavar="N",
                   help="seed of --split, --balance and --randomize (default 0)")
    g.add_argument("--json", dest="f_json", action="store_true",
                   help="--info and --file-count as JSON")


def _add_editor_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("the original TidzamDatabaseEditor flags (with --dataset)")
    g.add_argument("--stream", dest="f_stream", metavar="FILE_OR_URL",
                   help="extract samples from this stream (as `dataset edit --stream`), "
                   "offering the classes of --dataset")
    g.add_argument("--play", dest="f_play", action="store_true",
                   help="play every window of --dataset, one after the other")
    g.add_argument("--play-id", dest="f_play_id", metavar="CLASSE",
                   help="play the windows of one class only (its name or its index)")
    g.add_argument("--samples", dest="f_samples", type=Path, metavar="FOLDER",
                   help="where --stream saves the samples (default ./samples)")


def _add_editor_action(actions: Actions) -> None:
    a = actions.add_parser(
        "edit", help="the Database Editor: browse, play, relabel, delete; extract samples",
        description="A text UI. On a dataset (.npz): its classes, their windows with "
        "provenance, the spectrogram; p plays the window (decoded again from its source "
        "file), r relabels (R: every window of its file), d deletes, u undoes, s saves (one "
        "line in the dataset history), / filters, q quits. On a folder of extracted "
        "samples: the same keys move files at once (relabel: into the label's folder, "
        "renamed; delete: into deleted/; a: accept an unchecked/ sample). With --stream: "
        "step through the stream's windows (n/space next, b back, c channel), p plays, 1-9 "
        "or l labels the window: saved as ['<label>'](<source>-<channel>)_<time>.wav in "
        "--samples, where `dataset from-samples` reads it. Without ffplay, aplay or paplay, "
        "p writes a WAV and shows its path.")
    a.add_argument("target", nargs="?", metavar="DATASET_OR_FOLDER",
                   help="a dataset NAME or a sample folder (with --stream: a dataset whose "
                   "classes are offered, or the folder to save into)")
    a.add_argument("--stream", metavar="FILE_OR_URL",
                   help="extract samples from this file or stream (any format FFmpeg reads)")
    a.add_argument("--samples", type=Path, metavar="FOLDER",
                   help="where --stream saves samples (default: TARGET if a folder, else "
                   "./samples)")
    a.add_argument("--classes", metavar="C1,C2,...",
                   help="labels offered first (number keys) with --stream")
    a.add_argument("--classe", metavar="CLASSE", help="the class to show first")


def _seed(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def _add_edit_actions(actions: Actions) -> None:
    a = actions.add_parser("create", help="create an empty dataset")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--feature-params", type=Path, metavar="FILE",
                   help="feature parameters: a JSON file of them, or a model folder / "
                   "model.json to match (default: the current ones)")
    a = actions.add_parser("rename", help="rename (move) a dataset")
    a.add_argument("name", metavar="NAME")
    a.add_argument("new", metavar="NEW", help="new NAME (bare: in the same folder)")
    a = actions.add_parser("add-class", help="add an empty class")
    a.add_argument("name", metavar="NAME")
    a.add_argument("classe", metavar="CLASSE", help="class name, e.g. birds-american_robin")
    a = actions.add_parser(
        "add-folder", help="add a folder of audio files (class = sub-folder name)",
        description="Decode every file of FOLDER (any format FFmpeg reads, every channel, "
        "at the feature sample rate), cut 0.5 s windows behind the energy gate and add "
        "them to the train side. Class: --classe, else the sub-folder path joined with "
        "'-' (birds/american_robin/ -> birds-american_robin). Files that are not audio "
        "are skipped with a warning (exit code 3); files already in the dataset "
        "(same content) are not added twice.")
    a.add_argument("name", metavar="NAME")
    a.add_argument("folder", type=Path, metavar="FOLDER")
    a.add_argument("--classe", help="put every file into this one class")
    a.add_argument("--licence", default="", help="licence of these recordings (provenance)")
    _seed(a)
    a = actions.add_parser(
        "merge", help="add another dataset's windows (classes matched by name)",
        description="Add OTHER's windows to NAME. Classes are matched by name (a class in "
        "both keeps NAME's index), or every non-quiet window goes into --classe. The "
        "feature parameters must be equal. A recording on the test side of one and the "
        "train side of the other moves to the train side whole.")
    a.add_argument("name", metavar="NAME")
    a.add_argument("other", metavar="OTHER")
    a.add_argument("--classe", help="put every non-quiet window of OTHER into this class")
    a = actions.add_parser(
        "split", help="hold out a proportion for testing, by recording group",
        description="Choose whole recording groups, per class, until about P of each "
        "class's windows are chosen (a class with one group stays on the train side). "
        "With --split-name the chosen windows move into that new dataset and NAME keeps "
        "the rest as its train side; without it they are marked as NAME's test side.")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--split", type=_proportion, required=True, metavar="P",
                   help="proportion extracted for testing, 0..1")
    a.add_argument("--split-name", metavar="TEST_NAME", help="the test dataset to write")
    _seed(a)
    a = actions.add_parser("balance", help="duplicate train windows of small classes",
                           description="Duplicate train windows of every smaller class "
                           "(whole copies, then a seeded random subset) until each class "
                           "has as many train windows as the largest. Test windows stay.")
    a.add_argument("name", metavar="NAME")
    _seed(a)
    a = actions.add_parser("randomize", help="shuffle the windows (seeded)")
    a.add_argument("name", metavar="NAME")
    _seed(a)


def _add_read_actions(actions: Actions) -> None:
    a = actions.add_parser("file-count", help="print the number of source audio files")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--json", action="store_true", help='print {"files": N}')
    a = actions.add_parser(
        "metadata", help="rewrite the stored summary (upgrading the format), print it",
        description="Every write stores a summary in the file (counts per class and side, "
        "files, groups, feature params, history) so a reader needs no features. This "
        "rewrites it (and a version 1 file in the current format) and prints it as JSON.")
    a.add_argument("name", metavar="NAME")
    a = actions.add_parser("info", help="classes, windows per class and side, files, "
                           "feature params, size")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--json", action="store_true", help="print JSON")


def _add_build_actions(actions: Actions) -> None:
    a = actions.add_parser(
        "examples", help="build the bootstrap dataset from the Debian corpus packages",
        description="Fetch the corpus packages with apt-get download (once, cached), label "
        "their recordings by path, window them and split them held out by recording "
        "(learning.datasets.compile.build_dataset), and write the dataset with each file's "
        "package, path, licence and recording group.")
    a.add_argument("--out", required=True, metavar="NAME")
    a.add_argument("--cache", type=Path, help="corpus cache (default $TIDZAM_HOME/corpus)")
    a.add_argument("--packages", help="comma-separated corpus packages (default: all)")
    a.add_argument("--classes", help="comma-separated subset of classes (quiet is kept)")
    a.add_argument("--force", action="store_true", help="replace an existing NAME")
    _seed(a)
    a = actions.add_parser(
        "from-samples", help="build a dataset from extracted, labelled samples",
        description="Add the samples under FOLDER to NAME (created if missing). Names as the "
        "original extractor wrote them: ['<label>'](<source>-<channel>)_<time>.wav (a "
        "leading + allowed, time ISO 8601 or YYYY-MM-DD-HH-MM-SS). Class: --classe, else "
        "the sub-folder the sample was filed in, else the label in its name. Samples in "
        "unchecked/ are skipped unless --include-unchecked. Recording group: source, "
        "channel and hour, so one stretch of one microphone stays on one side.")
    a.add_argument("folder", type=Path, metavar="FOLDER")
    a.add_argument("--out", required=True, metavar="NAME")
    a.add_argument("--classe", help="put every sample into this one class")
    a.add_argument("--include-unchecked", action="store_true",
                   help="also use unchecked/ samples, with the label in their name")
    a.add_argument("--licence", default="", help="licence of these recordings (provenance)")
    a.add_argument("--feature-params", type=Path, metavar="FILE",
                   help="feature parameters of a new dataset (see create)")
    _seed(a)


# ------------------------------------------------------------------- output


@dataclass
class _Report:
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
        for item in items:
            self.warn(f"skipped {item.path}: {item.reason}")
        self.partial = self.partial or bool(items)

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


def _print_info(data: dict[str, Any], as_json: bool) -> None:
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


def _add_items(ds: CompiledDataset, found: tuple[list[AudioItem], list[Skipped]], op: str,
               folder: Path, licence: str, seed: int, report: _Report) -> CompiledDataset:
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


def _merge(ds: CompiledDataset, other_name: str, classe: str | None, report: _Report
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


def _split(ds: CompiledDataset, path: Path, proportion: float, name: str | None, seed: int,
           report: _Report) -> CompiledDataset:
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


def _balance(ds: CompiledDataset, seed: int, report: _Report) -> CompiledDataset:
    ds, done = balance(ds, seed)
    report.say(f"balanced to {done.target} train windows per class; added "
               f"{_counts(done.added)}")
    if done.empty:
        report.warn(f"no train window to duplicate in: {', '.join(done.empty)}")
    return logged(ds, "balance", f"seed={seed}")


def _print_count(ds: CompiledDataset, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps({"files": file_count(ds)}))
    else:
        out.print(str(file_count(ds)))


# ------------------------------------------------------------------- actions


def _modify(name: str, change: Callable[[CompiledDataset], CompiledDataset]) -> None:
    path = dataset_path(name)
    save(change(load(path)), path)


def _action(args: argparse.Namespace, report: _Report) -> None:
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
        _modify(args.name, lambda ds: _add_items(ds, folder_items(folder, classe), "add-folder",
                                                 folder, args.licence, args.seed, report))
    elif a == "merge":
        _modify(args.name, lambda ds: _merge(ds, args.other, args.classe, report))
    elif a == "split":
        path = dataset_path(args.name)
        save(_split(load(path), path, args.split, args.split_name, args.seed, report), path)
    elif a == "balance":
        _modify(args.name, lambda ds: _balance(ds, args.seed, report))
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
        _print_count(ds, args.json)
        return
    if args.action == "metadata":
        _store_metadata(ds, path)
    else:
        _print_info(info(ds, path), args.json)


def _store_metadata(ds: CompiledDataset, path: Path) -> None:
    save(ds, path)
    out.print_json(json.dumps(ds.summary()))


def _examples(args: argparse.Namespace, report: _Report) -> None:
    from learning.corpus.build import CLASSES, DEFAULT_PACKAGES, PACKAGES, CorpusError
    from learning.training.selector import TrainConfig, compile_dataset

    path = dataset_path(args.out)
    if path.exists() and not args.force:
        raise DatasetExists(f"{path} already exists: remove it or pass --force")
    packages = tuple(p.strip() for p in (args.packages or "").split(",") if p.strip()) \
        or DEFAULT_PACKAGES
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


def _from_samples(args: argparse.Namespace, report: _Report) -> None:
    path = dataset_path(args.out)
    classe = args.classe and check_class_name(args.classe)
    found = _not_deleted(args.folder, sample_items(args.folder, classe, args.include_unchecked))
    if path.exists():
        ds = load(path)
        if args.feature_params is not None:
            check_same_features(ds.params, _feature_params(args.feature_params))
    else:
        ds = create(_feature_params(args.feature_params))
    ds = _add_items(ds, found, "from-samples", args.folder, args.licence, args.seed, report)
    save(ds, path)
    report.say(f"{path}: {len(ds.files)} files, classes {', '.join(ds.label_names)}")


def _not_deleted(folder: Path, found: tuple[list[AudioItem], list[Skipped]]
                 ) -> tuple[list[AudioItem], list[Skipped]]:
    """Samples the editor deleted (moved into ``deleted/``) are no class: left out."""
    items, skipped = found
    gone = [i for i in items if i.path.relative_to(folder).parts[0] == DELETED]
    return ([i for i in items if i not in gone],
            [*skipped, *(Skipped(str(i.path), "deleted in the editor") for i in gone)])


# ------------------------------------------------------------------- the editor


def _hop(settings: CtlSettings, params: FeatureParams) -> int:
    """The classifier's hop between windows, in samples (``consumers.classifier.classifier``)."""
    return max(1, round(params.window_samples * (1.0 - settings.overlap)))


def _edit(args: argparse.Namespace, settings: CtlSettings) -> None:
    """``dataset edit``: the browsing app, or the extractor with ``--stream``."""
    from tidzam_ctl.editor import app as ed

    target = Path(args.target) if args.target else None
    if args.stream:
        ds, samples = None, args.samples
        if target is not None and target.is_dir():
            samples = samples or target
        elif target is not None:
            ds = load(dataset_path(target))
        classes = [c.strip() for c in (args.classes or "").split(",") if c.strip()]
        _extract(args.stream, samples or Path("samples"), ds, classes, settings)
        return
    if target is None:
        raise CliError("name a dataset or a sample folder to edit, or give --stream",
                       EXIT_USAGE)
    browser: ed.Browser
    if target.is_dir():
        browser = ed.FolderBrowser(ed.SampleFolder(target))
    else:
        browser = ed.DatasetBrowser(ed.DatasetEdits.open(dataset_path(target)))
    ed.BrowserApp(browser, ed.Player(ed.find_player()), args.classe).run()


def _extract(stream: str, samples: Path, ds: CompiledDataset | None, classes: list[str],
             settings: CtlSettings) -> None:
    from learning.corpus.build import CLASSES
    from tidzam_ctl.editor import app as ed

    for name in classes:
        check_class_name(name)
    params = ds.params if ds is not None else FeatureParams()
    folder = ed.SampleFolder(samples)
    labels = ed.label_choices(classes, ds.label_names if ds else (),
                              [g for g in folder.groups() if g not in (UNCHECKED, ed.NO_LABEL)],
                              CLASSES)
    stepper = ed.StreamStepper(stream, params, _hop(settings, params))
    ed.ExtractorApp(stepper, folder, labels, ed.Player(ed.find_player())).run()


def _play_through(args: argparse.Namespace, report: _Report) -> None:
    """``--dataset D --play [--play-id C]``: every window (of class C), one after the
    other, with the audio player (Ctrl-C stops)."""
    from learning.corpus.build import default_cache_dir
    from tidzam_ctl.editor import app as ed

    ds = load(dataset_path(args.f_dataset))
    labels = ds.windows.labels
    rows = list(range(len(ds.windows)))
    if args.f_play_id is not None:
        wanted = args.f_play_id
        if wanted.isdigit() and int(wanted) < len(ds.label_names):
            wanted = ds.label_names[int(wanted)]
        if wanted not in ds.label_names:
            raise ClassNameError(f"no class {args.f_play_id!r}; classes: "
                                 f"{', '.join(ds.label_names)}")
        rows = [r for r in rows if labels[r] == ds.label_names.index(wanted)]
    command = ed.find_player()
    if command is None:  # a WAV per window would fill the disk: the editor writes one on `p`
        raise CliError("no audio player found (ffplay, aplay or paplay): install one, or "
                       "open the dataset with `tidzam_ctl dataset edit`, where p writes the "
                       "window as a WAV", EXIT_ERROR)
    player = ed.Player(command)
    caches = (default_cache_dir(),)
    try:
        for r in rows:
            prov = ds.provenance[int(ds.file_index[r])]
            where = (f"{ds.label_names[int(labels[r])]}: {prov.path} at "
                     f"{float(ds.windows.offset_s[r]):.2f} s, channel {int(ds.windows.channel[r])}")
            try:
                audio = ed.window_audio(ds, r, caches)
            except ed.EditorError as exc:
                report.warn(f"window {r} ({where}): {exc}")
                continue
            outcome = player.play(audio, ds.params.sample_rate, wait=True)
            report.say(f"window {r} ({where}): {outcome}")
    finally:
        player.close()


def _run_editor_flags(args: argparse.Namespace, settings: CtlSettings, report: _Report) -> None:
    if args.f_stream:
        ds = load(dataset_path(args.f_dataset)) if args.f_dataset else None
        _extract(args.f_stream, args.f_samples or Path("samples"), ds, [], settings)
    elif args.f_dataset:
        _play_through(args, report)
    else:
        raise CliError("--play and --play-id need --dataset NAME", EXIT_USAGE)


# ------------------------------------------------------------------- the original flags


def _flags_given(args: argparse.Namespace) -> list[str]:
    return [f for f in _FLAGS if getattr(args, f"f_{f}") not in (None, False)]


def _open_for_flags(path: Path, args: argparse.Namespace, report: _Report
                    ) -> tuple[CompiledDataset, bool]:
    """The dataset, and whether it was just created."""
    if path.exists():
        return load(path), False
    adds = args.f_classe or args.f_audio_folder or args.f_merge
    if adds or not _flags_given(args):
        report.say(f"creating {path}")
        return create(), True
    return load(path), False  # raises DatasetNotFound


def _run_flags(args: argparse.Namespace, report: _Report) -> None:
    if args.f_split_name and args.f_split is None:
        raise CliError("--split-name goes with --split P", EXIT_USAGE)
    path = dataset_path(args.f_dataset)
    ds, changed = _open_for_flags(path, args, report)
    target = dataset_path(args.f_rename, beside=path) if args.f_rename else path
    if target != path and target.exists():
        raise DatasetExists(f"{target} already exists: remove it or choose another name")
    classe = args.f_classe and check_class_name(args.f_classe)
    if args.f_audio_folder:
        ds = _add_items(ds, folder_items(args.f_audio_folder, classe), "add-folder",
                        args.f_audio_folder, "", args.f_seed, report)
    elif args.f_merge:
        ds = _merge(ds, args.f_merge, classe, report)
    elif classe:
        ds = logged(add_class(ds, classe), "add-class", classe)
    if args.f_split is not None:
        ds = _split(ds, path, args.f_split, args.f_split_name, args.f_seed, report)
    if args.f_balance:
        ds = _balance(ds, args.f_seed, report)
    if args.f_randomize:
        ds = logged(randomize(ds, args.f_seed), "randomize", f"seed={args.f_seed}")
    if changed or args.f_metadata or any(getattr(args, f"f_{f}") for f in _CHANGES):
        save(ds, target)
        if target != path:
            path.unlink(missing_ok=True)
            report.say(f"renamed to {target}")
    _flag_outputs(ds, target, args)


def _flag_outputs(ds: CompiledDataset, path: Path, args: argparse.Namespace) -> None:
    if args.f_metadata:
        out.print_json(json.dumps(ds.summary()))
    if args.f_file_count:
        _print_count(ds, args.f_json)
    if args.f_info:
        _print_info(info(ds, path), args.f_json)


# ------------------------------------------------------------------- entry point


def _dispatch(args: argparse.Namespace, settings: CtlSettings, report: _Report) -> None:
    given = _flags_given(args)
    editor = [f for f in _EDITOR_FLAGS if getattr(args, f"f_{f}") not in (None, False)]
    if args.action and (given or args.f_dataset or editor):
        raise CliError("use either an ACTION or the original flags (--dataset ...), not both",
                       EXIT_USAGE)
    if args.f_samples and not args.f_stream:
        raise CliError("--samples goes with --stream", EXIT_USAGE)
    if editor:
        if given:
            raise CliError("the editor's flags (--stream, --play, --play-id) go with "
                           "--dataset alone, not with the Database Tool's flags", EXIT_USAGE)
        _run_editor_flags(args, settings, report)
    elif args.action == "edit":
        _edit(args, settings)
    elif args.action == "examples":
        _examples(args, report)
    elif args.action == "from-samples":
        _from_samples(args, report)
    elif args.action:
        _action(args, report)
    elif args.f_dataset:
        _run_flags(args, report)
    elif given:
        raise CliError("the original flags need --dataset NAME", EXIT_USAGE)
    else:
        raise CliError("name a dataset: `tidzam_ctl dataset ACTION NAME ...` or "
                       "`tidzam_ctl dataset --dataset NAME ...` (see --help)", EXIT_USAGE)


def dataset(settings: CtlSettings, args: argparse.Namespace) -> int:
    """``tidzam_ctl dataset``: errors become one-line messages with their exit code
    (escaped: sample names hold rich markup brackets)."""
    report = _Report(json=bool(args.f_json or getattr(args, "json", False)))
    try:
        _dispatch(args, settings, report)
    except DatasetError as exc:
        code, message = EXIT_USAGE if isinstance(exc, _USAGE_ERRORS) else EXIT_ERROR, str(exc)
    except CliError as exc:
        code, message = exc.code, str(exc)
    else:
        return report.code()
    raise CliError(escape(message), code) from None
