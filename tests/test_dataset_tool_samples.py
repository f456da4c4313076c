"""``tidzam_ctl dataset from-samples`` and ``examples`` on real recordings: datasets
built from extracted samples (named as the original extractor named them) and from
the corpus packages, checked in the ``.npz`` arrays themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from audio.decode import decode_file
from learning.datasets.add import add_audio
from learning.datasets.compile import rms_db
from learning.datasets.format import TEST, CompiledDataset
from learning.datasets.operations import create, mixed_groups, split_off
from learning.datasets.samples import parse_sample_name, sample_items
from tests.audio_files import write_pcm
from tests.real_audio import CACHE
from tests.test_dataset_tool import DAY, RAIN, ctl, raw, real

# ---------------------------------------------------------------- extracted samples


def _loud_pieces(path: Path, n: int) -> Iterator[np.ndarray]:
    """The ``n`` loudest 0.5 s pieces of a recording, float (channels=1, 24000) at 48 kHz."""
    audio = decode_file(path)[0][:1]
    pieces = audio[0, : audio.shape[1] // 24_000 * 24_000].reshape(-1, 24_000)
    for i in np.argsort(rms_db(pieces))[::-1][:n]:
        yield pieces[i][None, :]


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Samples named as the original extractor named them, some filed by a person."""
    root = tmp_path_factory.mktemp("samples") / "extracted"
    (root / "birds").mkdir(parents=True)
    (root / "unchecked").mkdir()
    day = _loud_pieces(real(DAY), 4)
    rain = _loud_pieces(real(RAIN["birch.ogg"]), 3)
    names = {
        "['birds-american_robin'](impoundment-3)_2017-06-01T12:34:56.500000.wav": day,
        "['birds-american_robin'](impoundment-3)_2017-06-01T12:50:02.wav": day,
        "+['rain'](impoundment-3)_2017-06-01-13-05-00.123.wav": rain,
        "['rain'](roof-mic-2)_2017-06-01T12:10:00Z.wav": rain,
        "birds/['rain'](impoundment-4)_2017-06-01T09:00:00.wav": day,
        "unchecked/+['birds'](impoundment-1)_2017-06-01T08:00:00.wav": day,
        "recording.wav": rain,
    }
    for name, source in names.items():
        write_pcm(root / name, next(source))
    return root


def test_sample_names_of_the_original_extractor() -> None:
    s = parse_sample_name("+['birds-american_robin'](mic-a-12)_2017-06-01-12-34-56.123.wav")
    assert s is not None and s.labels == ("birds-american_robin",)
    assert (s.source, s.channel, s.group()) == ("mic-a", 12, "mic-a-12@2017-06-01T12")
    assert s.time is not None and s.time.microsecond == 123_000
    utc = parse_sample_name("['rain'](roof-2)_2017-06-01T12:10:00+02:00.wav")
    assert utc is not None and utc.group() == "roof-2@2017-06-01T10Z"
    assert parse_sample_name("dawn chorus.wav") is None
    several = parse_sample_name("['birds', 'rain'](m-1)_2017-06-01T12:10:00.wav")
    assert several is not None and several.labels == ("birds", "rain")


def test_from_samples_parses_names_folders_and_groups(samples: Path, tmp_path: Path) -> None:
    out = tmp_path / "loop"
    proc = ctl("from-samples", samples, "--out", out, "--licence", "CC-BY-4.0")
    assert proc.returncode == 3, proc.stderr
    assert "recording.wav: no class" in proc.stderr and "unchecked sample" in proc.stderr
    z = raw(out.with_suffix(".npz"))
    rows = {Path(p).name: k for k, p in enumerate(z["file_path"])}
    assert len(rows) == 5

    def file(name: str) -> tuple[str, str, int, str, str]:
        k = rows[name]
        return (str(z["file_label"][k]), str(z["file_source"][k]), int(z["file_channel"][k]),
                str(z["file_time"][k]), str(z["file_group"][k]))

    assert file("['birds-american_robin'](impoundment-3)_2017-06-01T12:34:56.500000.wav") == (
        "birds-american_robin", "impoundment", 3, "2017-06-01T12:34:56.500000",
        "impoundment-3@2017-06-01T12")
    assert file("+['rain'](impoundment-3)_2017-06-01-13-05-00.123.wav")[0::4] == (
        "rain", "impoundment-3@2017-06-01T13")
    assert file("['rain'](roof-mic-2)_2017-06-01T12:10:00Z.wav")[1:3] == ("roof-mic", 2)
    assert file("['rain'](impoundment-4)_2017-06-01T09:00:00.wav")[0] == "birds"  # filed
    assert set(z["file_licence"]) == {"CC-BY-4.0"}
    np.testing.assert_array_equal(z["label_names"][z["labels"]],
                                  z["file_label"][z["file_index"]])
    again = ctl("from-samples", samples, "--out", out, "--include-unchecked")
    assert again.returncode == 3 and "5 file(s) already in the dataset" in again.stderr
    z = raw(out.with_suffix(".npz"))
    assert (z["file_label"][-1], z["file_group"][-1]) == ("birds", "impoundment-1@2017-06-01T08")


def test_split_keeps_one_microphone_hour_on_one_side(samples: Path) -> None:
    items, _ = sample_items(samples)
    ds, _ = add_audio(create(), items)
    for seed in range(6):
        result = split_off(ds, 0.5, seed=seed)
        kept = {p.group for p in result.kept.provenance}
        held = {p.group for p in result.extracted.provenance}
        assert "impoundment-3@2017-06-01T12" in kept | held and kept.isdisjoint(held)
        robin = [p for p in (*result.kept.provenance, *result.extracted.provenance)
                 if p.label == "birds-american_robin"]
        assert len(robin) == 2 and len({p.group for p in robin}) == 1


# ---------------------------------------------------------------- the corpus


def test_examples_builds_the_corpus_with_package_provenance(tmp_path: Path) -> None:
    out = tmp_path / "examples"
    proc = ctl("examples", "--out", out, "--cache", CACHE, "--packages", "openttd-opensfx",
               "--classes", "birds,vehicle")
    assert proc.returncode == 0, proc.stderr
    ds = CompiledDataset.load(out.with_suffix(".npz"))
    assert ds.label_names == ("birds", "vehicle", "quiet")
    assert {p.package for p in ds.provenance} == {"openttd-opensfx"}
    assert {p.licence for p in ds.provenance} == {"CC-BY-SA-3.0"}
    assert all(p.path.startswith("usr/share/games/openttd/") for p in ds.provenance)
    assert any(p.group.startswith("opensfx:") for p in ds.provenance)
    assert ds.count(TEST) > 0 and mixed_groups(ds) == set()
