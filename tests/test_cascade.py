"""Hierarchical experts, on fakes: scores, gating, decisions, refusals and versions
of a cascade, and a selector alone that behaves as it always did.

Experts from real model folders, the classifier's follower and a cascade with a
real TFLite expert through a running stack are in ``test_cascade_experts.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from bus_schemas import Prediction
from inference.cascade import (
    MAX_VERSION_LEN,
    Cascade,
    CascadeError,
    cascade_version,
    decide_hierarchical,
)
from inference.features import FeatureParams, window_features
from inference.scoring import TfliteModel, decide

F32 = npt.NDArray[np.float32]

REPO = Path(__file__).resolve().parents[1]
SELECTOR = REPO / "models" / "selector"


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
