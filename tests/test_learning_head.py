"""The YAMNet-based selector's numpy parts: the head, thresholds, smoothing, the decision,
leave-one-package-out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import learning.training.crossval as crossval_module
from inference.hearing import HeadWeights, highband, mapped_scores, mapping_indices, rms_db
from learning.training.crossval import (
    Setting,
    WindowTable,
    calibrate,
    choose,
    decide,
    leave_one_package_out,
    score,
    smooth,
    tuned_scorer,
    zero_shot_scorer,
)
from learning.training.head import HeadConfig, fit, sample_weights


def _table(rng: np.random.Generator, packages: int = 4, per: int = 60) -> WindowTable:
    """Two classes; the embedding separates them, the mapping is noisy but right on
    average; package 0 hears class b only."""
    rows = packages * per
    labels = [("a" if (i // per) and i % 2 else "b") for i in range(rows)]
    y = np.array([lab == "a" for lab in labels])
    emb = rng.standard_normal((rows, 8)).astype(np.float32)
    emb[:, 0] += np.where(y, 2.0, -2.0)
    mapped = np.clip(rng.uniform(0, 0.6, (rows, 2)), 0, 1).astype(np.float32)
    mapped[y, 0] += 0.3
    mapped[~y, 1] += 0.3
    pkg = np.array([f"p{i // per}" for i in range(rows)])
    return WindowTable(("a", "b"), emb, mapped, labels, np.zeros(rows, bool), pkg,
                       [f"g{i // 10}" for i in range(rows)], np.arange(rows) // 10,
                       (np.arange(rows) % 10) * 100)


def test_the_head_starts_as_the_mapping_and_learns_the_embedding(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    t = _table(rng)
    rows = np.arange(len(t.labels))
    strong = HeadConfig(l2_embedding=1e6, l2_mapping=1e6)
    prior = fit(t.embedding, t.mapped, t.targets(rows), t.group, strong)
    assert np.allclose(prior.wm, np.eye(2), atol=1e-3) and np.abs(prior.we).max() < 1e-3
    head = fit(t.embedding, t.mapped, t.targets(rows), t.group, HeadConfig(l2_embedding=0.01))
    s = head.scores(t.embedding, t.mapped)
    assert s.shape == (len(rows), 2) and s.min() >= 0 and s.max() <= 1
    right = (s[:, 0] > s[:, 1]) == t.targets(rows)[:, 0]
    assert right.mean() > 0.95
    head.save(tmp_path / "head.npz")
    again = HeadWeights.load(tmp_path / "head.npz")
    assert np.allclose(again.scores(t.embedding, t.mapped), s)


def test_sample_weights_balance_classes_and_groups() -> None:
    targets = np.array([[1, 0]] * 9 + [[0, 1]], dtype=bool)
    w = sample_weights(targets, ["x"] * 8 + ["y", "z"])
    assert np.isclose(w[:9].sum(), w[9])  # a class weighs as much as another
    assert np.isclose(w[:8].sum(), w[8] * np.sqrt(8))  # a group by sqrt of its windows


def test_thresholds_decisions_and_scores() -> None:
    scores = np.array([[0.9, 0.1], [0.3, 0.35], [0.2, 0.1], [0.6, 0.7]], np.float32)
    thresholds = np.array([0.5, 0.3], np.float32)
    quiet = np.array([False, False, False, True])
    assert decide(scores, thresholds, quiet, ("a", "b")) == ["a", "b", "unknown", "quiet"]
    targets = np.array([[1, 0], [0, 1], [0, 0], [1, 0]], bool)
    assert np.allclose(calibrate(scores, targets), [0.5, 0.25])  # middles of the ties
    s = score(["a", "b", "a+b", "quiet"], ["a", "a", "b", "quiet"], ("a", "b", "quiet"))
    assert s.per_class["a"].precision == 0.5 and s.per_class["b"].recall == 0.5
    assert s.per_class["quiet"].f1 == 1.0 and s.n == 4


def test_smoothing_averages_neighbours_of_one_recording_only() -> None:
    scores = np.array([[1.0], [0.0], [0.0], [3.0], [9.0]], np.float32)
    recording = np.array([0, 0, 0, 1, 1])
    start = np.array([0, 100, 200, 0, 500])  # recording 1's windows are not adjacent
    out = smooth(scores, recording, start, hop=100)
    assert np.allclose(out[:, 0], [0.5, 1 / 3, 0.0, 3.0, 9.0])
    shuffled = np.array([2, 0, 4, 1, 3])
    again = smooth(scores[shuffled], recording[shuffled], start[shuffled], hop=100)
    assert np.allclose(again, out[shuffled])


def test_leave_one_package_out_tests_each_window_once_on_unseen_packages() -> None:
    t = _table(np.random.default_rng(1))
    chosen: list = []  # type: ignore[type-arg]
    settings = [Setting(HeadConfig(l2_embedding=100.0), False),
                Setting(HeadConfig(l2_embedding=0.1), False)]
    result, decided = leave_one_package_out(t, tuned_scorer(settings, hop=100, chosen=chosen))
    # each fold chose by its inner folds: the head that may learn the embedding wins
    assert [c.setting for c in chosen] == [settings[1]] * 4
    assert len(decided) == len(t.labels) and "" not in decided
    assert result.macro_f1 > 0.8
    assert set(result.per_package_accuracy) == {"p0", "p1", "p2", "p3"}
    zero, _ = leave_one_package_out(t, zero_shot_scorer)
    assert zero.macro_f1 < result.macro_f1  # the embedding carries what the mapping lacks


def test_hearing_features() -> None:
    labels = ["Speech", "Bird", "Chirp, tweet", "Rain"]
    with np.testing.assert_raises(ValueError):
        mapping_indices(["birds"], labels)  # most bird names are missing from this list
    idx = [[1, 2], [3]]
    m = mapped_scores(np.array([[0.1, 0.2, 0.7, 0.4]], np.float32), idx)
    assert m.tolist() == [[np.float32(0.7), np.float32(0.4)]]
    t = np.arange(48_000) / 48_000
    low = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)[None]
    high = (0.5 * np.sin(2 * np.pi * 15_000 * t)).astype(np.float32)[None]
    assert highband(high)[0, 3] > -0.1 and highband(low)[0].max() < -3  # 14-16 kHz band
    assert abs(float(rms_db(low)[0]) - (-9.03)) < 0.05


def test_a_recording_in_two_packages_never_trains_the_fold_that_tests_it() -> None:
    t = _table(np.random.default_rng(2))
    t.group[5] = t.group[70] = "one recording"  # rows of p0 and p1
    seen: list[tuple[set[str], set[str]]] = []

    def spy(table: WindowTable, train: np.ndarray, test: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
        seen.append(({table.group[i] for i in train.tolist()},
                     {table.group[i] for i in test.tolist()}))
        return zero_shot_scorer(table, train, test)

    leave_one_package_out(t, spy)
    assert len(seen) == 4
    assert all(not (trained & tested) for trained, tested in seen)
    assert "one recording" in seen[2][0]  # p2's fold may train on it


def test_mixtures_train_only_folds_that_hold_out_neither_source() -> None:
    t = _table(np.random.default_rng(3))
    n = len(t.labels)
    t.embedding = np.concatenate([t.embedding, t.embedding[:2]])
    t.mapped = np.concatenate([t.mapped, t.mapped[:2]])
    t.labels = [*t.labels, "a+b", "a+b"]
    t.quiet = np.concatenate([t.quiet, [False, False]])
    t.package = np.array([*t.package.tolist(), "p0|p1", "p2|p3"])
    t.group = [*t.group, "g0|g7", "g13|g19"]
    t.recording = np.concatenate([t.recording, [-1, -2]])
    t.start = np.concatenate([t.start, [0, 0]])
    t.mixed = np.array([False] * n + [True, True])
    trained: dict[str, set[int]] = {}

    def spy(table: WindowTable, train: np.ndarray, test: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
        assert not table.mixed[test].any()  # a mixture is never tested
        trained[str(table.package[test[0]])] = set(train.tolist())
        return zero_shot_scorer(table, train, test)

    result, decided = leave_one_package_out(t, spy)
    assert sorted(trained) == ["p0", "p1", "p2", "p3"]
    assert n not in trained["p0"] | trained["p1"] and n in trained["p2"] | trained["p3"]
    assert n + 1 in trained["p0"] and n + 1 not in trained["p2"]
    assert len(decided) == n and result.n == n


def test_a_mixture_keeps_the_event_over_its_bed_at_the_drawn_level() -> None:
    from learning.embeddings.mixing import MixConfig, mix

    rng = np.random.default_rng(4)
    t = np.arange(46_800) / 48_000
    event = (0.3 * np.sin(2 * np.pi * 2000 * t)).astype(np.float32)
    bed = (0.05 * rng.standard_normal(46_800)).astype(np.float32)
    cfg = MixConfig(ratio_db=(6.0, 6.0), level_db=(-20.0, -20.0), lowpass_hz=(8000, 8000))
    for seed in range(4):
        out = mix(event, bed, cfg, np.random.default_rng(seed))
        assert out.dtype == np.float32 and out.shape == event.shape
        assert abs(float(rms_db(out[None])[0]) - -20.0) < 0.01
        spectrum = np.abs(np.fft.rfft(out))
        tone = spectrum[1950:2050].max()
        assert tone > 5 * np.median(spectrum[100:4000])  # the event stands over the bed


def test_the_choice_is_made_on_inner_folds_of_the_training_packages_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    t = _table(np.random.default_rng(5))
    rows = np.flatnonzero(t.package != "p3")
    seen: set[str] = set()
    real_fit = crossval_module._fit_rows

    def spy(table: WindowTable, fit_rows: np.ndarray, cfg: HeadConfig) -> object:
        seen.update(table.package[fit_rows].tolist())
        return real_fit(table, fit_rows, cfg)

    monkeypatch.setattr(crossval_module, "_fit_rows", spy)
    choice = choose(t, rows, [Setting(HeadConfig(), False), Setting(HeadConfig(), True)],
                    hop=100)
    assert seen == {"p0", "p1", "p2"}  # p3 was never looked at
    assert set(choice.inner_f1) == {"l2 3/0.1", "l2 3/0.1, smoothed"}
    assert choice.thresholds.shape == (2,)
