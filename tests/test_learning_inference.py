"""inference.scoring: the committed selector through LiteRT, and decide()."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from inference.scoring import UNKNOWN, TfliteModel, decide

ROOT = Path(__file__).resolve().parents[1]
SELECTOR = ROOT / "models" / "selector"


@pytest.fixture(scope="module")
def model() -> TfliteModel:
    return TfliteModel(SELECTOR)


def _features(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(-8.0, 3.0, size=(n, 45, 64)).astype(np.float32)


def test_predict_shapes_and_batch_resizing(model: TfliteModel) -> None:
    x = _features(128)
    n_labels = len(model.labels)
    for n in (1, 7, 128, 7, 1, 33):
        scores = model.predict(x[:n])
        assert scores.shape == (n, n_labels) and scores.dtype == np.float32
        np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-4)
    assert model.predict(x[:0]).shape == (0, n_labels)


def test_a_window_scores_the_same_in_any_batch(model: TfliteModel) -> None:
    x = _features(20, seed=3)
    alone = model.predict(x[5:6])[0]
    batched = model.predict(x)[5]
    np.testing.assert_allclose(alone, batched, atol=1e-5)


def test_wrong_shape_is_refused(model: TfliteModel) -> None:
    with pytest.raises(ValueError, match="45, 64"):
        model.predict(np.zeros((2, 44, 64), np.float32))
    with pytest.raises(ValueError):
        model.predict(np.zeros((45, 64), np.float32))


def test_model_metadata_for_the_classifier(model: TfliteModel) -> None:
    assert model.model_id == "selector"
    assert model.features.shape == (45, 64)
    decision = model.decide(np.eye(len(model.labels), dtype=np.float32)[2])
    assert decision == (model.labels[2],)


def test_inference_modules_do_not_import_tensorflow() -> None:
    code = ("import sys, inference.scoring, inference.modelfolder, inference.features;"
            "m = inference.scoring.TfliteModel('models/selector');"
            "import numpy as np; m.predict(np.zeros((3, 45, 64), np.float32));"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


LABELS = ("birds", "rain", "quiet")


@pytest.mark.parametrize(("scores", "threshold", "margin", "expected"), [
    ([0.8, 0.1, 0.1], 0.5, 0.2, ("birds",)),
    ([0.1, 0.1, 0.8], 0.5, 0.2, ("quiet",)),
    ([0.45, 0.45, 0.1], 0.3, 0.1, (UNKNOWN,)),  # no margin over the runner-up
    ([0.4, 0.3, 0.3], 0.5, 0.0, (UNKNOWN,)),  # below threshold
    ([0.5, 0.3, 0.2], 0.5, 0.2, ("birds",)),  # exactly at both limits
    ([float("nan"), 0.3, 0.2], 0.1, 0.0, (UNKNOWN,)),
])
def test_decide(scores: list[float], threshold: float, margin: float,
                expected: tuple[str, ...]) -> None:
    assert decide(np.array(scores, np.float32), LABELS, threshold, margin) == expected


def test_decide_with_few_labels() -> None:
    assert decide([0.9], ("birds",), 0.5, 0.5) == ("birds",)
    assert decide([0.4], ("birds",), 0.5, 0.0) == (UNKNOWN,)
    assert decide([0.6, 0.4], ("a", "b"), 0.5, 0.1) == ("a",)
    assert decide([0.6, 0.4], ("a", "b"), 0.5, 0.3) == (UNKNOWN,)
    assert decide((0.2, 0.7, 0.05, 0.05), ("a", "b", "c", "d"), 0.5, 0.4) == ("b",)


def test_decide_refuses_mismatched_lengths() -> None:
    with pytest.raises(ValueError):
        decide([0.5, 0.5], ("a",), 0.5, 0.1)
    with pytest.raises(ValueError):
        decide([], (), 0.5, 0.1)
