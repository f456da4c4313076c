"""What a deploy or a rollback publishes, decided once for every way of asking:
``tidzam_ctl model deploy | rollback | ls`` and the gateway's model requests, answered
by a classifier (``consumers.classifier.model_requests``).

``plan_deploy`` / ``plan_rollback`` validate the folder (metadata and one LiteRT
inference), refuse a window grid or rate the running classifiers cannot switch to
(unless ``new_windowing``), and give the ``ModelDeployed`` to publish. ``listing`` is
the registry's versions with their held-out metrics and which one is deployed. Pure of
the bus: the caller reads the history (``bus.history.read_deployments``) and publishes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bus_schemas import ModelDeployed
from bus_schemas.errors import TidzamError
from inference.features import IncompatibleFeatures
from inference.modelfolder import ModelFolder, ModelFolderError
from inference.registry import (
    DeployHistory,
    Deployment,
    ModelRegistry,
    RegisteredModel,
    RegistryError,
    content_digest,
    parse_spec,
    validate,
)


class DeployRefused(TidzamError):
    """A deploy or a rollback that is not published: the folder does not serve, or it
    changes the window grid unasked. ``exit_code`` 2 where the request itself is wrong."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class DeployPlan:
    event: ModelDeployed
    folder: ModelFolder
    previous: Deployment | None

    def describe(self, verb: str) -> str:
        meta, p = self.folder.meta, self.folder.params
        held = meta.metrics.held_out if meta.metrics else None
        acc = f", held-out accuracy {held.accuracy:.1%}" if held else ""
        was = f" (was {self.previous.version})" if self.previous is not None else ""
        return (f"{verb} {meta.model_id}@{meta.version}{was}: {self.folder.path}, "
                f"{len(meta.labels)} labels, {p.window_s} s windows at {p.sample_rate} Hz"
                f"{acc}; running classifiers switch at their next batch")


def baseline(model_dir: Path) -> list[Deployment]:
    """What classifiers run before any deploy: ``TIDZAM_MODEL_DIR``."""
    try:
        folder = ModelFolder.load(model_dir)
    except (ModelFolderError, IncompatibleFeatures):
        return []
    return [Deployment(folder.meta.model_id, folder.meta.version,
                       str(folder.path.absolute()), 0, 0)]


def checked(registry: ModelRegistry, spec: str) -> ModelFolder:
    """The folder of ``NAME`` (its newest version) or ``NAME@VERSION``, validated. Raises
    RegistryError (unknown, exit code 2) or DeployRefused. Reads files and runs LiteRT:
    a worker thread."""
    entry = registry.resolve(spec)
    return _validated(entry.path, entry.spec)


def plan_deploy(folder: ModelFolder, history: DeployHistory,
                new_windowing: bool = False) -> DeployPlan:
    """The deploy of a ``checked`` folder, given the deploys so far."""
    current = history.current(folder.meta.model_id)
    _check_windowing(folder, current, new_windowing)
    return DeployPlan(_event(folder), folder, current)


def plan_rollback(registry: ModelRegistry, history: DeployHistory, name: str,
                  new_windowing: bool = False) -> DeployPlan:
    """The version deployed before the current one of model ``name``, checked again."""
    name, version = parse_spec(name)
    if version is not None:
        raise DeployRefused("rollback takes a model NAME; deploy NAME@VERSION picks a "
                            "version", 2)
    target = history.rollback_target(name)
    current = history.current(name)
    try:
        path = registry.resolve(target.spec).path
    except RegistryError as exc:
        raise DeployRefused(f"cannot roll back to {target.spec}: {exc}") from exc
    folder = _validated(path, target.spec)
    if (folder.meta.model_id, folder.meta.version) != (target.model_id, target.version):
        raise DeployRefused(f"cannot roll back to {target.spec}: {path} now holds "
                            f"{folder.meta.model_id}@{folder.meta.version}")
    _check_windowing(folder, current, new_windowing)
    return DeployPlan(_event(folder), folder, current)


def _event(folder: ModelFolder) -> ModelDeployed:
    params: dict[str, float | int | str] = dict(folder.params.to_dict())
    return ModelDeployed(model_id=folder.meta.model_id, model_version=folder.meta.version,
                         sha256=content_digest(folder), path=str(folder.path.absolute()),
                         labels=folder.labels,
                         feature_params=params, at_ns=time.time_ns())


def _validated(path: Path, spec: str) -> ModelFolder:
    try:
        return validate(path)
    except (ModelFolderError, IncompatibleFeatures) as exc:
        raise DeployRefused(f"cannot deploy {spec}: {exc}") from exc


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
        raise DeployRefused(
            f"{folder.meta.model_id}@{folder.meta.version} has {new.window_s} s windows at "
            f"{new.sample_rate} Hz, the deployed {current.spec} {running.window_s} s at "
            f"{running.sample_rate} Hz: running classifiers cannot switch without a restart "
            "and would refuse it. Pass --new-windowing to deploy it anyway, then restart "
            "the classifiers (`tidzam_ctl down` and `up`)", 2)


# ----------------------------------------------------------------- listing


def listing(registry: ModelRegistry, history: DeployHistory | None,
            name: str | None = None) -> list[dict[str, Any]]:
    """Every version of the registry (of ``name``), and a deployed folder that is not in
    it (any more); ``deployed`` is None where the history is unknown."""
    entries = registry.entries(name)
    rows = [_entry_json(e, history) for e in entries]
    if history is not None:
        listed = {(e.model_id, e.version) for e in entries}
        for model_id in history.models():
            cur = history.current(model_id)
            if (cur is not None and name in (None, model_id)
                    and (cur.model_id, cur.version) not in listed):
                rows.append(_orphan_json(cur))
    return rows


def _entry_json(entry: RegisteredModel, history: DeployHistory | None) -> dict[str, Any]:
    meta = entry.folder.meta if entry.folder else None
    held = meta.metrics.held_out if meta and meta.metrics else None
    current = history.current(entry.model_id) if history else None
    return {
        "model_id": entry.model_id, "version": entry.version, "path": str(entry.path),
        "builtin": entry.builtin, "created": meta.created.isoformat() if meta else None,
        "labels": len(meta.labels) if meta else None,
        "accuracy": held.accuracy if held else None,
        "balanced_accuracy": held.balanced_accuracy if held else None,
        "per_class": {k: {"precision": c.precision, "recall": c.recall, "f1": c.f1,
                          "support": c.support} for k, c in held.per_class.items()}
        if held else {},
        "deployed": None if history is None else (
            current is not None and current.version == entry.version),
        "deployed_at": iso(_last_deployed_ns(history, entry) if history else None),
        "problem": entry.problem,
    }


def _orphan_json(cur: Deployment) -> dict[str, Any]:
    return {"model_id": cur.model_id, "version": cur.version, "path": cur.path,
            "builtin": False, "created": None, "labels": None, "accuracy": None,
            "balanced_accuracy": None, "per_class": {}, "deployed": True,
            "deployed_at": iso(cur.at_ns),
            "problem": "deployed, but not in the registry"}


def _last_deployed_ns(history: DeployHistory, entry: RegisteredModel) -> int | None:
    times = [d.at_ns for d in history.history(entry.model_id)
             if d.version == entry.version and not d.baseline]
    return max(times) if times else None


def iso(at_ns: int | None) -> str | None:
    """A time in ns since the epoch as ISO 8601 UTC; None for none (or 0)."""
    return None if not at_ns else datetime.fromtimestamp(at_ns / 1e9, UTC).isoformat()
