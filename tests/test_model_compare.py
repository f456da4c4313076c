"""``model compare``: archived audio through two models, disagreements per class and source.

The archive is real audio (Debian recordings of rain, birds and speech) written as
the archiver writes it (``AudioWriter``, FLAC), for two sources. The expected decisions
come from an independent oracle: whole files decoded, sliced at the sought sample,
windows every hop, the built-in selector's own decision rule.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from audio.archive import parse_archive_name
from audio.decode import decode_all
from audio.encode import AudioWriter
from inference.features import FeatureParams, frame_windows, window_features
from inference.scoring import TfliteModel
from inference.semver import semver_key
from learning.compare.plan import CompareError, Grid, find_sources, plan, source_folders
from learning.compare.report import CompareReport
from learning.compare.score import compare
from learning.corpus.fetch import fetch_package
from tests.audio_files import expected_windows
from tests.real_audio import CACHE, DAY, MEGAGLEST, RAIN, real_file

REPO = Path(__file__).resolve().parents[1]
SELECTOR = REPO / "models" / "selector"
SHIPPED = json.loads((SELECTOR / "model.json").read_text())["version"]  # the shipped selector
_ABOVE = semver_key(SHIPPED)[0] + 1


def later(minor: int) -> str:
    """A version for a test-made selector variant: above the shipped one, never equal."""
    return f"{_ABOVE}.{minor}.0"


PERMUTED = later(1)  # the version of the ``permuted`` variant
F32 = npt.NDArray[np.float32]
RATE = 48_000
T0 = datetime(2025, 6, 1, 10, 0, 0, tzinfo=UTC)
ALL = (T0, T0 + timedelta(minutes=30))  # every file but road's 11:00 one
OVERLAP = 0.25
SWAP = {"rain": "speech", "speech": "rain"}


# ----------------------------------------------------------------- fixtures


def _stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%d-%H-%M-%S")


def _write(folder: Path, source: str, start: datetime, audio: F32) -> Path:
    """An archive file as the archiver writes it: audio float32 (channels, n) at 48 kHz."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{source}-{_stamp(start)}.flac"
    out = AudioWriter(path, audio.shape[0], RATE)
    out.write((np.clip(audio.T, -1, 1) * 32767).astype(np.int16))
    out.close()
    return path


@pytest.fixture(scope="module")
def clips() -> dict[str, F32]:
    """Real recordings at 48 kHz: rain and day (birds) stereo, speech mono (≥ 16 s)."""
    rain, _ = decode_all(real_file(MEGAGLEST, RAIN), RATE)
    day, _ = decode_all(real_file(MEGAGLEST, DAY), RATE)
    voice = fetch_package("asterisk-core-sounds-en-wav", CACHE).root / \
        "usr/share/asterisk/sounds/en_US_f_Allison"
    parts: list[F32] = []
    for wav in sorted(voice.glob("*.wav")):
        parts.append(decode_all(wav, RATE)[0][0])
        if sum(p.size for p in parts) >= 16 * RATE:
            break
    return {"rain": rain, "day": day, "speech": np.concatenate(parts)[None, :]}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, clips: dict[str, F32]) -> Path:
    """TIDZAM_ARCHIVE_DIR with sources ``pond`` (2 channels, 2 files and a broken
    one) and ``road`` (mono, one file in ALL and one an hour later)."""
    root = tmp_path_factory.mktemp("archive")
    rain, day, speech = clips["rain"], clips["day"], clips["speech"][0]
    s = RATE  # one second
    pond, road = root / "pond", root / "road"
    _write(pond, "pond", T0, np.stack([np.concatenate([rain[0, :15 * s], speech[:5 * s]]),
                                       np.concatenate([speech[5 * s:15 * s], day[1, :10 * s]])]))
    _write(pond, "pond", T0 + timedelta(seconds=20),
           np.stack([day[0, 10 * s:20 * s], rain[1, :10 * s]]))
    (pond / f"pond-{_stamp(T0 + timedelta(seconds=40))}.flac").write_bytes(b"not audio" * 100)
    _write(road, "road", T0 + timedelta(seconds=5),
           np.concatenate([speech[:8 * s], rain[0, 5 * s:13 * s]])[None, :])
    _write(road, "road", T0 + timedelta(hours=1), rain[1:, :5 * s])
    return root


