"""``tidzam_ctl dataset`` and ``learning.datasets.operations`` on real recordings (Debian packages).

The end-to-end paths run the command line as a user would (a subprocess); the
checks read the ``.npz`` arrays themselves, so a wrong summary cannot hide a
wrong dataset. Datasets built from extracted samples and from the corpus
packages: ``test_dataset_tool_samples``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from audio.decode import decode_file
from inference.features import FeatureParams
from learning.datasets.add import add_audio
from learning.datasets.errors import ClassNameError
from learning.datasets.format import TEST, TRAIN, CompiledDataset
from learning.datasets.operations import (
    add_class,
    balance,
    create,
    dataset_path,
    merge,
    mixed_groups,
    randomize,
    split_in_place,
)
from learning.datasets.samples import AudioItem
from tests.real_audio import MEGAGLEST, real_file

REPO = Path(__file__).resolve().parents[1]
TILES = "usr/share/games/megaglest/tilesets/"
BIRDS = {"hawk.ogg": "desert2/sounds/hawk.ogg", "owl.ogg": "autumn/sounds/owl.ogg",
         "rooster.ogg": "autumn/sounds/rooster.ogg"}
ROBIN = {"chicken.wav": "birch_forest/sounds/chicken.wav"}
RAIN = {"autumn.ogg": "autumn/sounds/rain.ogg", "birch.ogg": "birch_forest/sounds/rain.ogg",
        "dark.ogg": "dark_forest/sounds/rain.ogg", "desert.wav": "desert2/sounds/rain.wav"}
DAY = "spring/sounds/day.ogg"
WIND = "winter/sounds/wind.ogg"


def real(path: str) -> Path:
    return real_file(MEGAGLEST, TILES + path)


def ctl(*args: object) -> subprocess.CompletedProcess[str]:
    """``tidzam_ctl dataset ARGS`` in a subprocess (wide terminal: no wrapped lines)."""
    env = {**os.environ, "COLUMNS": "400"}
    return subprocess.run([sys.executable, "-m", "tidzam_ctl", "dataset", *map(str, args)],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=300)


def expect_error(proc: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    """Exit ``code``, ``text`` in a one-line message on stderr, no traceback."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and text in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def raw(path: Path) -> dict[str, np.ndarray]:
    """Every array of a dataset file, read without the library."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def row_groups(arrays: dict[str, np.ndarray]) -> np.ndarray:
    groups: np.ndarray = arrays["file_group"][arrays["file_index"]]
    return groups


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """birds/ (3 files), birds/american_robin/ (1), rain/ (4), plus a text file in birds/
    and a recording at the top (no class)."""
    root = tmp_path_factory.mktemp("audio") / "recordings"
    for sub, files in (("birds", BIRDS), ("birds/american_robin", ROBIN), ("rain", RAIN)):
        (root / sub).mkdir(parents=True)
        for name, src in files.items():
            shutil.copy(real(src), root / sub / name)
    (root / "birds" / "notes.txt").write_text("heard near the pond\n")
    shutil.copy(real(WIND), root / "top.ogg")
    return root


@pytest.fixture(scope="module")
def built(folder: Path, tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """``create`` then ``add-folder`` through the command line."""
    path = tmp_path_factory.mktemp("built") / "birds.npz"
    created = ctl("create", path.with_suffix(""))
    assert created.returncode == 0, created.stderr
    return path, ctl("add-folder", path, folder)


@pytest.fixture
def copy(built: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path) -> Path:
    """A private copy of the built dataset."""
    path = tmp_path / "d.npz"
    shutil.copy(built[0], path)
    return path


def _library_dataset(files: dict[str, tuple[str, str]], classes: tuple[str, ...] = ()
                     ) -> CompiledDataset:
    """{name: (class, tileset path)} windowed by ``add_audio``; ``classes`` made first."""
    ds = create()
    for name in classes:
        ds = add_class(ds, name)
    items = [AudioItem(real(src), label) for label, src in files.values()]
    ds, report = add_audio(ds, items)
    assert report.files == len(files) and not report.skipped
    return ds


# ---------------------------------------------------------------- add-folder, info


def test_add_folder_labels_by_sub_folder_and_keeps_provenance(
        built: tuple[Path, subprocess.CompletedProcess[str]], folder: Path) -> None:
    path, proc = built
    assert proc.returncode == 3, proc.stderr  # done, but two files skipped
    assert "+8 file(s)" in proc.stdout and "2 skipped" in proc.stdout
    assert "notes.txt: not audio" in proc.stderr and "top.ogg: at the top" in proc.stderr
    assert "Traceback" not in proc.stderr
    z = raw(path)
    assert int(z["version"]) == 2
    assert sorted(z["label_names"]) == ["birds", "birds-american_robin", "rain"]
    expected = {**{f"birds/{n}": "birds" for n in BIRDS},
                **{f"birds/american_robin/{n}": "birds-american_robin" for n in ROBIN},
                **{f"rain/{n}": "rain" for n in RAIN}}
    paths = [Path(p).relative_to(folder.resolve()).as_posix() for p in z["file_path"]]
    assert dict(zip(paths, z["file_label"], strict=True)) == expected
    for k, rel in enumerate(paths):
        assert z["files"][k] == sha256(folder / rel)
        assert z["file_group"][k] == z["files"][k]  # a plain file is its own recording
    names = z["label_names"]
    np.testing.assert_array_equal(names[z["labels"]], z["file_label"][z["file_index"]])
    assert (z["split"] == TRAIN).all() and (z["level_db"] >= -50.0).all()
    assert z["features"].shape[1:] == (45, 64) and z["features"].dtype == np.float32
    durations = {k: decode_file(folder / rel)[0].shape[1] / 48_000 for k, rel in enumerate(paths)}
    ends = z["offset_s"] + 0.5
    assert all(ends[z["file_index"] == k].max() <= d + 0.5 for k, d in durations.items())


def test_info_and_file_count_match_the_arrays(
        built: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    path, _ = built
    proc = ctl("info", path, "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    z = raw(path)
    assert data["windows"] == z["labels"].size and data["files"] == z["files"].size
    assert data["size_bytes"] == path.stat().st_size and data["feature_shape"] == [45, 64]
    assert data["feature_params"] == json.loads(str(z["feature_params"]))
    for i, c in enumerate(data["classes"]):
        mine = z["labels"] == i
        assert c["name"] == z["label_names"][i]
        assert c["train"] == np.count_nonzero(mine & (z["split"] == TRAIN))
        assert c["test"] == np.count_nonzero(mine & (z["split"] == TEST))
        assert c["files"] == np.unique(z["file_index"][mine]).size
    assert data["history"][0].split(" ", 1)[1] == "create"
    count = ctl("file-count", path)
    assert count.returncode == 0 and count.stdout.strip() == str(z["files"].size)


# ---------------------------------------------------------------- split


def test_split_never_puts_a_recording_on_both_sides(copy: Path) -> None:
    before = raw(copy)
    proc = ctl("split", copy, "--split", "0.3", "--split-name", "held_out", "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    assert "birds-american_robin" in proc.stderr  # a single recording: not split
    kept, test = raw(copy), raw(copy.with_name("held_out.npz"))
    assert (kept["split"] == TRAIN).all() and (test["split"] == TEST).all()
    assert set(row_groups(kept)).isdisjoint(row_groups(test))
    assert set(kept["files"]).isdisjoint(test["files"])
    assert kept["labels"].size + test["labels"].size == before["labels"].size
    names = list(before["label_names"])
    for label in ("birds", "rain"):  # several recordings: some held out, some kept
        i = names.index(label)
        n_test = np.count_nonzero(test["labels"] == i)
        assert 0 < n_test < np.count_nonzero(before["labels"] == i)
    robin = names.index("birds-american_robin")
    assert not (test["labels"] == robin).any()
    assert dict(zip(kept["label_names"], kept["class_split"], strict=True)) == {
        "birds": "group", "birds-american_robin": "none", "rain": "group"}


def test_split_in_place_and_merge_keep_groups_on_one_side(tmp_path: Path) -> None:
    ds = _library_dataset({n: ("rain", s) for n, s in RAIN.items()})
    marked, single = split_in_place(ds, 0.3, seed=1)
    assert single == [] and marked.count(TEST) and marked.count(TRAIN)
    groups = marked.row_groups()
    assert set(groups[marked.split == TRAIN]).isdisjoint(groups[marked.split == TEST])
    assert mixed_groups(marked) == set()
    # the same recording groups on the other side in another dataset: merged, one side
    flipped = split_in_place(ds, 0.3, seed=1)[0]
    flipped.split = (1 - flipped.split).astype(np.int8)
    flipped = _with_new_files(flipped)
    merged, report = merge(marked, flipped)
    assert report.moved_to_train and mixed_groups(merged) == set()
    assert merged.count(TEST) == 0 and len(merged.files) == 2 * len(ds.files)


def _with_new_files(ds: CompiledDataset) -> CompiledDataset:
    """The same windows and groups under other file hashes (other takes of the recordings)."""
    return replace(ds, files=tuple(hashlib.sha256(f.encode()).hexdigest() for f in ds.files))


# ---------------------------------------------------------------- balance, randomize


def test_balance_equalises_the_train_side_only_and_is_seeded(copy: Path) -> None:
    ds = split_in_place(CompiledDataset.load(copy), 0.3, seed=0)[0]
    out, report = balance(ds, seed=5)
    counts = np.bincount(out.windows.labels[out.split == TRAIN], minlength=3)
    assert counts.size == 3 and (counts == counts.max()).all() and report.target == counts.max()
    n = ds.split.size
    np.testing.assert_array_equal(out.windows.features[:n], ds.windows.features)
    assert out.count(TEST) == ds.count(TEST)
    originals = {(f, c, o, g) for f, c, o, g, s in zip(
        ds.file_index, ds.windows.channel, ds.windows.offset_s, ds.windows.gain_db, ds.split,
        strict=True) if s == TRAIN}
    copies = zip(out.file_index[n:], out.windows.channel[n:], out.windows.offset_s[n:],
                 out.windows.gain_db[n:], strict=True)
    assert all(key in originals for key in copies)  # copies of train windows, same file
    assert (out.split[n:] == TRAIN).all()
    again, _ = balance(ds, seed=5)
    np.testing.assert_array_equal(again.file_index, out.file_index)
    other, _ = balance(ds, seed=6)
    assert not np.array_equal(other.windows.offset_s, out.windows.offset_s)


def test_randomize_moves_windows_with_their_provenance(copy: Path) -> None:
    ds = CompiledDataset.load(copy)
    out = randomize(ds, seed=2)
    assert not np.array_equal(out.file_index, ds.file_index)

    def order(d: CompiledDataset) -> np.ndarray:
        return np.lexsort((d.windows.offset_s, d.windows.channel, d.file_index))

    a, b = order(ds), order(out)
    np.testing.assert_array_equal(ds.windows.features[a], out.windows.features[b])
    np.testing.assert_array_equal(ds.windows.labels[a], out.windows.labels[b])
    np.testing.assert_array_equal(randomize(ds, seed=2).file_index, out.file_index)


# ---------------------------------------------------------------- merge


def test_merge_remaps_labels_by_name_and_skips_duplicates(tmp_path: Path) -> None:
    a = _library_dataset({"hawk": ("birds", BIRDS["hawk.ogg"]),
                          "autumn": ("rain", RAIN["autumn.ogg"])})
    b = _library_dataset({"dark": ("rain", RAIN["dark.ogg"]),
                          "owl": ("birds", BIRDS["owl.ogg"]),
                          "autumn": ("rain", RAIN["autumn.ogg"])}, classes=("wind",))
    assert b.label_names == ("wind", "rain", "birds")
    a.save(tmp_path / "a.npz")
    b.save(tmp_path / "b.npz")
    proc = ctl("merge", tmp_path / "a", tmp_path / "b")
    assert proc.returncode == 0, proc.stderr
    assert "1 file(s) of" in proc.stderr  # autumn rain is in both
    z = raw(tmp_path / "a.npz")
    assert list(z["label_names"]) == ["birds", "rain", "wind"]
    np.testing.assert_array_equal(z["label_names"][z["labels"]],
                                  z["file_label"][z["file_index"]])
    assert z["files"].size == 4 and len(set(z["files"])) == 4
    rain = int(np.count_nonzero(a.windows.labels == a.label_names.index("rain")))
    rain += int(np.count_nonzero(b.windows.labels == b.label_names.index("rain"))) - int(
        np.count_nonzero(b.file_index == b.files.index(a.files[1])))
    assert np.count_nonzero(z["labels"] == 1) == rain

    into, report = merge(a, b, classe="others")
    assert into.label_names == ("birds", "rain", "others") and report.duplicates
    theirs = into.file_index >= len(a.files)
    assert (into.windows.labels[theirs] == 2).all()
    assert {p.label for p in into.provenance[len(a.files):]} == {"others"}


def test_merge_refuses_other_feature_parameters(copy: Path, tmp_path: Path) -> None:
    params = tmp_path / "params.json"
    params.write_text(json.dumps({**FeatureParams().to_dict(), "n_mels": 40}))
    other = tmp_path / "narrow"
    assert ctl("create", other, "--feature-params", params).returncode == 0
    assert raw(other.with_suffix(".npz"))["features"].shape[1:] == (45, 40)
    before = copy.read_bytes()
    expect_error(ctl("merge", copy, other), 1, "different feature parameters (n_mels 64 vs 40)")
    assert copy.read_bytes() == before


# ---------------------------------------------------------------- the original flags


def test_original_flags_run_in_order_and_write_once(folder: Path, tmp_path: Path) -> None:
    name = tmp_path / "flags"
    proc = ctl("--dataset", name, "--audio-folder", folder, "--split", "0.4", "--split-name",
               "flags_test", "--balance", "--randomize", "--info", "--json")
    assert proc.returncode == 3, proc.stderr
    data = json.loads(proc.stdout)  # the summary lines went to stderr
    z, t = raw(name.with_suffix(".npz")), raw(tmp_path / "flags_test.npz")
    assert data["windows"] == z["labels"].size and data["test"] == 0
    trains = [c["train"] for c in data["classes"]]
    assert len(set(trains)) == 1 and trains[0] > 0
    assert set(row_groups(z)).isdisjoint(row_groups(t))
    assert [h.split(" ", 1)[1].split(" ")[0] for h in data["history"]] == [
        "create", "add-folder", "split", "balance", "randomize"]
    renamed = ctl("--dataset", name, "--rename", "other", "--file-count")
    assert renamed.returncode == 0, renamed.stderr
    assert not name.with_suffix(".npz").exists() and (tmp_path / "other.npz").is_file()
    assert renamed.stdout.strip().splitlines()[-1] == str(z["files"].size)


# ---------------------------------------------------------------- errors and the format


def test_bad_inputs_give_clear_errors(built: tuple[Path, subprocess.CompletedProcess[str]],
                                      tmp_path: Path) -> None:
    path, _ = built
    (tmp_path / "empty").mkdir()
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("not audio")
    one = tmp_path / "one"
    assert ctl("create", one).returncode == 0
    assert ctl("add-class", one, "rain").returncode == 0
    for args, code, text in (
            (("info", tmp_path / "missing"), 2, "no dataset at"),
            (("--dataset", tmp_path / "missing", "--info"), 2, "no dataset at"),
            (("add-folder", one, tmp_path / "empty"), 2, "holds no file"),
            (("add-folder", one, tmp_path / "nowhere"), 2, "no folder"),
            (("add-class", one, "two words"), 2, "not a usable class name"),
            (("add-class", one, "rain"), 2, "already has a class 'rain'"),
            (("create", one), 2, "already exists"),
            (("split", path, "--split", "0.3", "--split-name", one), 2, "already exists"),
            (("examples", "--out", tmp_path / "e", "--classes", "birds,dragons"), 2,
             "unknown class dragons"),
            (("--balance", "info", path), 2, "not both"),
    ):
        expect_error(ctl(*args), code, text)
    proc = ctl("add-folder", one, tmp_path / "text", "--classe", "rain")
    assert proc.returncode == 1 and "nothing added" in proc.stderr and "a.txt" in proc.stderr
    proc = ctl("split", path, "--split", "1.5")
    assert proc.returncode == 2 and "not between 0 and 1" in proc.stderr


def test_single_recording_classes_cannot_be_split(tmp_path: Path) -> None:
    ds = _library_dataset({"hawk": ("birds", BIRDS["hawk.ogg"])})
    ds.save(tmp_path / "solo.npz")
    expect_error(ctl("split", tmp_path / "solo", "--split", "0.5", "--split-name", "t"), 1,
                 "nothing to extract")
    assert not (tmp_path / "t.npz").exists()


def test_version_1_files_load_and_upgrade(copy: Path, tmp_path: Path) -> None:
    z = raw(copy)
    old = tmp_path / "v1.npz"
    v1: dict[str, Any] = {k: z[k] for k in (
        "features", "labels", "split", "file_index", "channel", "offset_s", "level_db",
        "gain_db", "label_names", "files", "class_split", "feature_params")}
    np.savez(old, **v1)
    ds = CompiledDataset.load(old)
    assert [p.group for p in ds.provenance] == list(z["files"])
    assert [p.label for p in ds.provenance] == list(z["file_label"])
    proc = ctl("metadata", old)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["files"] == z["files"].size
    up = raw(old)
    assert int(up["version"]) == 2 and list(up["file_group"]) == list(z["files"])
    assert json.loads(str(up["metadata"]))["windows"] == z["labels"].size


def test_a_failed_write_leaves_the_old_dataset(copy: Path, monkeypatch: pytest.MonkeyPatch
                                               ) -> None:
    before = copy.read_bytes()
    ds = CompiledDataset.load(copy)

    def crash(fh: object, **arrays: object) -> None:
        fh.write(b"PK\x03\x04 half a zip")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        ds.save(copy)
    assert copy.read_bytes() == before
    assert sorted(p.name for p in copy.parent.iterdir()) == ["d.npz"]


def test_dataset_names() -> None:
    assert dataset_path("birds") == Path("birds.npz")
    assert dataset_path("data/birds.npz") == Path("data/birds.npz")
    assert dataset_path("test", beside=Path("data/birds.npz")) == Path("data/test.npz")
    assert dataset_path("other/test", beside=Path("data/birds.npz")) == Path("other/test.npz")
    with pytest.raises(ClassNameError):
        add_class(create(), "birds/robin")
