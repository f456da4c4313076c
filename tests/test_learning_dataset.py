"""learning.datasets.compile: energy gate, quiet windows, split by recording, time split."""

from __future__ import annotations

import wave
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from inference.features import FeatureParams
from learning.corpus.manifest import CorpusFile, CorpusManifest, PackageInfo
from learning.corpus.packages import CLASSES
from learning.datasets.compile import DatasetConfig, assign_splits, build_dataset, window_sides
from learning.datasets.format import TEST, TRAIN, CompiledDataset


def _write(path: Path, seconds: float, seed: int, level_db: float = -20.0,
           gap: tuple[float, float] | None = None, channels: int = 1, rate: int = 16_000) -> None:
    """Noise at ``level_db`` RMS; ``gap`` (start, end) seconds of digital silence."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    data = rng.standard_normal((n, channels)) * 10 ** (level_db / 20)
    if gap is not None:
        data[int(gap[0] * rate):int(gap[1] * rate)] = 0.0
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.clip(data, -1, 1) * 32767).astype("<i2").tobytes())


def _entry(name: str, label: str, group: str) -> CorpusFile:
    return CorpusFile(sha256=name.ljust(64, "0"), label=label, group=group, package="test",
                      version="1", path=name, licence="CC0", local=name)


def _manifest(tmp: Path) -> CorpusManifest:
    files = []
    for i in range(4):  # birds: 4 recordings, stereo, one with a silent gap
        _write(tmp / f"b{i}.wav", 4.0, seed=i, channels=2, gap=(1.0, 2.0) if i == 0 else None)
        files.append(_entry(f"b{i}.wav", "birds", f"g-birds-{i}"))
    for i in range(3):  # rain: 3 files, two of them takes of one recording
        _write(tmp / f"r{i}.wav", 3.0, seed=10 + i, level_db=-30.0)
        files.append(_entry(f"r{i}.wav", "rain", "g-rain-a" if i < 2 else "g-rain-b"))
    _write(tmp / "t0.wav", 6.0, seed=20, level_db=-15.0)  # thunder: a single recording
    files.append(_entry("t0.wav", "thunder", "g-thunder"))
    info = PackageInfo(name="test", version="1", licence="CC0", copyright="-", deb_sha256="-")
    return CorpusManifest(created=datetime.now(UTC), classes=list(CLASSES),
                          packages={"test": info}, files=files)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[CompiledDataset, CorpusManifest]:
    tmp = tmp_path_factory.mktemp("dataset")
    return build_dataset(_manifest(tmp), tmp, FeatureParams(), DatasetConfig(test_fraction=0.3),
                         progress=False)


def test_labels_shapes_and_quiet(built: tuple[CompiledDataset, CorpusManifest]) -> None:
    ds, _ = built
    assert ds.label_names == ("birds", "rain", "thunder", "quiet")
    w = ds.windows
    assert w.features.dtype == np.float32 and w.features.shape[1:] == (45, 64)
    quiet = ds.label_names.index("quiet")
    loud = w.labels != quiet
    assert (w.level_db[loud] >= -50.0).all()
    assert (w.level_db[~loud] < -50.0).all()
    assert (w.gain_db[~loud] <= 0).all() and (w.gain_db[~loud] < 0).any()  # attenuated copies
    real_quiet = (~loud) & (w.gain_db == 0)
    assert real_quiet.any()  # the silent gap of b0.wav
    assert set(np.unique(w.channel[ds.file_index == 0])) == {0, 1}


def test_no_recording_group_on_both_sides(built: tuple[CompiledDataset, CorpusManifest]) -> None:
    ds, manifest = built
    for group in {f.group for f in manifest.files}:
        files = [i for i, f in enumerate(manifest.files) if f.group == group]
        sides = set(np.unique(ds.split[np.isin(ds.file_index, files)]).tolist())
        if manifest.files[files[0]].split != "time":
            assert len(sides) == 1, group
    rain = [f for f in manifest.files if f.label == "rain"]
    assert rain[0].split == rain[1].split  # takes of one recording stay together
    for label in ("birds", "rain"):
        assert {f.split for f in manifest.files if f.label == label} == {"train", "test"}
        assert ds.class_split[label] == "group"


def test_single_recording_class_is_split_in_time_with_a_gap(
        built: tuple[CompiledDataset, CorpusManifest]) -> None:
    ds, manifest = built
    assert ds.class_split["thunder"] == "time"
    index = next(i for i, f in enumerate(manifest.files) if f.label == "thunder")
    entry = manifest.files[index]
    cut = entry.time_split_s
    assert entry.split == "time" and cut is not None
    assert cut == pytest.approx(0.7 * 6.0, abs=0.01)
    mine = ds.file_index == index
    train_offsets = ds.windows.offset_s[mine & (ds.split == TRAIN)]
    test_offsets = ds.windows.offset_s[mine & (ds.split == TEST)]
    assert train_offsets.size and test_offsets.size
    assert train_offsets.max() + 0.5 <= cut + 1e-6
    assert test_offsets.min() >= cut + 0.5 - 1e-6
    assert entry.windows_train == train_offsets.size


def test_npz_round_trip(built: tuple[CompiledDataset, CorpusManifest], tmp_path: Path) -> None:
    ds, _ = built
    path = tmp_path / "ds.npz"
    ds.save(path)
    back = CompiledDataset.load(path)
    assert back.label_names == ds.label_names and back.class_split == ds.class_split
    assert back.files == ds.files and back.params == ds.params
    np.testing.assert_array_equal(back.windows.features, ds.windows.features)
    np.testing.assert_array_equal(back.split, ds.split)
    np.testing.assert_array_equal(back.windows.offset_s, ds.windows.offset_s)


def test_assign_splits_keeps_one_group_each_side() -> None:
    entries = [_entry(f"f{i}", "birds", f"g{i}") for i in range(2)]
    sides, methods = assign_splits(entries, [100, 5], DatasetConfig(test_fraction=0.2))
    assert sorted(sides.values()) == ["test", "train"] and methods == {"birds": "group"}


def test_window_sides_time_split() -> None:
    offsets = np.arange(0, 10, 0.5, dtype=np.float32)
    sides = window_sides("time", offsets, 8.0, 0.5)
    assert (sides[offsets + 0.5 <= 8.0] == TRAIN).all()
    assert (sides[offsets >= 8.5] == TEST).all()
    assert (sides[(offsets > 7.5) & (offsets < 8.5)] == -1).all()
