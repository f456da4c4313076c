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
from collections.abc import Callable
from typing import Any, TypeVar

from rich.console import Console
from rich.table import Table

from bus_schemas import ModelDeployed
from inference.deploying import DeployRefused, checked, listing, plan_deploy, plan_rollback
from inference.features import IncompatibleFeatures
from inference.modelfolder import ModelFolderError
from inference.registry import ModelRegistry, RegistryError
from inference.semver import VersionError
from tidzam_ctl.commands.model_compare import compare_models
from tidzam_ctl.commands.model_format import num, pct
from tidzam_ctl.commands.model_history import bus_stack, history_or_none, read_history
from tidzam_ctl.errors import EXIT_OK, EXIT_USAGE, CliError
from tidzam_ctl.settings import CtlSettings
from tidzam_ctl.stack.stack import Stack

T = TypeVar("T")

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
    rows = listing(registry, history_or_none(settings), args.name)
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


def _deployed_mark(row: dict[str, Any]) -> str:
    if row["deployed"] is None:
        return "?"
    return "[green]● deployed[/green]" if row["deployed"] else ""


# -------------------------------------------------------------------- show


def _show(settings: CtlSettings, registry: ModelRegistry, args: argparse.Namespace) -> int:
    entry = registry.resolve(args.spec)
    if entry.folder is None:
        raise CliError(f"{entry.spec} ({entry.path}) is invalid: {entry.problem}")
    meta = entry.folder.meta
    [row] = [r for r in listing(registry, history_or_none(settings), entry.model_id)
             if r["version"] == entry.version]
    if args.json:
        out.print_json(json.dumps({**row, "meta": json.loads(meta.model_dump_json())}))
        return EXIT_OK
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
    folder = _planned(lambda: checked(registry, args.spec))  # before the bus is asked
    stack = bus_stack(settings)
    history = asyncio.run(read_history(stack, settings))
    plan = _planned(lambda: plan_deploy(folder, history, args.new_windowing))
    _publish(stack, plan.event)
    console.print(plan.describe("deployed"))
    return EXIT_OK


def _rollback(settings: CtlSettings, registry: ModelRegistry, args: argparse.Namespace) -> int:
    stack = bus_stack(settings)
    history = asyncio.run(read_history(stack, settings))
    plan = _planned(lambda: plan_rollback(registry, history, args.name, args.new_windowing))
    _publish(stack, plan.event)
    console.print(plan.describe("rolled back to"))
    return EXIT_OK


def _planned(plan: Callable[[], T]) -> T:
    try:
        return plan()
    except DeployRefused as exc:
        raise CliError(str(exc), exc.exit_code) from exc


def _publish(stack: Stack, event: ModelDeployed) -> None:
    from tidzam_ctl.commands.source import publish

    asyncio.run(publish(stack, [event]))
