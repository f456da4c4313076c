"""``tidzam_ctl dataset edit`` and the original editor's flags (``--dataset D --stream S``,
``--dataset D --play [--play-id C]``): they open the Database Editor
(``tidzam_ctl.editor``), imported only here (Textual is slow to import).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from inference.features import FeatureParams
from inference.windows import hop_samples
from learning.datasets.errors import ClassNameError
from learning.datasets.format import CompiledDataset
from learning.datasets.operations import check_class_name, dataset_path, load
from learning.datasets.samples import UNCHECKED
from tidzam_ctl.commands.dataset_actions import Report
from tidzam_ctl.errors import EXIT_ERROR, EXIT_USAGE, CliError
from tidzam_ctl.settings import CtlSettings


def edit(args: argparse.Namespace, settings: CtlSettings) -> None:
    """``dataset edit``: the browsing app, or the extractor with ``--stream``."""
    from tidzam_ctl.editor.app import BrowserApp
    from tidzam_ctl.editor.browsers import Browser, DatasetBrowser, FolderBrowser
    from tidzam_ctl.editor.dataset_edits import DatasetEdits
    from tidzam_ctl.editor.player import Player, find_player
    from tidzam_ctl.editor.sample_folder import SampleFolder

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
    browser: Browser
    if target.is_dir():
        browser = FolderBrowser(SampleFolder(target))
    else:
        browser = DatasetBrowser(DatasetEdits.open(dataset_path(target)))
    BrowserApp(browser, Player(find_player()), args.classe).run()


def _extract(stream: str, samples: Path, ds: CompiledDataset | None, classes: list[str],
             settings: CtlSettings) -> None:
    from learning.corpus.packages import CLASSES
    from tidzam_ctl.editor.app import ExtractorApp, label_choices
    from tidzam_ctl.editor.player import Player, find_player
    from tidzam_ctl.editor.sample_folder import NO_LABEL, SampleFolder
    from tidzam_ctl.editor.stream_stepper import StreamStepper

    for name in classes:
        check_class_name(name)
    params = ds.params if ds is not None else FeatureParams()
    folder = SampleFolder(samples)
    labels = label_choices(classes, ds.label_names if ds else (),
                           [g for g in folder.groups() if g not in (UNCHECKED, NO_LABEL)],
                           CLASSES)
    stepper = StreamStepper(stream, params,
                            hop_samples(params.window_samples, settings.overlap))
    ExtractorApp(stepper, folder, labels, Player(find_player())).run()


def _play_through(args: argparse.Namespace, report: Report) -> None:
    """``--dataset D --play [--play-id C]``: every window (of class C), one after the
    other, with the audio player (Ctrl-C stops)."""
    from learning.corpus.fetch import default_cache_dir
    from tidzam_ctl.editor.errors import EditorError
    from tidzam_ctl.editor.player import Player, find_player
    from tidzam_ctl.editor.window_audio import window_audio

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
    command = find_player()
    if command is None:  # a WAV per window would fill the disk: the editor writes one on `p`
        raise CliError("no audio player found (ffplay, aplay or paplay): install one, or "
                       "open the dataset with `tidzam_ctl dataset edit`, where p writes the "
                       "window as a WAV", EXIT_ERROR)
    player = Player(command)
    caches = (default_cache_dir(),)
    try:
        for r in rows:
            prov = ds.provenance[int(ds.file_index[r])]
            where = (f"{ds.label_names[int(labels[r])]}: {prov.path} at "
                     f"{float(ds.windows.offset_s[r]):.2f} s, channel {int(ds.windows.channel[r])}")
            try:
                audio = window_audio(ds, r, caches)
            except EditorError as exc:
                report.warn(f"window {r} ({where}): {exc}")
                continue
            outcome = player.play(audio, ds.params.sample_rate, wait=True)
            report.say(f"window {r} ({where}): {outcome}")
    finally:
        player.close()


def run_editor_flags(args: argparse.Namespace, settings: CtlSettings, report: Report) -> None:
    if args.f_stream:
        ds = load(dataset_path(args.f_dataset)) if args.f_dataset else None
        _extract(args.f_stream, args.f_samples or Path("samples"), ds, [], settings)
    elif args.f_dataset:
        _play_through(args, report)
    else:
        raise CliError("--play and --play-id need --dataset NAME", EXIT_USAGE)
