"""inference.modelfolder: the committed selector loads; broken folders are refused clearly."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from inference.features import IncompatibleFeatures
from inference.modelfolder import ModelFolder, ModelFolderError

SELECTOR = Path(__file__).resolve().parents[1] / "models" / "selector"


def test_committed_selector_is_valid() -> None:
    folder = ModelFolder.load(SELECTOR)
    meta = folder.meta
    assert meta.model_id == "selector" and meta.version.count(".") == 2
    assert folder.labels == ("birds", "insects", "frog", "rain", "thunder", "wind", "water",
                             "vehicle", "speech", "quiet")
    assert meta.input.shape == [None, 45, 64]
    assert folder.model_path.stat().st_size < 2_000_000
    assert meta.metrics is not None and meta.training_data is not None
    assert set(meta.metrics.held_out.per_class) == set(folder.labels)
    assert meta.training_data.n_windows_test > 0


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(SELECTOR, target)
    return target


def _edit(folder: Path, change: Callable[[dict[str, Any]], None]) -> None:
    meta = json.loads((folder / "model.json").read_text())
    change(meta)
    (folder / "model.json").write_text(json.dumps(meta))


def test_missing_tflite(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    (folder / "model.tflite").unlink()
    with pytest.raises(ModelFolderError, match=r"no model\.tflite"):
        ModelFolder.load(folder)


def test_missing_folder_and_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(ModelFolderError, match="no such directory"):
        ModelFolder.load(tmp_path / "nowhere")
    folder = _copy(tmp_path)
    (folder / "corpus.json").unlink()
    with pytest.raises(ModelFolderError, match=r"corpus\.json"):
        ModelFolder.load(folder)


def test_bad_json(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    (folder / "model.json").write_text('{"model_id": "selector",')
    with pytest.raises(ModelFolderError, match="not valid JSON"):
        ModelFolder.load(folder)


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: m.update(version="1.0"), "semantic version"),
    (lambda m: m.update(labels=["birds", "birds"]), "unique"),
    (lambda m: m.pop("decision"), "decision"),
    (lambda m: m["decision"].update(threshold=1.5), "threshold"),
    (lambda m: m["input"].update(shape=[None, 45, 32]), "input shape"),
    (lambda m: m["metrics"].update(confusion=[[1]]), "confusion"),
    (lambda m: m.update(model_id="sel ector"), "model_id"),
])
def test_invalid_metadata(tmp_path: Path, change: Callable[[dict[str, Any]], None],
                          message: str) -> None:
    folder = _copy(tmp_path)
    _edit(folder, change)
    with pytest.raises(ModelFolderError, match=message):
        ModelFolder.load(folder)


@pytest.mark.parametrize("change", [
    lambda m: m["features"].update(kind="logmel-v9"),
    lambda m: m["features"].update(pcen=True),
    lambda m: m["features"].update(fmax=30_000.0),
])
def test_incompatible_features_are_surfaced(tmp_path: Path,
                                            change: Callable[[dict[str, Any]], None]) -> None:
    folder = _copy(tmp_path)
    _edit(folder, change)
    with pytest.raises(IncompatibleFeatures, match=str(folder)):
        ModelFolder.load(folder)
