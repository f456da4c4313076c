"""``tidzam_ctl model add | ls | show | deploy | rollback | compare``.

The registry (``inference.registry``) holds the model folders; which version is
deployed is the ``ModelDeployed`` history of the CONTROL stream. A deploy or a
rollback validates the folder (metadata and one LiteRT inference) and publishes
a ``ModelDeployed``; running classifiers switch at their next batch
(``consumers.classifier.service``). Before any deploy, classifiers run
``TIDZAM_MODEL_DIR`` (the built-in selector): it counts as the first deployment,
so the first rollback returns to it.

``compare`` is in ``model_compare``; the deploy history both read is in
``model_history``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

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
from inference.semver import VersionError
from tidzam_ctl.commands.model_compare import compare_models
from tidzam_ctl.commands.model_format import iso, num, pct
from tidzam_ctl.commands.model_history import bus_stack, history_or_none, read_history
from tidzam_ctl.errors import EXIT_OK, EXIT_USAGE, CliError
from tidzam_ctl.settings import CtlSettings
from tidzam_ctl.stack.stack import Stack

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


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
                return compare_models(settings, registry, args)
            case _:
                return _rollback(settings, registry, args)
    except (RegistryError, VersionError) as exc:
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
    history = history_or_none(settings)
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
                      num(r["labels"]), pct(r["accuracy"]), pct(r["balanced_accuracy"]),
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
        "deployed_at": iso(deployed_at),
        "problem": entry.problem,
    }


def _orphan_json(cur: Deployment) -> dict[str, Any]:
    return {"model_id": cur.model_id, "version": cur.version, "path": cur.path,
            "builtin": False, "created": None, "labels": None, "accuracy": None,
            "balanced_accuracy": None, "deployed": True, "deployed_at": iso(cur.at_ns or None),
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
    history = history_or_none(settings)
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
    stack = bus_stack(settings)
    history = asyncio.run(read_history(stack, settings))
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
    stack = bus_stack(settings)
    history = asyncio.run(read_history(stack, settings))
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
