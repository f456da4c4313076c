"""inference.scoring: the committed selector through LiteRT, and decide(); inference.features."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bus_schemas import pcm
from inference.features import FeatureParams, mel_filterbank, span_features, window_features
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


def test_span_features_match_a_reference_log_mel_from_int16_and_float() -> None:
    """Windows taken in place from a PCM16 or float signal give the log-mel a plain
    numpy computation gives from the float windows cut out first."""
    params = FeatureParams()
    rng = np.random.default_rng(3)
    t = np.arange(80_000) / params.sample_rate
    tone = 0.3 * np.sin(2 * np.pi * 1_000 * t) + 0.05 * rng.standard_normal(t.shape[0])
    pcm16 = pcm.to_int16(tone)
    signal = pcm.int16_to_float32(pcm16)
    starts = np.array([0, 18_000, 36_000, 56_000], dtype=np.int64)
    w = params.window_samples

    hann = np.hanning(params.n_fft + 1)[:-1]
    reference = []
    for s in starts.tolist():
        window = signal[s:s + w].astype(np.float64)
        frames = np.stack([window[i * params.hop:i * params.hop + params.n_fft]
                           for i in range(params.n_frames)])
        power = np.abs(np.fft.rfft(frames * hann, axis=-1)) ** 2
        reference.append(np.log(power @ mel_filterbank(params) + params.log_floor))
    expected = np.array(reference)

    from_pcm = span_features([(pcm16, starts)], params)
    from_float = span_features([(signal, starts[:2]), (signal, starts[2:])], params)
    assert from_pcm.shape == (4, *params.shape)
    np.testing.assert_allclose(from_pcm, expected, atol=2e-3)
    np.testing.assert_allclose(from_float, from_pcm, atol=1e-5)
    np.testing.assert_allclose(window_features(np.stack([signal[s:s + w] for s in starts]),
                                               params), from_pcm, atol=1e-5)
    # the 1 kHz tone is the loudest mel band in every frame
    band = int(np.argmax(expected.mean(axis=(0, 1))))
    assert int(np.argmax(from_pcm.mean(axis=(0, 1)))) == band


def test_span_features_of_many_windows_on_and_off_a_grid_match_one_at_a_time() -> None:
    """More windows than one FFT block, evenly spaced runs broken by odd gaps:
    the same features as each window alone."""
    params = FeatureParams()
    rng = np.random.default_rng(5)
    pcm16 = pcm.to_int16(0.2 * rng.standard_normal(400_000))
    starts = np.concatenate([np.arange(0, 9) * 18_000, 170_000 + np.arange(0, 7) * 18_000,
                             [300_000, 301_000, 350_000]]).astype(np.int64)
    together = span_features([(pcm16, starts)], params)
    alone = np.concatenate([span_features([(pcm16, starts[i:i + 1])], params)
                            for i in range(starts.shape[0])])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_span_features_refuse_a_window_outside_the_signal() -> None:
    params = FeatureParams()
    signal = np.zeros(params.window_samples + 10, dtype=np.int16)
    with pytest.raises(ValueError, match="does not fit"):
        span_features([(signal, np.array([11]))], params)
    with pytest.raises(ValueError, match="does not fit"):
        span_features([(signal, np.array([-1]))], params)
