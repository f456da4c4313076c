"""The model registry: every model version a classifier may be switched to.

On disk (no database, no NATS here)::

    $TIDZAM_HOME/models/<model_id>/<version>/   model folders added with ``add``
    <repo>/models/<model_id>/                   built-in models (their version is in
                                                their model.json)

``add`` copies a validated folder's files (``model.tflite``, ``model.json`` and
the corpus manifest it names) into the registry, atomically; an id@version that
is already there with other content is refused: a retrained model needs a new
version. Versions are ordered by semantic version (``1.10.0`` > ``1.9.0``, a
pre-release before its release).

Which version is deployed is not stored here: it is the ``ModelDeployed``
history of the CONTROL stream, folded by ``DeployHistory`` (pure: the caller
reads the events). A rollback re-deploys the version deployed before the current
one, skipping re-deploys of the current version; a second rollback therefore
returns to where the first started (as ``kubectl rollout undo``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bus_schemas import ModelDeployed
from bus_schemas.errors import TidzamError
from inference.features import IncompatibleFeatures
from inference.modelfolder import META_FILE, ModelFolder, ModelFolderError
from inference.semver import semver_key

log = logging.getLogger(__name__)

BUILTIN_ROOT = Path(__file__).resolve().parents[1] / "models"
# the selector a classifier runs when nothing was deployed (TIDZAM_MODEL_DIR): the
# YAMNet-based one; ``models/selector`` is the first, log-mel selector (1.1.0)
DEFAULT_SELECTOR = BUILTIN_ROOT / "selector-yamnet"

class RegistryError(TidzamError):
    """A registry request that cannot be honoured: unknown model, duplicate version,
    nothing to roll back to."""


# ------------------------------------------------------------------ versions


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME@VERSION`` → (name, version or None)."""
    name, sep, version = spec.partition("@")
    if not name or (sep and not version):
        raise RegistryError(f"{spec!r}: give a model as NAME or NAME@VERSION")
    return name, version or None


# ------------------------------------------------------------------- entries


@dataclass(frozen=True)
class RegisteredModel:
    """One id@version of the registry; ``folder`` is None when it does not validate."""

    model_id: str
    version: str
    path: Path
    builtin: bool
    folder: ModelFolder | None
    problem: str | None = None

    @property
    def spec(self) -> str:
        return f"{self.model_id}@{self.version}"


def model_files(folder: ModelFolder) -> list[str]:
    """The files that make the model: what ``add`` copies and compares."""
    names = [folder.model_path.name, META_FILE]
    if folder.meta.training_data is not None:
        manifest = folder.meta.training_data.manifest
        parts = Path(manifest).parts
        if Path(manifest).is_absolute() or ".." in parts or len(parts) != 1:
            raise ModelFolderError(f"{folder.path / META_FILE}: the manifest {manifest!r} must "
                                   "be a file name inside the model folder")
        names.append(manifest)
    return names


