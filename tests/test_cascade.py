"""Hierarchical experts: scores, gating, decisions, versions, the classifier's
follower, and a cascade with a real TFLite expert through a running stack."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import pytest
from nats.aio.client import Client

from audio.decode import decode_all
from bus.publisher import Publisher
from bus_schemas import ModelDeployed, Prediction
from consumers.classifier.classifier import Classifier
from consumers.classifier.deploys import ModelFollower, build_cascade, expert_folders
from inference.cascade import (
    DEFAULT_GATE,
    MAX_VERSION_LEN,
    SCORE_EPS,
    Cascade,
    CascadeError,
    cascade_version,
    decide_hierarchical,
)
from inference.features import FeatureParams, window_features
from inference.modelfolder import ModelFolder
from inference.registry import ModelRegistry, semver_key
from inference.scoring import TfliteModel, decide
from tests.audio_files import write_pcm
from tests.real_audio import DAY, MEGAGLEST, RAIN, real_file
from tests.stack_helpers import ctl, running_stack, wait_for

F32 = npt.NDArray[np.float32]

REPO = Path(__file__).resolve().parents[1]
SELECTOR = REPO / "models" / "selector"
SHIPPED = ModelFolder.load(SELECTOR).meta.version  # the shipped selector's version
NEW_SELECTOR = f"{semver_key(SHIPPED)[0] + 1}.1.0"  # a test-made selector, never the shipped


# ------------------------------------------------------------------ fakes


class TableScorer:
    """A deterministic model: window ``i`` (its features all equal ``i``) scores
    ``table[i]``. Records the windows of every call, to count the work done."""

    def __init__(self, model_id: str, labels: Sequence[str], table: Sequence[Sequence[float]],
                 version: str = "1.0.0", features: FeatureParams | None = None) -> None:
        self.model_id = model_id
        self.version = version
        self.labels = tuple(labels)
        self.features = features or FeatureParams()
        self.table = np.asarray(table, dtype=np.float32)
        self.calls: list[list[int]] = []

    def predict(self, features: F32) -> F32:
        rows = [int(i) for i in features[:, 0, 0]]
        self.calls.append(rows)
        return self.table[rows]


def windows(n: int) -> F32:
    """Features of ``n`` windows, window ``i`` filled with ``i``."""
    shape = FeatureParams().shape
    return np.repeat(np.arange(n, dtype=np.float32), shape[0] * shape[1]).reshape(n, *shape)


def sel(*rows: Sequence[float]) -> TableScorer:
    return TableScorer("selector", ("birds", "rain", "quiet"), rows)


# ------------------------------------------------------------------ scores


def test_children_are_the_parent_times_the_expert() -> None:
    selector = sel([0.9, 0.05, 0.05], [0.5, 0.4, 0.1])
    birds = TableScorer("birds", ("robin", "crow"), [[0.8, 0.2], [0.25, 0.75]])
    cascade = Cascade(selector, {"birds": birds}, gate=0.3)
    scores = cascade.predict(windows(2))
    assert cascade.labels == ("birds", "rain", "quiet", "birds-robin", "birds-crow")
    expected = np.array([[0.9, 0.05, 0.05, 0.9 * 0.8, 0.9 * 0.2],
                         [0.5, 0.4, 0.1, 0.5 * 0.25, 0.5 * 0.75]], dtype=np.float32)
    np.testing.assert_allclose(scores, expected, rtol=1e-6)
    assert scores.dtype == np.float32
    # softmax experts: a family's children sum to their parent
    np.testing.assert_allclose(scores[:, 3] + scores[:, 4], scores[:, 0], rtol=1e-6)


def test_experts_nest_as_deep_as_the_class_names() -> None:
    selector = sel([0.9, 0.1, 0.0], [0.2, 0.8, 0.0])
    birds = TableScorer("birds", ("robin", "crow"), [[0.8, 0.2], [0.5, 0.5]])
    robin = TableScorer("birds-robin", ("song", "call"), [[0.75, 0.25], [0.5, 0.5]])
    rain = TableScorer("rain", ("light", "heavy"), [[0.5, 0.5], [0.1, 0.9]])
    cascade = Cascade(selector, {"rain": rain, "birds-robin": robin, "birds": birds}, gate=0.3)
    assert cascade.labels == (
        "birds", "rain", "quiet", "birds-robin", "birds-crow", "birds-robin-song",
        "birds-robin-call", "rain-light", "rain-heavy")
    s = cascade.predict(windows(2))
    col = {label: i for i, label in enumerate(cascade.labels)}
    assert s[0, col["birds-robin-song"]] == pytest.approx(0.9 * 0.8 * 0.75, rel=1e-6)
    np.testing.assert_allclose(s[:, col["birds-robin-song"]] + s[:, col["birds-robin-call"]],
                               s[:, col["birds-robin"]], rtol=1e-6)
    # window 1: birds 0.2 < gate, so neither birds nor (under it) birds-robin ran there
    assert birds.calls == [[0]] and robin.calls == [[0]] and rain.calls == [[1]]
    assert s[1, col["birds-robin"]] == s[1, col["birds-robin-song"]] == 0.0
    assert s[1, col["rain-heavy"]] == pytest.approx(0.8 * 0.9, rel=1e-6)
    assert cascade.describe() == "selector@1.0.0 + birds@1.0.0 + birds-robin@1.0.0 + rain@1.0.0"


def test_an_expert_runs_only_on_the_windows_its_parent_passes_the_gate() -> None:
    # birds: 0.9, 0.29, 0.3 (at the gate: runs), 0.0, 0.5
    selector = sel([0.9, 0.1, 0.0], [0.29, 0.7, 0.01], [0.3, 0.6, 0.1], [0.0, 0.0, 1.0],
                   [0.5, 0.5, 0.0])
    birds = TableScorer("birds", ("robin", "crow"),
                        [[0.5, 0.5], [0.9, 0.1], [0.6, 0.4], [1.0, 0.0], [0.7, 0.3]])
    # under robin, the gate applies to the product: 0.9*0.5=0.45 runs, 0.5*0.7=0.35 runs,
    # 0.3*0.6=0.18 does not
    robin = TableScorer("birds-robin", ("song", "call"), [[0.5, 0.5]] * 5)
    cascade = Cascade(selector, {"birds": birds, "birds-robin": robin}, gate=0.3)
    s = cascade.predict(windows(5))
    assert birds.calls == [[0, 2, 4]]  # 3 rows of 5: the gated-out ones cost nothing
    assert robin.calls == [[0, 4]]
    assert np.all(s[[1, 3], 3:] == 0.0) and np.all(s[2, 5:] == 0.0)
    assert s[2, 3] == pytest.approx(0.3 * 0.6)
    nothing = Cascade(sel([0.1, 0.1, 0.8]), {"birds": birds}, gate=0.3)
    birds.calls.clear()
    assert np.all(nothing.predict(windows(1))[:, 3:] == 0.0) and birds.calls == []
    everywhere = Cascade(sel([0.0, 0.0, 1.0]), {"birds": birds}, gate=0.0)
    everywhere.predict(windows(1))
    assert birds.calls == [[0]]  # gate 0: every window
    with pytest.raises(ValueError, match=r"gate must be in \[0, 1\]"):
        Cascade(selector, {}, gate=1.5)


def test_labels_are_complete_and_stable_whatever_runs() -> None:
    selector = sel([0.9, 0.1, 0.0], [0.0, 0.0, 1.0])
    birds = TableScorer("birds", ("robin", "crow"), [[0.8, 0.2]] * 2)
    a = Cascade(selector, {"birds": birds})
    b = Cascade(selector, {"birds": birds})
    assert a.labels == b.labels and a.version == b.version
    for rows in ([0], [1], [0, 1], []):  # the expert runs on all, some, none of them
        feats = windows(2)[rows]
        assert a.predict(feats).shape == (len(rows), len(a.labels))
    scores = a.predict(windows(2))
    for i in range(2):  # a Prediction is parallel and complete
        p = Prediction(source="s", channel=0, window_start_ns=1, window_end_ns=2,
                       model_id=a.model_id, model_version=a.version, labels=a.labels,
                       scores=tuple(float(x) for x in scores[i]),
                       result=a.decide(scores[i]))
        assert p.score_of("birds-crow") == pytest.approx(float(scores[i, 4]))


# ----------------------------------------------------------------- decision


LABELS = ("birds", "rain", "quiet", "birds-robin", "birds-crow", "birds-robin-song",
          "birds-robin-call")


def hdecide(**scores: float) -> str:
    vector = [scores.get(label.replace("-", "_"), 0.0) for label in LABELS]
    [label] = decide_hierarchical(LABELS, vector, threshold=0.5, margin=0.1)
    return label


def test_the_decision_refines_down_the_tree_while_the_child_passes() -> None:
    assert hdecide(birds=0.9, rain=0.1, birds_robin=0.8, birds_crow=0.1) == "birds-robin"
    assert hdecide(birds=0.9, rain=0.1, birds_robin=0.8, birds_crow=0.1,
                   birds_robin_song=0.7, birds_robin_call=0.1) == "birds-robin-song"
    # the child does not pass the threshold: the parent stands
    assert hdecide(birds=0.9, rain=0.1, birds_robin=0.45, birds_crow=0.45) == "birds"
    assert hdecide(birds=0.9, birds_robin=0.8, birds_robin_song=0.4,
                   birds_robin_call=0.4) == "birds-robin"
    # a descendant is not a rival of its ancestor
    assert hdecide(birds=0.6, rain=0.2, birds_robin=0.58, birds_crow=0.02) == "birds-robin"
    # past the threshold but not ahead of its sibling by the margin
    assert decide_hierarchical(LABELS, [0.9, 0.1, 0, 0.46, 0.44, 0, 0], 0.4, 0.1) == ("birds",)


def test_the_decision_is_unknown_without_a_clear_top_class() -> None:
    # the top class must beat the next unrelated label by the margin; children do not help
    assert hdecide(birds=0.58, rain=0.52, birds_robin=0.57) == "unknown"
    assert hdecide(birds=0.45, rain=0.3, birds_robin=0.45) == "unknown"  # under threshold
    # an unrelated deeper label counts too (not a cascade's vector, but the rule holds)
    unrelated = decide_hierarchical(("birds", "rain", "rain-heavy"), [0.6, 0.3, 0.55], 0.5, 0.1)
    assert unrelated == ("unknown",)
    assert decide_hierarchical(LABELS, [np.nan, 0, 0, 0, 0, 0, 0], 0.5, 0.1) == ("unknown",)
    with pytest.raises(ValueError, match="3 scores for 7 labels"):
        decide_hierarchical(LABELS, [0.1, 0.2, 0.3], 0.5, 0.1)


def test_without_nesting_the_decision_is_the_flat_one() -> None:
    rng = np.random.default_rng(3)
    flat = ("birds", "rain", "wind", "quiet")
    for n in (1, 2, 4):
        for _ in range(2000):
            s = rng.dirichlet(np.ones(n) * 0.5).astype(np.float32)
            if rng.random() < 0.1:
                s[rng.integers(n)] = s.max()  # ties
            for threshold, margin in ((0.5, 0.1), (0.3, 0.0), (0.0, 0.5)):
                assert decide_hierarchical(flat[:n], s, threshold, margin) == \
                    decide(s, flat[:n], threshold, margin)


def test_a_selector_alone_behaves_as_it_always_did() -> None:
    model = TfliteModel(SELECTOR)
    single = Cascade.single(model)
    assert (single.model_id, single.version, single.labels, single.features) == (
        model.model_id, model.version, model.labels, model.features)
    assert single.decision == model.folder.meta.decision
    rng = np.random.default_rng(0)
    audio = (rng.normal(0, 0.1, (16, model.features.window_samples))
             * rng.uniform(0, 1, (16, 1))).astype(np.float32)
    feats = window_features(audio, model.features)
    np.testing.assert_array_equal(single.predict(feats), model.predict(feats))
    for s in single.predict(feats):
        assert single.decide(s) == model.decide(s)


# ----------------------------------------------------------------- refusals


def test_experts_must_use_the_selectors_features() -> None:
    selector = sel([0.9, 0.1, 0.0])
    other = TableScorer("birds", ("robin",), [[1.0]], version="2.0.0",
                        features=FeatureParams(n_mels=32, fmax=8000.0))
    with pytest.raises(CascadeError, match=r"expert birds@2\.0\.0 computes its features with "
                       r"n_mels 32 \(selector 64\), fmax 8000\.0 \(selector 12000\.0\)"):
        Cascade(selector, {"birds": other})


def test_experts_that_cannot_join_are_refused_with_the_reason() -> None:
    selector = sel([0.9, 0.1, 0.0])
    with pytest.raises(CascadeError, match="labels with '-' \\(song-a\\)"):
        Cascade(selector, {"birds": TableScorer("birds", ("song-a", "b"), [[0.5, 0.5]])})
    with pytest.raises(CascadeError, match="refines no class of the cascade"):
        Cascade(selector, {"owls": TableScorer("owls", ("barn",), [[1.0]])})
    with pytest.raises(CascadeError, match="model id must be the class it refines"):
        Cascade(selector, {"birds": TableScorer("selector", ("a",), [[1.0]])})
    flat = TableScorer("selector", ("birds", "birds-robin"), [[0.5, 0.5]])
    with pytest.raises(CascadeError, match="already has \\(birds-robin\\)"):
        Cascade(flat, {"birds": TableScorer("birds", ("robin", "crow"), [[0.5, 0.5]])})


# ------------------------------------------------------------------ versions


def test_the_version_names_every_model_of_the_cascade() -> None:
    assert cascade_version("1.0.0", {}) == "1.0.0"
    assert cascade_version("1.0.0", {"rain": "1.0.0", "birds": "1.2.0"}) == \
        "1.0.0+birds.1.2.0+rain.1.0.0"
    many = {f"birds-species_{i:02d}": "1.0.0" for i in range(6)}
    long = cascade_version("1.0.0", many)
    assert long.startswith("1.0.0+6experts.") and len(long) <= MAX_VERSION_LEN
    assert long == cascade_version("1.0.0", dict(reversed(many.items())))  # one per cascade
    assert long != cascade_version("1.0.0", {**many, "birds-species_00": "1.0.1"})
    for version in ("1.0.0+birds.1.2.0+rain.1.0.0", long):
        p = Prediction(source="s", channel=0, window_start_ns=1, window_end_ns=2,
                       model_id="selector", model_version=version, labels=("a",),
                       scores=(1.0,), result=("a",))
        assert version in p.msg_id()
    with pytest.raises(ValueError, match="at most 64 characters"):  # the limit is the schema's
        Prediction(source="s", channel=0, window_start_ns=1, window_end_ns=2,
                   model_id="selector", model_version="1" * (MAX_VERSION_LEN + 1),
                   labels=("a",), scores=(1.0,), result=("a",))


# ------------------------------------------------- model folders, the service


def expert_folder(dest: Path, model_id: str, version: str, **features: Any) -> Path:
    """A copy of the built-in selector's TFLite as the expert ``model_id``: its ten
    labels become that class's children (a real model, the selector's features)."""
    shutil.copytree(SELECTOR, dest)
    meta = json.loads((dest / "model.json").read_text())
    meta.update(model_id=model_id, version=version, metrics=None)
    if features:
        meta["features"].update(features)
    (dest / "model.json").write_text(json.dumps(meta))
    return dest


async def test_expert_folders_are_built_real_and_pruned(tmp_path: Path) -> None:
    selector = TfliteModel(SELECTOR)
    birds = ModelFolder.load(expert_folder(tmp_path / "birds", "birds", "1.0.0"))
    nested = ModelFolder.load(expert_folder(tmp_path / "bb", "birds-rain", "1.0.0"))
    cascade, problems = await build_cascade(selector, {"birds": birds, "birds-rain": nested},
                                            DEFAULT_GATE, 1, {})
    assert problems == [] and list(cascade.experts) == ["birds", "birds-rain"]
    assert len(cascade.labels) == 30 and \
        cascade.version == f"{SHIPPED}+birds.1.0.0+birds-rain.1.0.0"
    feats = window_features(real_windows(), selector.features)
    s = cascade.predict(feats)
    kids = slice(10, 20)  # birds-birds … birds-quiet
    ran = s[:, 0] >= DEFAULT_GATE - SCORE_EPS
    assert ran.any() and not ran.all()
    np.testing.assert_allclose(s[ran, kids].sum(axis=1), s[ran, 0], rtol=1e-5)
    assert np.all(s[~ran, 10:] == 0.0)
    # a broken TFLite file leaves its expert out, and the experts under it with it
    (tmp_path / "birds" / "model.tflite").write_bytes(b"garbage")
    broken = ModelFolder.load(tmp_path / "birds")
    cascade, problems = await build_cascade(selector, {"birds": broken, "birds-rain": nested},
                                            DEFAULT_GATE, 1, {})
    assert not cascade.experts and cascade.version == SHIPPED
    assert len(problems) == 1 and "expert birds@1.0.0" in problems[0] and \
        "cannot be loaded" in problems[0]
    wide = ModelFolder.load(expert_folder(tmp_path / "w", "rain", "1.0.0", fmax=8000.0))
    cascade, problems = await build_cascade(selector, {"rain": wide}, DEFAULT_GATE, 1, {})
    assert not cascade.experts and "fmax 8000.0 (selector 12000.0)" in problems[0]


def real_windows() -> F32:
    """16 windows of birds (megaglest day) then 16 of rain, float32 (32, 24000) at 48 kHz."""
    day, _ = decode_all(real_file(MEGAGLEST, DAY), 48_000)
    rain, _ = decode_all(real_file(MEGAGLEST, RAIN), 48_000)
    cut = [x[0, i * 24_000:(i + 1) * 24_000] for x in (day, rain) for i in range(16)]
    return np.stack(cut).astype(np.float32)


def _deployed(path: Path, seq: int = 1) -> tuple[int, ModelDeployed]:
    meta = json.loads((path / "model.json").read_text())
    return seq, ModelDeployed(model_id=meta["model_id"], model_version=meta["version"],
                              path=str(path), labels=tuple(meta["labels"]),
                              feature_params=meta["features"], at_ns=time.time_ns())


def test_experts_come_from_deploys_else_the_newest_registry_version(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    for version in ("1.0.0", "1.2.0", "1.10.0"):
        registry.add(expert_folder(tmp_path / f"rain{version}", "rain", version))
    registry.add(expert_folder(tmp_path / "birds", "birds", "1.0.0"))
    assert {k: f.meta.version for k, f in expert_folders([], registry, "selector").items()} \
        == {"birds": "1.0.0", "rain": "1.10.0"}
    gone = ModelDeployed(model_id="rain", model_version="2.0.0", path=str(tmp_path / "gone"),
                         labels=("a",), feature_params={}, at_ns=1)
    history = [_deployed(registry.resolve("rain@1.2.0").path, 3), (5, gone)]  # 2.0.0: gone
    chosen = expert_folders(history, registry, "selector")
    assert chosen["rain"].meta.version == "1.2.0"
    assert set(expert_folders([], None, "selector")) == set()


async def _until(cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_a_running_classifier_follows_expert_deploys(nc: Client, tmp_path: Path) -> None:
    clf = Classifier(nc, Cascade.single(TfliteModel(SELECTOR)), Publisher(nc.jetstream()))
    follower = ModelFollower(clf, gate=0.3)
    await follower.start(nc.jetstream())
    pub = Publisher(nc.jetstream())
    try:
        await pub.publish_now(_deployed(expert_folder(tmp_path / "r1", "rain", "1.0.0"))[1])
        await _until(lambda: clf.scorer.version == f"{SHIPPED}+rain.1.0.0", "the rain expert")
        assert "rain-birds" in clf.scorer.labels and len(clf.scorer.labels) == 20
        other = expert_folder(tmp_path / "r2", "rain", "1.1.0", fmax=8000.0)
        await pub.publish_now(_deployed(other)[1])
        await _until(lambda: len(follower.refusals) == 1, "the refusal")
        assert "refused: expert rain@1.1.0 computes its features with fmax 8000.0" in \
            follower.refusals[0]
        gone = ModelDeployed(model_id="rain", model_version="2.0.0",
                             path=str(tmp_path / "gone"), labels=("a",), feature_params={},
                             at_ns=time.time_ns())
        await pub.publish_now(gone)
        await _until(lambda: len(follower.refusals) == 2, "the missing folder")
        assert "rain@2.0.0 from" in follower.refusals[1] and \
            "cannot be loaded: " in follower.refusals[1]
        assert clf.scorer.version == f"{SHIPPED}+rain.1.0.0"
        owls = expert_folder(tmp_path / "o", "owls", "1.0.0")  # no class 'owls': kept aside
        await pub.publish_now(_deployed(owls)[1])
        new = expert_folder(tmp_path / "s", "selector", NEW_SELECTOR)
        await pub.publish_now(_deployed(new)[1])
        await _until(lambda: clf.scorer.version == f"{NEW_SELECTOR}+rain.1.0.0",
                     "the new selector")
        assert follower.switches == 2 and len(follower.refusals) == 2
        assert set(follower.candidates) == {"rain", "owls"}
    finally:
        await follower.stop()


async def test_a_selector_switch_keeps_the_running_experts(nc: Client, tmp_path: Path) -> None:
    rain = expert_folder(tmp_path / "r", "rain", "1.0.0")
    cascade = Cascade(TfliteModel(SELECTOR), {"rain": TfliteModel(rain)})
    clf = Classifier(nc, cascade, Publisher(nc.jetstream()))
    follower = ModelFollower(clf)  # no candidates given: the running experts are
    assert not await follower.apply(_deployed(rain)[1])  # already the one running
    new = expert_folder(tmp_path / "s", "selector", NEW_SELECTOR)
    assert await follower.apply(_deployed(new)[1])
    assert clf.scorer.version == f"{NEW_SELECTOR}+rain.1.0.0" and follower.switches == 1
    assert isinstance(clf.scorer, Cascade) and clf.scorer.gate == DEFAULT_GATE
    assert clf.scorer.experts["rain"] is cascade.experts["rain"]  # not loaded again


# ------------------------------------------------------------ a whole stack


def build_expert(dest: Path, version: str, labels: Sequence[str]) -> Path:
    """A real expert for the class ``rain``: the selector architecture with random
    weights (seeded), leaning to its first label, exported to TFLite."""
    import keras

    from inference.modelfolder import Decision, InputSpec, ModelMeta, write_model_folder
    from learning.training.architectures import build_selector
    from learning.training.export import export_tflite

    params = TfliteModel(SELECTOR).features
    keras.utils.set_random_seed(len(labels))
    model = build_selector(len(labels), params, mean=-8.0, std=3.0, width=8)
    dense = model.get_layer("scores")
    kernel, _ = dense.get_weights()
    dense.set_weights([kernel * 0.1, np.array([2.0] + [0.0] * (len(labels) - 1))])
    meta = ModelMeta(model_id="rain", version=version, labels=list(labels),
                     features=params.to_dict(), decision=Decision(threshold=0.5, margin=0.1),
                     input=InputSpec(shape=[None, *params.shape], dtype="float32"),
                     created=datetime.now(UTC))
    write_model_folder(dest, meta, export_tflite(model, params), None)
    return dest


def _rows(stack: Any, source: str) -> list[tuple[str, tuple[str, ...], list[float], list[str],
                                                 dict[str, float]]]:
    """(version, labels, scores, result, {detected label: confidence}) per window."""
    with psycopg.connect(stack.database_url) as conn:
        rows = conn.execute(
            "SELECT p.model_version, m.labels, p.scores, p.result,"
            " coalesce((SELECT json_object_agg(d.label, d.confidence) FROM detections d"
            "  WHERE (d.model_id, d.model_version, d.source, d.channel, d.time)"
            "      = (p.model_id, p.model_version, p.source, p.channel, p.time)), '{}')"
            " FROM predictions p JOIN models m"
            "   ON (m.model_id, m.version) = (p.model_id, p.model_version)"
            " WHERE p.source = %s ORDER BY p.channel, p.time", (source,)).fetchall()
    return [(str(v), tuple(lab), list(s), list(r), dict(d)) for v, lab, s, r, d in rows]


def _check_cascade_rows(rows: list[Any], version: str, experts: Sequence[str]) -> None:
    selector = TfliteModel(SELECTOR)
    kids = [f"rain-{x}" for x in experts]
    gated = passed = refined = 0
    for got_version, labels, scores, result, detected in rows:
        assert got_version == version and labels == (*selector.labels, *kids)
        s = dict(zip(labels, scores, strict=True))
        if s["rain"] >= DEFAULT_GATE - SCORE_EPS:
            passed += 1
            assert sum(s[k] for k in kids) == pytest.approx(s["rain"], rel=1e-5)
            assert all(s[k] > 0 for k in kids)
        else:
            gated += 1
            assert all(s[k] == 0.0 for k in kids)
        expected = decide_hierarchical(labels, scores, 0.5, 0.1)
        assert tuple(result) == expected
        wanted = {x: pytest.approx(s[x], rel=1e-6) for x in expected if x != "unknown"}
        assert detected == wanted
        refined += expected[0] in kids
    assert gated and passed and refined, (gated, passed, refined)  # every case was seen


@pytest.mark.train
def test_a_stack_runs_a_real_expert_and_switches_it(tmp_path: Path) -> None:
    rain, _ = decode_all(real_file(MEGAGLEST, RAIN), 48_000)
    day, _ = decode_all(real_file(MEGAGLEST, DAY), 48_000)
    clip = write_pcm(tmp_path / "rain-then-day.wav",
                     np.concatenate([rain[:, :5 * 48_000], day[:, 20 * 48_000:22 * 48_000]],
                                    axis=1))
    home = tmp_path / "home"
    v1 = build_expert(tmp_path / "rain-1.0.0", "1.0.0", ["alpha", "beta"])
    v2 = build_expert(tmp_path / "rain-1.1.0", "1.1.0", ["alpha", "beta", "gamma"])
    assert ctl(home, "model", "add", str(v1)).returncode == 0  # registry only: no deploy

    def replay(source: str) -> None:
        done = ctl(home, "replay", str(clip), "--source", source, "--wait", "--timeout", "120")
        assert done.returncode == 0, done.stderr

    with running_stack(home) as stack:
        log = stack.log_dir / "classifier-0.log"
        wait_for(lambda: f"version {SHIPPED}+rain.1.0.0" in log.read_text(errors="replace"),
                 60,
                 "the classifier with its expert")
        replay("first")
        _check_cascade_rows(_rows(stack, "first"), f"{SHIPPED}+rain.1.0.0", ["alpha", "beta"])

        assert ctl(home, "model", "add", str(v2)).returncode == 0
        deployed = ctl(home, "model", "deploy", "rain@1.1.0")
        assert deployed.returncode == 0, deployed.stderr
        wait_for(lambda: "→ rain@1.1.0" in log.read_text(errors="replace"), 60, "the switch")
        replay("second")
        _check_cascade_rows(_rows(stack, "second"), f"{SHIPPED}+rain.1.1.0",
                            ["alpha", "beta", "gamma"])
