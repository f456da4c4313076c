"""``tidzam_ctl model compare A B``: replays archived audio through both models
(``learning.compare``) and publishes nothing. ``A`` is the reference: ``NAME`` alone
means its deployed version, read from the CONTROL history, so it needs the bus;
``NAME@VERSION`` needs no running stack. ``B`` is the candidate: ``NAME`` alone is its
newest version.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bus.connect import BusError
from inference.features import IncompatibleFeatures
from inference.modelfolder import ModelFolder, ModelFolderError
from inference.registry import ModelRegistry, RegistryError, parse_spec, validate
from tidzam_ctl.commands.model_format import pct
from tidzam_ctl.commands.model_history import bus_stack, read_history
from tidzam_ctl.errors import EXIT_ERROR, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, CliError
from tidzam_ctl.settings import CtlSettings
from tidzam_ctl.timeparse import parse_time

if TYPE_CHECKING:
    from inference.scoring import Scorer
    from learning.compare.plan import Segment
    from learning.compare.report import CompareReport, Tally

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def compare_models(settings: CtlSettings, registry: ModelRegistry, args: argparse.Namespace) -> int:
    from inference.loading import load_model  # LiteRT only for the commands that score
    from learning.compare.plan import CompareError, find_sources, plan, source_folders

    since, until = _time_range(args.since, args.until)
    overlap = settings.overlap if args.overlap is None else args.overlap
    if not 0.0 <= overlap < 1.0 or args.threads < 1 or args.top < 0:
        raise CliError("--overlap must be in [0, 1), --threads at least 1, --top at least 0",
                       EXIT_USAGE)
    folders = [_scoring_folder(_reference_path(settings, registry, args.a), args.a),
               _scoring_folder(registry.resolve(args.b).path, args.b)]
    models = [load_model(f, num_threads=args.threads) for f in folders]
    try:
        archive = source_folders(settings.archive_dir, args.database or (), args.source or ())
        segments = plan(find_sources(archive, args.source or ()), since, until)
    except CompareError as exc:
        raise CliError(str(exc), EXIT_ERROR) from exc
    report = _run_compare(models[0], models[1], segments, (since, until), overlap, args.top)
    if report.unreadable:  # each one was logged as it was skipped
        console.print(f"[yellow]{len(report.unreadable)} of {report.files} file(s) could not "
                      "be read and were skipped[/yellow]")
    if args.json:
        out.print_json(json.dumps(report.to_json()))
    else:
        _print_compare(report)
    return EXIT_PARTIAL if report.unreadable else EXIT_OK


def _time_range(since: str, until: str | None) -> tuple[datetime, datetime]:
    try:
        start = parse_time(since)
        end = parse_time(until) if until else datetime.now(UTC)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    if end <= start:
        raise CliError(f"--until {end.isoformat()} is not after --since {start.isoformat()}",
                       EXIT_USAGE)
    return start, end


def _reference_path(settings: CtlSettings, registry: ModelRegistry, spec: str) -> Path:
    """``NAME@VERSION`` from the registry; ``NAME`` alone: the deployed version."""
    name, version = parse_spec(spec)
    if version is not None:
        return registry.resolve(spec).path
    try:
        history = asyncio.run(read_history(bus_stack(settings), settings))
    except (CliError, BusError) as exc:
        raise CliError(f"{exc}; or give the reference as NAME@VERSION (`tidzam_ctl model ls "
                       f"{name}` lists them), which needs no bus", EXIT_USAGE) from exc
    current = history.current(name)
    if current is None:
        raise CliError(f"no version of {name} is deployed: give it as NAME@VERSION", EXIT_USAGE)
    try:
        return registry.resolve(current.spec).path
    except RegistryError:
        return Path(current.path)  # deployed from outside the registry: its own folder


def _scoring_folder(path: Path, spec: str) -> ModelFolder:
    try:
        return validate(path)
    except (ModelFolderError, IncompatibleFeatures) as exc:
        raise CliError(f"cannot compare {spec}: {exc}", EXIT_USAGE) from exc


def _run_compare(a: Scorer, b: Scorer, segments: list[Segment],
                 span: tuple[datetime, datetime], overlap: float, top: int) -> CompareReport:
    """``learning.compare.compare`` under a progress bar over seconds of audio."""
    from learning.compare.score import compare

    known = [s.expected_s for s in segments if s.expected_s is not None]
    total = sum(known) + 3_600.0 * (len(segments) - len(known))  # unknown: an hour file
    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed:.0f}/{task.total:.0f} s of audio"),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task(f"{a.model_id}@{a.version} vs {b.model_id}@{b.version}",
                            total=total)
        return compare(a, b, segments, *span, overlap=overlap, top=top,
                       progress=lambda s: bar.advance(task, s))


def _print_compare(report: CompareReport) -> None:
    a, b = report.a.spec, report.b.spec
    grid = "the same windows" if report.shared_windows else \
        "each its own windows (other rate or window length), paired by time"
    out.print(f"[bold]{a}[/bold] (A) vs [bold]{b}[/bold] (B), {report.since.isoformat()} to "
              f"{report.until.isoformat()}: {report.files} file(s), {report.audio_s:.1f} s "
              f"of audio, {grid}")
    summary = Table(title="agreement per source")
    for col in ("source", "windows", "agree", "agreement", "unpaired"):
        summary.add_column(col, justify="left" if col == "source" else "right")
    for name, t in [*report.sources.items(), ("all", report.total)]:
        summary.add_row(name, str(t.windows), str(t.agree), pct(t.agreement), str(t.unpaired))
    out.print(summary)
    for name, t in report.sources.items():
        out.print(_class_table(report, name, t))
    _print_ranges(report)


def _class_table(report: CompareReport, source: str, tally: Tally) -> Table:
    changes = sorted(((n, a, b) for (a, b), n in tally.pairs.items() if a != b), reverse=True)
    caption = "A → B: " + ", ".join(f"{a} → {b} {n}" for n, a, b in changes[:8]) \
        if changes else "no disagreement"
    table = Table(title=f"{source}: windows per decision (labels neither model chose omitted)",
                  caption=caption)
    for col in ("class", "A decided", "B decided", "both"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for c in tally.classes(report.label_order):
        if c.a or c.b:
            table.add_row(c.label, str(c.a), str(c.b), str(c.both))
    return table


def _print_ranges(report: CompareReport) -> None:
    if not report.top:
        out.print("no disagreement")
        return
    table = Table(title=f"longest disagreements ({len(report.top)} of {report.n_ranges})")
    for col in ("source", "ch", "start (UTC)", "seconds", "A", "B", "listen: file @ offset"):
        table.add_column(col)
    for d in report.top:
        start = datetime.fromtimestamp(d.start_ns / 1e9, UTC)
        table.add_row(d.source, str(d.channel), start.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
                      f"{(d.end_ns - d.start_ns) / 1e9:.2f}", d.a_label, d.b_label,
                      f"{d.path.name} @ {d.offset_s:.2f} s")
    out.print(table)
