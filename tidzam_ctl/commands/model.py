"""``tidzam_ctl model add | ls | show | deploy | rollback | compare``.

The registry (``inference.registry``) holds the model folders; which version is
deployed is the ``ModelDeployed`` history of the CONTROL stream. A deploy or a
rollback validates the folder (metadata and one LiteRT inference) and publishes
a ``ModelDeployed``; running classifiers switch at their next batch
(``consumers.classifier.service``). Before any deploy, classifiers run
``TIDZAM_MODEL_DIR`` (the built-in selector): it counts as the first deployment,
so the first rollback returns to it.

``compare A B`` replays archived audio through both models (``learning.compare``)
and publishes nothing. ``A`` is the reference: ``NAME`` alone means its deployed
version, read from the CONTROL history, so it needs the bus; ``NAME@VERSION`` needs
no running stack. ``B`` is the candidate: ``NAME`` alone is its newest version.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bus.connect import BusError
from bus_schemas import ModelDeployed
from inference.features import IncompatibleFeatures
from inference.modelfolder import ModelFolder, ModelFolderError
from inference.registry import (
    DeployHistory,
    Deployment,
    ModelRegistry,
    RegisteredModel,
    RegistryError,
    parse_spec,
    validate,
)
from tidzam_ctl.errors import EXIT_ERROR, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, CliError
from tidzam_ctl.settings import CtlSettings
from tidzam_ctl.stack.stack import Stack
from tidzam_ctl.timeparse import parse_time

if TYPE_CHECKING:
    from inference.scoring import Scorer
    from learning.compare import CompareReport, Segment, Tally

console = Console(stderr=True)
out = Console(soft_wrap=True)

_HISTORY_TIMEOUT_S = 15.0


def model(settings: CtlSettings, args: argparse.Namespace) -> int:
    registry = registry_of(settings)
    try:
        match args.action:
            case "add":
                return _add(registry, args)
            case "ls":
                return _ls(settings, registry, args)
            case "show":
                return _show(settings, registry, args)
            case "deploy":
                return _deploy(settings, registry, args)
            case "compare":
                return _compare(settings, registry, args)
            case _:
                return _rollback(settings, registry, args)
    except RegistryError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc


def registry_of(settings: CtlSettings) -> ModelRegistry:
    return ModelRegistry(settings.home.expanduser().absolute() / "models")


# --------------------------------------------------------------------- add


def _add(registry: ModelRegistry, args: argparse.Namespace) -> int:
    try:
        entry, added = registry.add(args.folder)
    except (ModelFolderError, IncompatibleFeatures) as exc:
        raise CliError(f"not added: {exc}", EXIT_USAGE) from exc
    if added:
        console.print(f"added {entry.spec} → {entry.path}; deploy it with "
                      f"`tidzam_ctl model deploy {entry.spec}`")
    else:
        console.print(f"{entry.spec} is already in the registry with the same content "
                      f"({entry.path})")
    return EXIT_OK


# ---------------------------------------------------------------------- ls


def _ls(settings: CtlSettings, registry: ModelRegistry, args: argparse.Namespace) -> int:
    entries = registry.entries(args.name)
    history = _history_or_none(settings)
    rows = [_entry_json(e, history) for e in entries]
    if history is not None:  # a deployed folder that is not in the registry (any more)
        listed = {(e.model_id, e.version) for e in entries}
        for model_id in history.models():
            cur = history.current(model_id)
            if (cur is not None and (args.name in (None, model_id))
                    and (cur.model_id, cur.version) not in listed):
                rows.append(_orphan_json(cur))
    if args.json:
        out.print_json(json.dumps(rows))
        return EXIT_OK
    table = Table(title=f"{len(rows)} model version(s) in {registry.root}")
    for col in ("model", "version", "created (UTC)", "labels", "accuracy", "bal. acc.",
                "deployed", "where"):
        table.add_column(col)
    for r in rows:
        where = "built-in" if r["builtin"] else "registry"
        if r["problem"]:
            where = f"[red]{r['problem'][:60]}[/red]"
        table.add_row(r["model_id"], r["version"], (r["created"] or "-")[:16].replace("T", " "),
                      _num(r["labels"]), _pct(r["accuracy"]), _pct(r["balanced_accuracy"]),
                      _deployed_mark(r), where)
    out.print(table)
    return EXIT_OK


def _entry_json(entry: RegisteredModel, history: DeployHistory | None) -> dict[str, Any]:
    meta = entry.folder.meta if entry.folder else None
    held = meta.metrics.held_out if meta and meta.metrics else None
    current = history.current(entry.model_id) if history else None
    deployed_at = _last_deployed_ns(history, entry) if history else None
    return {
        "model_id": entry.model_id, "version": entry.version, "path": str(entry.path),
        "builtin": entry.builtin, "created": meta.created.isoformat() if meta else None,
        "labels": len(meta.labels) if meta else None,
        "accuracy": held.accuracy if held else None,
        "balanced_accuracy": held.balanced_accuracy if held else None,
        "deployed": None if history is None else (
            current is not None and current.version == entry.version),
        "deployed_at": _iso(deployed_at),
        "problem": entry.problem,
    }


def _orphan_json(cur: Deployment) -> dict[str, Any]:
    return {"model_id": cur.model_id, "version": cur.version, "path": cur.path,
            "builtin": False, "created": None, "labels": None, "accuracy": None,
            "balanced_accuracy": None, "deployed": True, "deployed_at": _iso(cur.at_ns or None),
            "problem": "deployed, but not in the registry"}


def _last_deployed_ns(history: DeployHistory, entry: RegisteredModel) -> int | None:
    times = [d.at_ns for d in history.history(entry.model_id)
             if d.version == entry.version and not d.baseline]
    return max(times) if times else None


def _deployed_mark(row: dict[str, Any]) -> str:
    if row["deployed"] is None:
        return "?"
    return "[green]● deployed[/green]" if row["deployed"] else ""


# -------------------------------------------------------------------- show


def _show(settings: CtlSettings, registry: ModelRegistry, args: argparse.Namespace) -> int:
    entry = registry.resolve(args.spec)
    if entry.folder is None:
        raise CliError(f"{entry.spec} ({entry.path}) is invalid: {entry.problem}")
    history = _history_or_none(settings)
    meta = entry.folder.meta
    if args.json:
        row = _entry_json(entry, history)
        out.print_json(json.dumps({**row, "meta": json.loads(meta.model_dump_json())}))
        return EXIT_OK
    row = _entry_json(entry, history)
    deployed = {None: "unknown (the bus is not running)", True: "yes", False: "no"}
    out.print(f"[bold]{entry.spec}[/bold]  {entry.path}"
              f"{'  (built-in)' if entry.builtin else ''}")
    out.print(f"created {meta.created.isoformat()}; deployed: {deployed[row['deployed']]}")
    framework = ", ".join(f"{k} {v}" for k, v in meta.framework.items())
    if framework:
        out.print(f"framework: {framework}")
    out.print(f"labels ({len(meta.labels)}): {', '.join(meta.labels)}")
    out.print(f"decision: top score ≥ {meta.decision.threshold} and ahead of the runner-up "
              f"by ≥ {meta.decision.margin}, else 'unknown'")
    p = entry.folder.params
    out.print(f"features: {p.kind}, {p.window_s} s windows at {p.sample_rate} Hz "
              f"({p.window_samples} samples), n_fft {p.n_fft}, hop {p.hop}, {p.n_mels} mels "
              f"{p.fmin:g}-{p.fmax:g} Hz → input {list(p.shape)}")
    _print_training(meta)
    _print_metrics(meta)
    return EXIT_OK


def _print_training(meta: Any) -> None:
    data = meta.training_data
    if data is None:
        out.print("training data: not recorded")
        return
    packages = ", ".join(f"{k} {v}" for k, v in data.packages.items()) or "-"
    out.print(f"training data: {data.n_files} files ({data.manifest}), "
              f"{data.n_windows_train} windows for training, {data.n_windows_test} held out; "
              f"packages: {packages}")
    if meta.timings:
        out.print("timings: " + ", ".join(f"{k} {v:g}" for k, v in meta.timings.items()))


def _print_metrics(meta: Any) -> None:
    if meta.metrics is None:
        out.print("metrics: none recorded")
        return
    held = meta.metrics.held_out
    extra = "" if held.balanced_accuracy is None else \
        f", balanced accuracy {held.balanced_accuracy:.1%}"
    out.print(f"held-out accuracy {held.accuracy:.1%}{extra} (split: {meta.metrics.split})")
    table = Table(title="held-out metrics per class")
    for col in ("class", "precision", "recall", "F1", "support", "split"):
        table.add_column(col, justify="left" if col in ("class", "split") else "right")
    for label in meta.labels:
        c = held.per_class.get(label)
        if c is None:
            table.add_row(label, "-", "-", "-", "0", "-")
        else:
            table.add_row(label, f"{c.precision:.3f}", f"{c.recall:.3f}", f"{c.f1:.3f}",
                          str(c.support), c.split)
    out.print(table)


# ---------------------------------------------------------- deploy, rollback


def _deploy(settings: CtlSettings, registry: ModelRegistry, args: argparse.Namespace) -> int:
    entry = registry.resolve(args.spec)
    folder = _validated(entry.path, entry.spec)
    stack = _bus(settings)
    history = asyncio.run(_history(stack, settings))
    current = history.current(folder.meta.model_id)
    _check_windowing(folder, current, args.new_windowing)
    _publish_deploy(stack, folder)
    _report(folder, current, "deployed")
    return EXIT_OK


def _rollback(settings: CtlSettings, registry: ModelRegistry, args: argparse.Namespace) -> int:
    name, version = parse_spec(args.name)
    if version is not None:
        raise CliError("rollback takes a model NAME; deploy NAME@VERSION picks a version",
                       EXIT_USAGE)
    stack = _bus(settings)
    history = asyncio.run(_history(stack, settings))
    target = history.rollback_target(name)
    current = history.current(name)
    try:
        path = registry.resolve(target.spec).path
    except RegistryError:
        path = Path(target.path)  # deployed from outside the registry: its own folder
    folder = _validated(path, target.spec)
    if (folder.meta.model_id, folder.meta.version) != (target.model_id, target.version):
        raise CliError(f"cannot roll back to {target.spec}: {path} now holds "
                       f"{folder.meta.model_id}@{folder.meta.version}")
    _check_windowing(folder, current, args.new_windowing)
    _publish_deploy(stack, folder)
    _report(folder, current, "rolled back to")
    return EXIT_OK


def _validated(path: Path, spec: str) -> ModelFolder:
    try:
        return validate(path)
    except (ModelFolderError, IncompatibleFeatures) as exc:
        raise CliError(f"cannot deploy {spec}: {exc}") from exc


def _check_windowing(folder: ModelFolder, current: Deployment | None, allowed: bool) -> None:
    """Running classifiers refuse a model that changes the window grid or the rate: say
    so here rather than publish a deploy they will all refuse."""
    if current is None or allowed:
        return
    try:
        running = ModelFolder.load(current.path).params
    except (ModelFolderError, IncompatibleFeatures):
        return  # the deployed folder is gone: nothing to compare with
    new = folder.params
    if (running.window_samples, running.sample_rate) != (new.window_samples, new.sample_rate):
        raise CliError(
            f"{folder.meta.model_id}@{folder.meta.version} has {new.window_s} s windows at "
            f"{new.sample_rate} Hz, the deployed {current.spec} {running.window_s} s at "
            f"{running.sample_rate} Hz: running classifiers cannot switch without a restart "
            "and would refuse it. Pass --new-windowing to deploy it anyway, then restart "
            "the classifiers (`tidzam_ctl down` and `up`)", EXIT_USAGE)


def _publish_deploy(stack: Stack, folder: ModelFolder) -> None:
    from tidzam_ctl.commands.source import publish

    params: dict[str, float | int | str] = dict(folder.params.to_dict())
    event = ModelDeployed(model_id=folder.meta.model_id, model_version=folder.meta.version,
                          path=str(folder.path.absolute()), labels=folder.labels,
                          feature_params=params, at_ns=time.time_ns())
    asyncio.run(publish(stack, [event]))


def _report(folder: ModelFolder, previous: Deployment | None, verb: str) -> None:
    meta, p = folder.meta, folder.params
    held = meta.metrics.held_out if meta.metrics else None
    acc = f", held-out accuracy {held.accuracy:.1%}" if held else ""
    was = f" (was {previous.version})" if previous is not None else ""
    console.print(f"{verb} {meta.model_id}@{meta.version}{was}: {folder.path}, "
                  f"{len(meta.labels)} labels, {p.window_s} s windows at {p.sample_rate} Hz"
                  f"{acc}; running classifiers switch at their next batch")


# ----------------------------------------------------------------- compare


def _compare(settings: CtlSettings, registry: ModelRegistry, args: argparse.Namespace) -> int:
    from inference.scoring import TfliteModel  # LiteRT only for the commands that score
    from learning.compare import CompareError, find_sources, plan, source_folders

    since, until = _time_range(args.since, args.until)
    overlap = settings.overlap if args.overlap is None else args.overlap
    if not 0.0 <= overlap < 1.0 or args.threads < 1 or args.top < 0:
        raise CliError("--overlap must be in [0, 1), --threads at least 1, --top at least 0",
                       EXIT_USAGE)
    folders = [_scoring_folder(_reference_path(settings, registry, args.a), args.a),
               _scoring_folder(registry.resolve(args.b).path, args.b)]
    models = [TfliteModel(f, num_threads=args.threads) for f in folders]
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
        history = asyncio.run(_history(_bus(settings), settings))
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
    from learning.compare import compare

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
        summary.add_row(name, str(t.windows), str(t.agree), _pct(t.agreement), str(t.unpaired))
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


# ----------------------------------------------------------------- history


def _bus(settings: CtlSettings) -> Stack:
    from tidzam_ctl.commands.stack import require_bus

    stack = Stack(settings)
    require_bus(stack)
    return stack


def baseline(settings: CtlSettings) -> list[Deployment]:
    """What classifiers run before any deploy: ``TIDZAM_MODEL_DIR``."""
    try:
        folder = ModelFolder.load(settings.model_dir)
    except (ModelFolderError, IncompatibleFeatures):
        return []
    return [Deployment(folder.meta.model_id, folder.meta.version,
                       str(folder.path.absolute()), 0, 0)]


async def _history(stack: Stack, settings: CtlSettings) -> DeployHistory:
    from bus.connect import connect, ensure_streams
    from consumers.classifier.service import read_deployments

    try:  # the client retries an unreachable server for ever: bound it
        nc = await asyncio.wait_for(connect(stack.nats_url, "tidzam_ctl-model"),
                                    _HISTORY_TIMEOUT_S)
    except TimeoutError as exc:
        raise CliError(f"NATS did not answer in {_HISTORY_TIMEOUT_S:.0f} s: is the stack up "
                       "(`tidzam_ctl status`)?") from exc
    try:
        await ensure_streams(nc.jetstream())
        events, _ = await asyncio.wait_for(read_deployments(nc.jetstream()),
                                           _HISTORY_TIMEOUT_S)
    finally:
        await nc.drain()
    return DeployHistory(events, baseline(settings))


def _history_or_none(settings: CtlSettings) -> DeployHistory | None:
    """The deploy history, or None (with a note) where the bus is not running."""
    stack = Stack(settings)
    if stack.embedded_nats and stack.pid_of("nats") is None:
        console.print("[yellow]the stack is not running: deployed versions unknown[/yellow]")
        return None
    try:
        return asyncio.run(_history(stack, settings))
    except (CliError, BusError) as exc:
        console.print(f"[yellow]deployed versions unknown: {exc}[/yellow]")
        return None


# ------------------------------------------------------------------- format


def _iso(at_ns: int | None) -> str | None:
    return None if not at_ns else datetime.fromtimestamp(at_ns / 1e9, UTC).isoformat()


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _num(value: int | None) -> str:
    return "-" if value is None else str(value)
