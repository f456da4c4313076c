"""``tidzam_ctl train``: from an audio folder and from datasets, TensorBoard, two workers."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from inference.modelfolder import ModelFolder
from learning.datasets.format import TEST, TRAIN, CompiledDataset
from tests.real_audio import MEGAGLEST, real_file

REPO = Path(__file__).resolve().parents[1]
TILES = "usr/share/games/megaglest/tilesets/"
BIRDS = {"hawk.ogg": "desert2/sounds/hawk.ogg", "owl.ogg": "autumn/sounds/owl.ogg",
         "rooster.ogg": "autumn/sounds/rooster.ogg"}
RAIN = {"autumn.ogg": "autumn/sounds/rain.ogg", "birch.ogg": "birch_forest/sounds/rain.ogg",
        "dark.ogg": "dark_forest/sounds/rain.ogg", "desert.wav": "desert2/sounds/rain.wav"}
QUICK = ("--training-iterations", "40", "--per-class", "128", "--testing-step", "10",
         "--stats-step", "20", "--nb-embeddings", "12", "--no-progress", "--json")


def ctl(*args: object, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "COLUMNS": "400", "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "tidzam_ctl", "train", *map(str, args)],
                            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(proc: subprocess.Popen[str], timeout: float = 400) -> dict[str, object]:
    stdout, stderr = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, stderr[-3000:]
    result: dict[str, object] = json.loads(stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("audio") / "recordings"
    for sub, files in (("birds", BIRDS), ("rain", RAIN)):
        (root / sub).mkdir(parents=True)
        for name, src in files.items():
            shutil.copy(real_file(MEGAGLEST, TILES + src), root / sub / name)
    return root


def _tags(logdir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for run in (logdir / "train", logdir / "test"):
        acc = EventAccumulator(str(run), size_guidance={"tensors": 0, "images": 0})
        acc.Reload()
        for values in acc.Tags().values():
            if isinstance(values, list):
                tags.update(values)
    return tags


def test_train_on_the_fly_from_an_audio_folder(folder: Path, tmp_path: Path) -> None:
    """Held out by recording, a model folder with metrics, and what TensorBoard shows."""
    out = tmp_path / "birds-or-rain"
    result = finish(ctl("--dataset-train", folder, "--out", out, *QUICK))
    model = ModelFolder.load(out)
    assert set(model.labels) >= {"birds", "rain"}
    assert result["strategy"] == "default" and result["replicas"] == 1
    metrics = model.meta.metrics
    assert metrics is not None and metrics.held_out.per_class["rain"].support > 0
    manifest = json.loads((out / "dataset.json").read_text())
    counts = manifest["windows_per_class"]
    assert counts["rain"]["train"] > 0 and counts["rain"]["test"] > 0
    tags = _tags(out / "tensorboard")
    for wanted in ("test/loss", "test/accuracy", "test/precision", "test/recall",
                   "precision/rain", "confusion", "feature_maps", "epoch_loss",
                   "epoch_accuracy", "keras", "model"):  # keras: the model, model: its ops
        assert wanted in tags, f"TensorBoard lacks {wanted}: {sorted(tags)}"
    assert any(t.endswith("histogram") for t in tags), sorted(tags)
    projector = out / "tensorboard" / "projector"
    labels = (projector / "metadata.tsv").read_text().split()
    assert len(labels) == 12 and set(labels) <= set(model.labels)
    assert "embedding" in (projector / "projector_config.pbtxt").read_text()


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def two_datasets(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A dataset of the folder and its held-out part (by recording), via the dataset tool."""
    tmp_path = tmp_path_factory.mktemp("datasets")
    dataset = tmp_path / "d.npz"
    made = subprocess.run([sys.executable, "-m", "tidzam_ctl", "dataset", "create", dataset],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    made = subprocess.run([sys.executable, "-m", "tidzam_ctl", "dataset", "add-folder",
                           dataset, folder], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert made.returncode == 0, made.stderr
    split = subprocess.run([sys.executable, "-m", "tidzam_ctl", "dataset", "split", dataset,
                            "--split", "0.3", "--split-name", "held"], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert split.returncode == 0, split.stderr
    held = tmp_path / "held.npz"
    train_ds, test_ds = CompiledDataset.load(dataset), CompiledDataset.load(held)
    assert train_ds.count(TEST) == 0 and test_ds.count(TRAIN) == 0
    assert not set(train_ds.files) & set(test_ds.files)
    return dataset, held


def test_two_workers_train_one_model_in_sync(two_datasets: tuple[Path, Path],
                                            tmp_path: Path) -> None:
    """The original's --workers/--task-index: two local processes, one all-reduce model."""
    dataset, held = two_datasets
    test_ds = CompiledDataset.load(held)
    workers = ",".join(f"127.0.0.1:{p}" for p in _free_ports(2))
    out = tmp_path / "model"
    procs = [ctl("--dataset-train", dataset, "--dataset-test", held, "--out",
                 out if i == 0 else tmp_path / "never", "--workers", workers,
                 "--task-index", i, *QUICK) for i in range(2)]
    results = [finish(p) for p in procs]
    assert [r["replicas"] for r in results] == [2, 2]
    assert [r["strategy"] for r in results] == ["multi_worker_mirrored"] * 2
    assert [r["chief"] for r in results] == [True, False]
    assert results[1]["folder"] is None and not (tmp_path / "never").exists()
    model = ModelFolder.load(out)
    assert model.meta.training_data is not None
    assert model.meta.training_data.n_windows_test == len(test_ds.windows)
    scores = np.asarray(results[0]["metrics"]["held_out"]["accuracy"])  # type: ignore[index]
    assert 0.0 <= float(scores) <= 1.0


def test_parameter_server_training(two_datasets: tuple[Path, Path], tmp_path: Path) -> None:
    """--ps: worker 0 coordinates, worker 1 computes, the ps holds the variables."""
    dataset, held = two_datasets
    ports = _free_ports(3)
    workers = f"127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}"
    common = ("--dataset-train", dataset, "--dataset-test", held, "--workers", workers,
              "--ps", f"127.0.0.1:{ports[2]}", *QUICK)
    servers = [ctl(*common, "--out", tmp_path / "w1", "--task-index", 1),
               ctl(*common, "--out", tmp_path / "ps", "--job-type", "ps", "--task-index", 0)]
    try:
        result = finish(ctl(*common, "--out", tmp_path / "model", "--task-index", 0))
        assert all(p.poll() is None for p in servers), "a server stopped during training"
    finally:
        for proc in servers:
            proc.kill()
            proc.communicate()
    assert result["strategy"] == "parameter_server" and result["chief"] is True
    model = ModelFolder.load(tmp_path / "model")
    assert model.meta.metrics is not None
    assert not (tmp_path / "w1").exists() and not (tmp_path / "ps").exists()
    tags = _tags(tmp_path / "model" / "tensorboard")
    assert {"test/accuracy", "confusion", "epoch_loss"} <= tags


def test_bad_flags_are_clear(tmp_path: Path) -> None:
    proc = ctl("--dataset-train", tmp_path / "nothing.npz", "--out", tmp_path / "m",
               "--no-progress")
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "no dataset file" in stderr and "Traceback" not in stderr
    proc = ctl("--dataset-train", tmp_path / "x.npz", "--out", tmp_path / "m",
               "--workers", "127.0.0.1:1", "--task-index", "3")
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "--task-index 3" in stderr


def test_cluster_flags_become_tf_config() -> None:
    from learning.training.cluster import Cluster, ClusterError

    two = Cluster.from_flags("a:1,b:2", None, "worker", 1)
    assert two.strategy_name == "multi_worker_mirrored" and not two.is_chief
    assert two.tf_config() == {"cluster": {"worker": ["a:1", "b:2"]},
                               "task": {"type": "worker", "index": 1}}
    ps = Cluster.from_flags("a:1,b:2,c:3", "p:9", "worker", 0)
    assert ps.tf_config() == {"cluster": {"chief": ["a:1"], "worker": ["b:2", "c:3"],
                                          "ps": ["p:9"]}, "task": {"type": "chief", "index": 0}}
    assert Cluster.from_flags("a:1,b:2,c:3", "p:9", "worker", 2).tf_config()["task"] == \
        {"type": "worker", "index": 1}
    assert Cluster.from_flags("a:1,b:2", "p:9", "ps", 0).tf_config()["task"] == \
        {"type": "ps", "index": 0}
    for bad in (("a:1", "p:9", "worker", 0), (None, "p:9", "worker", 0),
                ("a:1,b:2", None, "worker", 2), ("a", None, "worker", 0),
                ("a:1,a:1", None, "worker", 0), ("a:1,b:2", None, "ps", 0)):
        with pytest.raises(ClusterError):
            Cluster.from_flags(*bad)
