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

``tidzam_ctl dataset edit`` opens the Database Editor (``tidzam_ctl.editor``):
a dataset or a sample folder to browse, play, relabel and delete, or a stream
(``--stream``) to extract labelled samples from. The original editor's flags
work too: ``--dataset D --stream S``, ``--dataset D --play [--play-id C]``.

Each file is written atomically. A split into a second dataset writes that
one first and the source last: a crash in between leaves the source as it
was, and a retry refuses to overwrite the test dataset until it is removed.

This module parses and dispatches; ``dataset_actions`` does the actions (and
prints), ``dataset_flags`` the original flags, ``dataset_edit`` the editor's.

Exit codes: 0 done; 1 the operation failed (feature parameters differ, nothing
could be added, unreadable dataset, corpus not fetched); 2 bad arguments
(missing dataset or folder, empty folder, bad class name, unknown class,
existing target); 3 done, but some files were skipped (not audio, unreadable,
silent, unnamed) — each is listed as a warning.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape

from learning.datasets.errors import (
    BadInput,
    ClassNameError,
    DatasetError,
    DatasetExists,
    DatasetNotFound,
)
from tidzam_ctl.commands.dataset_actions import Report, examples, from_samples, run_action
from tidzam_ctl.commands.dataset_edit import edit, run_editor_flags
from tidzam_ctl.commands.dataset_flags import flags_given, run_flags
from tidzam_ctl.errors import EXIT_ERROR, EXIT_USAGE, CliError
from tidzam_ctl.settings import CtlSettings

if TYPE_CHECKING:  # not subscriptable at run time
    Actions = argparse._SubParsersAction[argparse.ArgumentParser]

_USAGE_ERRORS = (DatasetNotFound, DatasetExists, ClassNameError, BadInput)
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
    a.add_argument("--packages", help="comma-separated corpus packages (default: the 18 "
                   "curated ones the default selector is built from)")
    a.add_argument("--classes", help="comma-separated subset of classes (quiet is kept)")
    a.add_argument("--force", action="store_true", help="replace an existing NAME")
    _seed(a)
    a = actions.add_parser(
        "from-samples", help="build a dataset from extracted, labelled samples",
        description="Add the samples under FOLDER to NAME (created if missing). Samples of "
        "the Tidzam extractor (FLAC + JSON sidecar, e.g. $TIDZAM_HOME/samples/samples): "
        "the class a reviewer gave each (tidzam_ctl samples label; read from the running "
        "stack), unreviewed ones skipped unless --include-unchecked. Otherwise names as the "
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


# ------------------------------------------------------------------- entry point


def _reviews(settings: CtlSettings) -> dict[str, str]:
    """The reviewed labels of extracted samples, from the stack's ``samples`` table."""
    import asyncio

    from tidzam_ctl.commands.samples import reviewed_labels
    from tidzam_ctl.stack.stack import Stack

    return asyncio.run(reviewed_labels(Stack(settings)))


def _dispatch(args: argparse.Namespace, settings: CtlSettings, report: Report) -> None:
    given = flags_given(args)
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
        run_editor_flags(args, settings, report)
    elif args.action == "edit":
        edit(args, settings)
    elif args.action == "examples":
        examples(args, report)
    elif args.action == "from-samples":
        from_samples(args, report, lambda: _reviews(settings))
    elif args.action:
        run_action(args, report)
    elif args.f_dataset:
        run_flags(args, report)
    elif given:
        raise CliError("the original flags need --dataset NAME", EXIT_USAGE)
    else:
        raise CliError("name a dataset: `tidzam_ctl dataset ACTION NAME ...` or "
                       "`tidzam_ctl dataset --dataset NAME ...` (see --help)", EXIT_USAGE)


def dataset(settings: CtlSettings, args: argparse.Namespace) -> int:
    """``tidzam_ctl dataset``: errors become one-line messages with their exit code
    (escaped: sample names hold rich markup brackets)."""
    report = Report(json=bool(args.f_json or getattr(args, "json", False)))
    try:
        _dispatch(args, settings, report)
    except DatasetError as exc:
        code, message = EXIT_USAGE if isinstance(exc, _USAGE_ERRORS) else EXIT_ERROR, str(exc)
    except CliError as exc:
        code, message = exc.code, str(exc)
    else:
        return report.code()
    raise CliError(escape(message), code) from None