@pytest.fixture(scope="module")
def selector() -> TfliteModel:
    return TfliteModel(SELECTOR)


def _variant(dest: Path, version: str, labels: dict[str, str] | None = None,
             **features: Any) -> Path:
    """A copy of the selector under another version, labels renamed or features changed."""
    shutil.copytree(SELECTOR, dest)
    meta = json.loads((dest / "model.json").read_text())
    meta["version"] = version
    if labels:
        meta["labels"] = [labels.get(label, label) for label in meta["labels"]]
        per_class = meta["metrics"]["held_out"]["per_class"]
        meta["metrics"]["held_out"]["per_class"] = {labels.get(k, k): v
                                                    for k, v in per_class.items()}
    meta["features"].update(features)
    (dest / "model.json").write_text(json.dumps(meta))
    return dest


@pytest.fixture(scope="module")
def permuted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The selector with the names of ``rain`` and ``speech`` swapped, as PERMUTED."""
    return _variant(tmp_path_factory.mktemp("models") / PERMUTED, PERMUTED, SWAP)


class Spy:
    """A scorer that counts the windows it scored."""

    def __init__(self, model: TfliteModel) -> None:
        self.model = model
        self.rows = 0

    @property
    def model_id(self) -> str:
        return self.model.model_id

    @property
    def version(self) -> str:
        return self.model.version

    @property
    def labels(self) -> tuple[str, ...]:
        return self.model.labels

    @property
    def features(self) -> FeatureParams:
        return self.model.features

    def predict(self, features: F32) -> F32:
        self.rows += features.shape[0]
        return self.model.predict(features)

    def decide(self, scores: F32) -> tuple[str, ...]:
        return self.model.decide(scores)


# ------------------------------------------------------------------- oracle


def oracle(root: Path, model: TfliteModel, since: datetime, until: datetime
           ) -> dict[str, Counter[str]]:
    """Decisions per source of the windows in [since, until), computed independently:
    whole files decoded, each a session from ``since`` or its start, every hop."""
    grid = Grid.of(model.features, OVERLAP)
    out: dict[str, Counter[str]] = {}
    for path in sorted(root.glob("*/*.flac")):
        parsed = parse_archive_name(path)
        assert parsed is not None
        source, start = parsed
        try:
            audio, _ = decode_all(path, grid.sample_rate)
        except Exception:  # the broken file: no window
            continue
        origin = max(start, since)
        first = round((origin - start).total_seconds() * grid.sample_rate)
        stop = int((until - origin).total_seconds() * grid.sample_rate)
        session = audio[:, first:][:, :max(0, stop)]
        counts = out.setdefault(source, Counter())
        for channel in session:
            windows = frame_windows(channel, model.features, grid.hop)
            scores = model.predict(window_features(windows, model.features))
            counts.update(model.decide(s)[0] for s in scores)
    return {s: c for s, c in out.items() if c}


def _run(a: Any, b: Any, root: Path, span: tuple[datetime, datetime],
         top: int = 10_000) -> CompareReport:
    segments = plan(find_sources(source_folders(root)), *span)
    return compare(a, b, segments, *span, overlap=OVERLAP, top=top)


def _decided(report: CompareReport, source: str, side: str) -> Counter[str]:
    return Counter({c.label: getattr(c, side) for c in
                    report.sources[source].classes(report.label_order) if getattr(c, side)})


# -------------------------------------------------------------------- tests


def test_a_model_agrees_with_itself_everywhere(archive: Path, selector: TfliteModel) -> None:
    report = _run(selector, selector, archive, ALL)
    expected = oracle(archive, selector, *ALL)
    assert set(report.sources) == {"pond", "road"} == set(expected)
    for source, counts in expected.items():
        assert _decided(report, source, "a") == counts
        assert _decided(report, source, "b") == counts
        assert all(c.both == c.a for c in report.sources[source].classes(report.label_order))
    assert report.total.windows == sum(sum(c.values()) for c in expected.values())
    assert report.total.agreement == 1.0
    assert report.n_ranges == 0 and report.top == []
    assert report.shared_windows
    # the broken file is skipped, said and counted; road's 11:00 file is out of range
    assert [p.name for p, _ in report.unreadable] == ["pond-2025-06-01-10-00-40.flac"]
    assert report.files == 4


def test_swapped_labels_disagree_exactly_on_rain_and_speech(
        archive: Path, selector: TfliteModel, permuted: Path) -> None:
    candidate = TfliteModel(permuted)
    report = _run(selector, candidate, archive, ALL)
    expected = oracle(archive, selector, *ALL)
    disagreeing = 0
    for source, a in expected.items():
        assert a["rain"] > 0 and a["speech"] > 0, f"{source}: the archive must hold both"
        tally = report.sources[source]
        for c in tally.classes(report.label_order):
            assert c.a == a[c.label], (source, c)
            assert c.b == a[SWAP.get(c.label, c.label)], (source, c)
            assert c.both == (0 if c.label in SWAP else a[c.label]), (source, c)
        wrong = {pair: n for pair, n in tally.pairs.items() if pair[0] != pair[1]}
        assert wrong == {("rain", "speech"): a["rain"], ("speech", "rain"): a["speech"]}
        assert tally.windows - tally.agree == a["rain"] + a["speech"]
        disagreeing += a["rain"] + a["speech"]
    assert report.total.agreement == pytest.approx(1 - disagreeing / report.total.windows)
    # ranges: every disagreeing window in exactly one, consecutive windows merged
    assert sum(d.windows for d in report.top) == disagreeing
    assert report.n_ranges == len(report.top) < disagreeing
    assert {(d.a_label, d.b_label) for d in report.top} == {("rain", "speech"),
                                                            ("speech", "rain")}
    assert [d.windows for d in report.top] == sorted((d.windows for d in report.top),
                                                     reverse=True)
    # a range points at audio one can listen to: there, A hears its label throughout
    longest = report.top[0]
    assert longest.end_ns - longest.start_ns == (longest.windows - 1) * 375_000_000 + 500_000_000
    audio, _ = decode_all(longest.path, RATE)
    first = round(longest.offset_s * RATE)
    heard = audio[longest.channel, first:first + (longest.end_ns - longest.start_ns) * RATE
                  // 1_000_000_000]
    windows = frame_windows(heard, selector.features, 18_000)
    scores = selector.predict(window_features(windows, selector.features))
    assert [selector.decide(x)[0] for x in scores] == [longest.a_label] * longest.windows
    assert _run(selector, candidate, archive, ALL, top=3).top == report.top[:3]


def test_only_windows_inside_the_range_are_scored(
        archive: Path, selector: TfliteModel, permuted: Path) -> None:
    since, until = T0 + timedelta(seconds=7.3), T0 + timedelta(seconds=27.1)
    spy = Spy(selector)
    report = _run(spy, TfliteModel(permuted), archive, (since, until))
    w, hop = 24_000, 18_000
    per_file = {  # samples in range of each file, one session each
        "pond": 2 * expected_windows(round(12.7 * RATE), w, hop)  # 10:00:07.3 to its end
        + 2 * expected_windows(round(7.1 * RATE), w, hop),  # 10:00:20 to until
        "road": expected_windows(round(13.7 * RATE), w, hop),  # 10:00:07.3 to 10:00:21
    }
    assert {s: t.windows for s, t in report.sources.items()} == per_file
    assert spy.rows == sum(per_file.values()) == report.total.windows  # nothing else scored
    expected = oracle(archive, selector, since, until)
    for source, counts in expected.items():
        assert _decided(report, source, "a") == counts
    since_ns, until_ns = (int(t.timestamp() * 1e9) for t in (since, until))
    assert report.top and all(since_ns <= d.start_ns < d.end_ns <= until_ns for d in report.top)
    assert report.unreadable == []  # the broken file lies after until: never opened
    with pytest.raises(CompareError, match="no archived audio"):
        _run(selector, selector, archive, (T0 - timedelta(days=1), T0 - timedelta(hours=3)))


def test_models_with_other_windows_are_paired_by_time(
        archive: Path, selector: TfliteModel, tmp_path: Path) -> None:
    # 1 s windows at 24 kHz: the same input shape, another grid and another decoding
    other = Spy(TfliteModel(_variant(tmp_path / "v", later(2), sample_rate=24_000,
                                     window_s=1.0)))
    report = _run(selector, other, archive, ALL)
    assert not report.shared_windows and report.b.grid == Grid(24_000, 24_000, 18_000)
    expected = oracle(archive, selector, *ALL)
    assert report.total.windows == sum(sum(c.values()) for c in expected.values())
    assert report.total.unpaired == 0
    assert other.rows == sum(sum(c.values()) for c in oracle(archive, other.model, *ALL).values())
    assert other.rows < report.total.windows  # its own, longer windows


def test_missing_archives_are_clear_errors(archive: Path) -> None:
    with pytest.raises(CompareError, match="TIDZAM_ARCHIVE_DIR"):
        source_folders(None)
    with pytest.raises(CompareError, match="no archive folder"):
        source_folders(archive, sources=["lake"])
    with pytest.raises(CompareError, match="lake"):
        find_sources([archive / "pond"], ["lake"])
    assert list(find_sources(source_folders(archive, sources=["road"]))) == ["road"]


def test_the_command_line_compares_without_a_running_stack(
        archive: Path, selector: TfliteModel, permuted: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(permuted, home / "models" / "selector" / PERMUTED)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDZAM_")}
    env.update(TIDZAM_HOME=str(home), TIDZAM_ARCHIVE_DIR=str(archive))

    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tidzam_ctl", "model", "compare", *args],
                              env=env, cwd=REPO, capture_output=True, text=True, timeout=120)

    span = ["--since", ALL[0].isoformat(), "--until", ALL[1].isoformat()]
    done = ctl(f"selector@{SHIPPED}", f"selector@{PERMUTED}", *span, "--source", "road",
               "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert list(result["sources"]) == ["road"]
    expected = oracle(archive, selector, *ALL)["road"]
    classes = {c["label"]: c for c in result["sources"]["road"]["classes"]}
    assert classes["rain"] == {"label": "rain", "a": expected["rain"],
                               "b": expected["speech"], "both": 0}
    assert result["disagreements"]["ranges"] >= 2
    assert {(d["a"], d["b"]) for d in result["disagreements"]["top"]} == {
        ("rain", "speech"), ("speech", "rain")}
    # every source; the broken file makes it a partial result (exit 3), with a table
    done = ctl(f"selector@{SHIPPED}", f"selector@{PERMUTED}", *span)
    assert done.returncode == 3, done.stderr
    assert "pond-2025-06-01-10-00-40.flac" in done.stderr
    assert "longest disagreements" in done.stdout and "road" in done.stdout
    # a bare NAME as the reference needs the bus: refused with the way out
    done = ctl("selector", f"selector@{PERMUTED}", *span)
    assert done.returncode == 2 and "NAME@VERSION" in done.stderr
    missing = later(99)
    done = ctl(f"selector@{SHIPPED}", f"selector@{missing}", *span)
    assert done.returncode == 2 and f"no version {missing}" in done.stderr