def content_digest(folder: ModelFolder) -> str:
    """SHA-256 over the model's files (names and bytes)."""
    h = hashlib.sha256()
    for name in sorted(model_files(folder)):
        h.update(name.encode() + b"\0")
        h.update((folder.path / name).read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def check_runs(folder: ModelFolder, num_threads: int = 1) -> None:
    """Load the model (LiteRT) and score one silent window: the folder is usable by
    a classifier, not only well described. Raises ModelFolderError."""
    from inference.loading import load_model  # LiteRT only when a model is checked

    weights = folder.model_path
    try:
        model = load_model(folder, num_threads=num_threads)
        scores = model.predict(np.zeros((1, *folder.params.shape), dtype=np.float32))
    except (ValueError, RuntimeError, OSError, TidzamError) as exc:
        raise ModelFolderError(f"{weights} does not run: {exc}") from exc
    if scores.shape != (1, len(folder.labels)):
        raise ModelFolderError(f"{weights} gives {scores.shape[1]} scores "
                               f"per window for {len(folder.labels)} labels")
    if not np.all(np.isfinite(scores)):
        raise ModelFolderError(f"{weights} gives non-finite scores")


def validate(path: Path) -> ModelFolder:
    """A folder a classifier can switch to: ``ModelFolder.load`` plus one inference.
    Raises ModelFolderError or IncompatibleFeatures."""
    folder = ModelFolder.load(path)
    model_files(folder)  # the manifest's name is checked too
    check_runs(folder)
    return folder


class ModelRegistry:
    def __init__(self, root: Path | None, builtin_root: Path | None = BUILTIN_ROOT) -> None:
        """``root`` None: the built-in models only (no TIDZAM_HOME), nothing can be added."""
        self.root = root
        self.builtin_root = builtin_root

    # ----------------------------------------------------------------- read

    def entries(self, model_id: str | None = None) -> list[RegisteredModel]:
        """Every id@version (added, then built-in unless added too), sorted by id and
        semantic version; invalid folders are listed with their problem."""
        found: dict[tuple[str, str], RegisteredModel] = {}
        for entry in self._added():
            found.setdefault((entry.model_id, entry.version), entry)
        for entry in self._builtin():
            found.setdefault((entry.model_id, entry.version), entry)
        chosen = [e for e in found.values() if model_id is None or e.model_id == model_id]
        return sorted(chosen, key=lambda e: (e.model_id, _sortable(e.version)))

    def resolve(self, spec: str) -> RegisteredModel:
        """``NAME`` (its newest version) or ``NAME@VERSION``; raises RegistryError."""
        name, version = parse_spec(spec)
        versions = self.entries(name)
        if not versions:
            known = sorted({e.model_id for e in self.entries()})
            where = self.root or "built-in models only"
            raise RegistryError(f"no model {name!r} in the registry ({where}); known: "
                                f"{', '.join(known) or 'none'}; add one with `model add`")
        if version is None:
            return versions[-1]
        for entry in versions:
            if entry.version == version:
                return entry
        raise RegistryError(f"{name} has no version {version}; versions: "
                            f"{', '.join(e.version for e in versions)}")

    def _added(self) -> Iterable[RegisteredModel]:
        if self.root is None or not self.root.is_dir():
            return
        for id_dir in sorted(p for p in self.root.iterdir() if _visible_dir(p)):
            for version_dir in sorted(p for p in id_dir.iterdir() if _visible_dir(p)):
                yield _entry(version_dir, id_dir.name, version_dir.name, builtin=False)

    def _builtin(self) -> Iterable[RegisteredModel]:
        if self.builtin_root is None or not self.builtin_root.is_dir():
            return
        for folder in sorted(p for p in self.builtin_root.iterdir() if _visible_dir(p)):
            if (folder / META_FILE).is_file():
                yield _entry(folder, None, None, builtin=True)

    # ---------------------------------------------------------------- write

    def add(self, path: Path) -> tuple[RegisteredModel, bool]:
        """Copy a validated model folder in: (its entry, True if newly added). The same
        id@version with the same content is not copied twice; with other content it
        is refused (RegistryError). Invalid folders raise ModelFolderError or
        IncompatibleFeatures and copy nothing."""
        if self.root is None:
            raise RegistryError("there is no registry folder to add to: set TIDZAM_HOME")
        folder = validate(path)
        meta = folder.meta
        digest = content_digest(folder)
        for entry in self.entries(meta.model_id):
            if entry.version == meta.version:
                return self._same(entry, digest), False
        target = self.root / meta.model_id / meta.version
        staging = self.root / meta.model_id / f".adding-{meta.version}-{uuid.uuid4().hex}"
        staging.mkdir(parents=True)
        try:
            for name in model_files(folder):
                shutil.copyfile(folder.path / name, staging / name)
            copied = validate(staging)  # what landed is what was checked
            if content_digest(copied) != digest:
                raise RegistryError(f"{path} changed while it was being copied; add it again")
            try:
                os.rename(staging, target)  # atomic: a reader sees all or nothing
            except OSError:
                if not target.is_dir():
                    raise
                # another `add` of this version won the race: same rules as above
                return self._same(_entry(target, meta.model_id, meta.version, False),
                                  digest), False
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("added %s@%s to the registry (%s)", meta.model_id, meta.version, target)
        return _entry(target, meta.model_id, meta.version, builtin=False), True

    @staticmethod
    def _same(entry: RegisteredModel, digest: str) -> RegisteredModel:
        if entry.folder is None:
            raise RegistryError(f"{entry.spec} is in the registry but invalid ({entry.problem}); "
                                f"remove {entry.path} first")
        if content_digest(entry.folder) != digest:
            raise RegistryError(
                f"{entry.spec} is already in the registry ({entry.path}) with other content; "
                "give the new model another version in its model.json")
        return entry


def _visible_dir(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith(".")


def _sortable(version: str) -> tuple[int, tuple[object, ...]]:
    """Valid versions by semver; anything else first, by name (a broken folder)."""
    try:
        return 1, semver_key(version)
    except RegistryError:
        return 0, (version,)


def _entry(path: Path, model_id: str | None, version: str | None,
           builtin: bool) -> RegisteredModel:
    """The entry of a folder; where it lives (``<id>/<version>``) must match its
    model.json, else it is listed as invalid."""
    try:
        folder = ModelFolder.load(path)
    except (ModelFolderError, IncompatibleFeatures) as exc:
        return RegisteredModel(model_id or path.name, version or "?", path, builtin, None,
                               str(exc))
    meta = folder.meta
    if (model_id, version) not in ((None, None), (meta.model_id, meta.version)):
        return RegisteredModel(model_id or meta.model_id, version or meta.version, path,
                               builtin, None, f"{path / META_FILE} says {meta.model_id}@"
                               f"{meta.version}, not {model_id}@{version}")
    return RegisteredModel(meta.model_id, meta.version, path, builtin, folder)


# -------------------------------------------------------------- deployments


@dataclass(frozen=True)
class Deployment:
    """A version that became the deployed one: a ``ModelDeployed`` at CONTROL stream
    sequence ``seq``, or (``seq`` 0) the baseline every classifier starts with when
    nothing was deployed (``TIDZAM_MODEL_DIR``)."""

    model_id: str
    version: str
    path: str
    at_ns: int
    seq: int

    @property
    def spec(self) -> str:
        return f"{self.model_id}@{self.version}"

    @property
    def baseline(self) -> bool:
        return self.seq == 0

    @classmethod
    def of(cls, seq: int, event: ModelDeployed) -> Deployment:
        return cls(event.model_id, event.model_version, event.path, event.at_ns, seq)


class DeployHistory:
    """The deployed version of each model, from the CONTROL history (stream order)."""

    def __init__(self, events: Iterable[tuple[int, ModelDeployed]],
                 baselines: Iterable[Deployment] = ()) -> None:
        self._by_model: dict[str, list[Deployment]] = {}
        for base in baselines:
            self._by_model.setdefault(base.model_id, []).insert(0, base)
        for seq, event in sorted(events, key=lambda e: e[0]):
            self._by_model.setdefault(event.model_id, []).append(Deployment.of(seq, event))

    def models(self) -> list[str]:
        return sorted(self._by_model)

    def history(self, model_id: str) -> Sequence[Deployment]:
        return tuple(self._by_model.get(model_id, ()))

    def current(self, model_id: str) -> Deployment | None:
        steps = self._by_model.get(model_id)
        return steps[-1] if steps else None

    def rollback_target(self, model_id: str) -> Deployment:
        """The version deployed before the current one (re-deploys of the current
        version skipped); RegistryError if there is none."""
        steps = self._by_model.get(model_id, [])
        if not steps:
            raise RegistryError(f"{model_id} was never deployed: nothing to roll back")
        current = steps[-1]
        for step in reversed(steps[:-1]):
            if step.version != current.version:
                return step
        raise RegistryError(f"{model_id} has no version deployed before {current.version}: "
                            "nothing to roll back to")
