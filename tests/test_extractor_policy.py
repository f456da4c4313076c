"""The extractor's decisions, pure: which windows, why, how likely."""

from __future__ import annotations

import numpy as np
import pytest

from bus_schemas import ExtractionRule, Prediction
from consumers.extractor.policy import (
    auto_probability,
    choose,
    draw,
    hesitation,
    is_centred,
)
from consumers.privacy import is_private

LABELS = ("birds", "birds-crow", "birds-robin", "birds-owl", "rain", "speech")


def pred(result: tuple[str, ...], scores: tuple[float, ...]) -> Prediction:
    return Prediction(source="pond", channel=1, window_start_ns=10**18,
                      window_end_ns=10**18 + 10**9, model_id="selector", model_version="1",
                      labels=LABELS, scores=scores, result=result)


def test_auto_prefers_the_rarest_siblings() -> None:
    counts = {"birds-crow": 99, "birds-robin": 9, "rain": 3}
    # siblings of birds-crow: robin and owl (owl has none: the rarest)
    assert auto_probability("birds-owl", LABELS, counts) == 1.0
    assert auto_probability("birds-crow", LABELS, counts) == pytest.approx(1 / 100)
    assert auto_probability("birds-robin", LABELS, counts) == pytest.approx(1 / 10)
    # top-level classes are siblings of each other: birds and speech have none
    assert auto_probability("rain", LABELS, counts) == pytest.approx(1 / 4)
    assert auto_probability("rain", LABELS, {}) == 1.0


def test_unknown_and_hesitant_windows_are_always_candidates_under_auto() -> None:
    rule = ExtractionRule(classes=("*",), rate="auto")
    unknown = choose(pred(("unknown",), (0.3, 0.0, 0.0, 0.0, 0.1, 0.0)), rule, {"rain": 50})
    assert unknown is not None and (unknown.label, unknown.reason, unknown.probability) == (
        "unknown", "unknown", 1.0)
    torn = pred(("rain",), (0.45, 0.0, 0.0, 0.0, 0.5, 0.0))
    assert hesitation(torn) == ("rain", "birds")
    chosen = choose(torn, rule, {"rain": 500})
    assert chosen is not None and (chosen.label, chosen.reason, chosen.probability) == (
        "rain", "hesitant", 1.0)
    sure = choose(pred(("rain",), (0.05, 0.0, 0.0, 0.0, 0.9, 0.0)), rule, {"rain": 9})
    assert sure is not None and sure.reason == "auto" and sure.probability == pytest.approx(0.1)


def test_patterns_and_fixed_rates() -> None:
    rule = ExtractionRule(classes=("birds-*",), rate=0.25)
    crow = choose(pred(("birds", "birds-crow"), (0.9, 0.8, 0.1, 0.0, 0.0, 0.0)), rule, {})
    assert crow is not None and (crow.label, crow.reason, crow.probability) == (
        "birds-crow", "rate", 0.25)
    assert choose(pred(("rain",), (0.0, 0.0, 0.0, 0.0, 0.9, 0.0)), rule, {}) is None
    assert choose(pred(("unknown",), (0.1,) * 6), rule, {}) is None  # not asked for
    # a hesitant window is a candidate under auto only
    torn = pred(("birds-crow",), (0.0, 0.5, 0.45, 0.0, 0.0, 0.0))
    assert choose(torn, ExtractionRule(classes=("rain",), rate=0.5), {}) is None


def test_the_coin_is_fixed_by_the_window_and_fair() -> None:
    assert draw("pond-1-x") == draw("pond-1-x")
    values = np.array([draw(f"w{i}") for i in range(4000)])
    assert values.min() >= 0.0 and values.max() < 1.0
    assert abs(float(np.mean(values < 0.25)) - 0.25) < 0.03


def test_speech_is_private() -> None:
    assert is_private(pred(("speech",), (0.0,) * 5 + (0.9,)), 0.5)
    assert is_private(pred(("birds",), (0.6, 0.0, 0.0, 0.0, 0.0, 0.55)), 0.5)
    assert not is_private(pred(("birds",), (0.9, 0.0, 0.0, 0.0, 0.0, 0.2)), 0.5)


def test_centred_sounds_pass_the_object_filter() -> None:
    rng = np.random.default_rng(0)
    n = 48_000
    call = np.zeros(n)
    call[n // 3: 2 * n // 3] = rng.normal(0, 0.3, n // 3 + 1)[: n // 3]
    assert is_centred(call)
    assert not is_centred(rng.normal(0, 0.3, n))  # rain: as loud at the edges
    assert not is_centred(np.zeros(n))
