"""The original TidzamDatabase flags of ``tidzam_ctl dataset`` (``--dataset D
--audio-folder F --split P ...``): applied in the original's order and written once.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from learning.datasets.errors import DatasetExists
from learning.datasets.format import CompiledDataset
from learning.datasets.operations import (
    add_class,
    check_class_name,
    create,
    dataset_path,
    info,
    load,
    logged,
    randomize,
    save,
)
from learning.datasets.samples import folder_items
from tidzam_ctl.commands.dataset_actions import (
    Report,
    add_items,
    balance_dataset,
    merge_dataset,
    out,
    print_count,
    print_info,
    split_dataset,
)
from tidzam_ctl.errors import EXIT_USAGE, CliError

_CHANGES = ("rename", "classe", "audio_folder", "merge", "split", "balance", "randomize")
_FLAGS = (*_CHANGES, "split_name", "file_count", "metadata", "info")


def flags_given(args: argparse.Namespace) -> list[str]:
    return [f for f in _FLAGS if getattr(args, f"f_{f}") not in (None, False)]


def _open_for_flags(path: Path, args: argparse.Namespace, report: Report
                    ) -> tuple[CompiledDataset, bool]:
    """The dataset, and whether it was just created."""
    if path.exists():
        return load(path), False
    adds = args.f_classe or args.f_audio_folder or args.f_merge
    if adds or not flags_given(args):
        report.say(f"creating {path}")
        return create(), True
    return load(path), False  # raises DatasetNotFound


def run_flags(args: argparse.Namespace, report: Report) -> None:
    if args.f_split_name and args.f_split is None:
        raise CliError("--split-name goes with --split P", EXIT_USAGE)
    path = dataset_path(args.f_dataset)
    ds, changed = _open_for_flags(path, args, report)
    target = dataset_path(args.f_rename, beside=path) if args.f_rename else path
    if target != path and target.exists():
        raise DatasetExists(f"{target} already exists: remove it or choose another name")
    classe = args.f_classe and check_class_name(args.f_classe)
    if args.f_audio_folder:
        ds = add_items(ds, folder_items(args.f_audio_folder, classe), "add-folder",
                        args.f_audio_folder, "", args.f_seed, report)
    elif args.f_merge:
        ds = merge_dataset(ds, args.f_merge, classe, report)
    elif classe:
        ds = logged(add_class(ds, classe), "add-class", classe)
    if args.f_split is not None:
        ds = split_dataset(ds, path, args.f_split, args.f_split_name, args.f_seed, report)
    if args.f_balance:
        ds = balance_dataset(ds, args.f_seed, report)
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
        print_count(ds, args.f_json)
    if args.f_info:
        print_info(info(ds, path), args.f_json)
