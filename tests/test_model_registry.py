"""The model registry: semantic versions, model folders added once and checked,
and the deploy history that gives the current version and the rollback target
(also as read from a real bus).

Classifiers that switch models live, the ``model`` CLI and deploys and rollbacks
on a running stack are in ``test_model_deploys.py``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from bus.history import read_deployments
from bus.publisher import Publisher
from bus_schemas import ModelDeployed, SourceRemoved
from inference.deploying import plan_deploy
from inference.modelfolder import ModelFolder, ModelFolderError
from inference.registry import (
    DEFAULT_SELECTOR,
    DeployHistory,
    Deployment,
    ModelRegistry,
    RegistryError,
)
from inference.semver import VersionError, semver_key

REPO = Path(__file__).resolve().parents[1]
SELECTOR = REPO / "models" / "selector"
SHIPPED_META = json.loads((SELECTOR / "model.json").read_text())
SHIPPED = SHIPPED_META["version"]  # the first selector's version, whatever it is now
DEFAULT = json.loads((DEFAULT_SELECTOR / "model.json").read_text())["version"]  # a stack's
# every built-in version of the selector (the first, the YAMNet-based, the fast one)
BUILTIN = sorted((m["version"] for m in (json.loads(p.read_text())
                                         for p in (REPO / "models").glob("*/model.json"))
                  if m["model_id"] == "selector"), key=semver_key)
_ABOVE = semver_key(BUILTIN[-1])[0] + 1


def later(minor: int) -> str:
    """A version for a test-made selector variant: above the shipped one, never equal."""
    return f"{_ABOVE}.{minor}.0"


def variant(dest: Path, version: str, **features: Any) -> Path:
    """A copy of the built-in selector under another version (and feature parameters)."""
    shutil.copytree(SELECTOR, dest)
    meta = json.loads((dest / "model.json").read_text())
    meta["version"] = version
    if features:
        meta["features"].update(features)
        rate, window = meta["features"]["sample_rate"], meta["features"]["window_s"]
        frames = 1 + (round(window * rate) - meta["features"]["n_fft"]) // meta["features"]["hop"]
        meta["input"]["shape"] = [None, frames, meta["features"]["n_mels"]]
    (dest / "model.json").write_text(json.dumps(meta))
    return dest


def default_variant(dest: Path, version: str) -> Path:
    """A copy of the default (YAMNet-based) selector under another version."""
    shutil.copytree(DEFAULT_SELECTOR, dest)
    meta = json.loads((dest / "model.json").read_text())
    meta["version"] = version
    (dest / "model.json").write_text(json.dumps(meta))
    return dest


# ----------------------------------------------------------------- registry


def test_versions_sort_by_semver() -> None:
    versions = ["1.10.0", "1.2.0", "1.2.0-rc.10", "0.9.9", "1.2.0-rc.2", "1.2.0-alpha",
                "1.2.0-rc.1", "2.0.0+build.5"]
    assert sorted(versions, key=semver_key) == [
        "0.9.9", "1.2.0-alpha", "1.2.0-rc.1", "1.2.0-rc.2", "1.2.0-rc.10", "1.2.0", "1.10.0",
        "2.0.0+build.5"]
    with pytest.raises(VersionError, match="not a semantic version"):
        semver_key("1.0")


def test_add_copies_the_model_and_resolves_the_newest_version(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    for version in (later(10), later(2), later(1)):
        entry, added = registry.add(variant(tmp_path / version, version))
        assert added and entry.path == tmp_path / "models" / "selector" / version
    assert sorted(p.name for p in (tmp_path / "models" / "selector" / later(2)).iterdir()) == [
        "corpus.json", "model.json", "model.tflite"]
    listed = registry.entries()
    assert [(e.version, e.builtin) for e in listed] == [
        *((v, True) for v in BUILTIN), (later(1), False), (later(2), False), (later(10), False)]
    assert all(e.folder is not None and e.problem is None for e in listed)
    assert registry.resolve("selector").version == later(10)  # semver, not string order
    assert registry.resolve(f"selector@{SHIPPED}").path == SELECTOR
    missing = f"{_ABOVE + 1}.0.0"
    with pytest.raises(RegistryError, match=re.escape(
            f"no version {missing}; versions: {', '.join(BUILTIN)}, {later(1)}")):
        registry.resolve(f"selector@{missing}")
    with pytest.raises(RegistryError, match="no model 'birds'"):
        registry.resolve("birds")


def test_a_version_is_added_once_and_never_replaced(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    v11 = variant(tmp_path / "v11", later(1))
    first, added = registry.add(v11)
    again, added_again = registry.add(v11)
    assert added and not added_again and again.path == first.path
    meta = json.loads((v11 / "model.json").read_text())
    meta["decision"]["threshold"] = 0.7  # retrained or retuned, same version: refused
    (v11 / "model.json").write_text(json.dumps(meta))
    with pytest.raises(RegistryError, match=r"already in the registry .* other content"):
        registry.add(v11)
    assert json.loads((first.path / "model.json").read_text())["decision"]["threshold"] == 0.5
    builtin, added = registry.add(SELECTOR)  # the built-in version, unchanged: nothing to do
    assert not added and builtin.builtin
    changed = variant(tmp_path / "v10", SHIPPED)
    (changed / "corpus.json").write_text("{}")
    with pytest.raises(RegistryError,
                       match=re.escape(f"selector@{SHIPPED} is already in the registry")):
        registry.add(changed)


def test_invalid_folders_are_not_added(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    truncated = variant(tmp_path / "t", later(3))
    (truncated / "model.tflite").write_bytes((SELECTOR / "model.tflite").read_bytes()[:4000])
    with pytest.raises(ModelFolderError, match="does not run"):
        registry.add(truncated)
    escaping = variant(tmp_path / "e", later(4))
    meta = json.loads((escaping / "model.json").read_text())
    meta["training_data"]["manifest"] = "../t/corpus.json"
    (escaping / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFolderError, match="inside the model folder"):
        registry.add(escaping)
    with pytest.raises(ModelFolderError, match="no such directory"):
        registry.add(tmp_path / "missing")
    assert [e.version for e in registry.entries()] == BUILTIN
    assert not list((tmp_path / "models").rglob("model.tflite"))  # no half copy left


def test_a_damaged_registry_folder_is_listed_with_its_problem(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models", builtin_root=None)
    entry, _ = registry.add(variant(tmp_path / "v", later(1)))
    (entry.path / "model.json").write_text("{")
    [listed] = registry.entries()
    assert listed.folder is None and listed.problem and "not valid JSON" in listed.problem
    with pytest.raises(RegistryError, match="invalid"):
        registry.add(variant(tmp_path / "v2", later(1)))


def deploy_of(path: Path) -> ModelDeployed:
    """The deploy ``tidzam_ctl model deploy`` publishes for a folder (with its digest)."""
    return plan_deploy(ModelFolder.load(path), DeployHistory([])).event


def _deployed(seq: int, version: str, model_id: str = "selector") -> tuple[int, ModelDeployed]:
    return seq, ModelDeployed(model_id=model_id, model_version=version, sha256="0" * 64,
                              path=f"/m/{version}",
                              labels=("a",), feature_params={}, at_ns=seq)


def test_the_deploy_history_gives_the_current_version_and_the_rollback() -> None:
    base = Deployment("selector", SHIPPED, "/repo/models/selector", 0, 0)
    history = DeployHistory([_deployed(9, later(2)), _deployed(4, later(1)),
                             _deployed(5, "3.0.0", "other")], [base])
    current = history.current("selector")
    assert current is not None and current.version == later(2)  # stream order, not list order
    assert history.rollback_target("selector").version == later(1)
    assert history.models() == ["other", "selector"]
    # a rollback is a deploy: the next rollback returns to where the first started
    toggled = DeployHistory([_deployed(4, later(1)), _deployed(9, later(2)),
                             _deployed(12, later(1))], [base])
    assert toggled.rollback_target("selector").version == later(2)
    # re-deploying the current version does not make it its own rollback target
    again = DeployHistory([_deployed(4, later(1)), _deployed(6, later(1))], [base])
    target = again.rollback_target("selector")
    assert target.version == SHIPPED and target.baseline
    with pytest.raises(RegistryError,
                       match=re.escape(f"no version deployed before {SHIPPED}")):
        DeployHistory([], [base]).rollback_target("selector")
    with pytest.raises(RegistryError, match="never deployed"):
        history.rollback_target("birds")


# ------------------------------------------------------- on a real bus


async def test_the_history_is_read_per_model_in_stream_order(nc: Client) -> None:
    pub = Publisher(nc.jetstream())
    for _, event in (_deployed(1, later(1)), _deployed(2, "9.0.0", "other"),
                       _deployed(3, later(2))):
        await pub.publish_now(event)
    await pub.publish_now(SourceRemoved(source="x", at_ns=1))
    mine, last = await read_deployments(nc.jetstream(), "selector")
    assert [e.model_version for _, e in mine] == [later(1), later(2)] and last == mine[-1][0]
    every, _ = await read_deployments(nc.jetstream())
    assert [e.model_id for _, e in every] == ["selector", "other", "selector"]
