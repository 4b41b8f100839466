"""Tests of expnorm.calibration against hand-computed values, closed forms and scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss

from expnorm import calibration as cal


def _rows(confidences, k=4):
    """Rows whose largest entry (class 0) is the given confidence, the rest spread evenly."""
    c = np.asarray(confidences, dtype=np.float64)
    rest = (1.0 - c) / (k - 1)
    return np.column_stack([c] + [rest] * (k - 1))


def test_ece_and_mce_by_hand():
    # Two bins: (0, 0.5] and (0.5, 1]. Bin 2 holds confidences 0.6, 0.8, 0.9, 0.7 with three
    # correct (labels 0): accuracy 0.75, mean confidence 0.75 -> gap 0. Bin 1 holds 0.4 and
    # 0.5 (0.5 is the right end of bin 1), one correct: accuracy 0.5, confidence 0.45.
    probs = _rows([0.6, 0.8, 0.9, 0.7, 0.4, 0.5])
    labels = np.array([0, 0, 0, 1, 0, 2])
    r = cal.reliability(probs, labels, n_bins=2)
    np.testing.assert_array_equal(r.count, [2, 4])
    np.testing.assert_allclose(r.accuracy, [0.5, 0.75])
    np.testing.assert_allclose(r.confidence, [0.45, 0.75])
    assert r.ece == pytest.approx(2 / 6 * 0.05 + 4 / 6 * 0.0, abs=1e-15)
    assert r.mce == pytest.approx(0.05, abs=1e-15)
    assert cal.expected_calibration_error(probs, labels, 2) == r.ece
    assert cal.maximum_calibration_error(probs, labels, 2) == r.mce
    np.testing.assert_allclose(r.edges, [0.0, 0.5, 1.0])


def test_bins_are_closed_on_the_right():
    probs = _rows([0.6, 0.6000001])
    r = cal.reliability(probs, np.array([0, 0]), n_bins=5)
    np.testing.assert_array_equal(r.count, [0, 0, 1, 1, 0])


def test_mce_ignores_empty_bins_and_bounds_ece():
    rng = np.random.default_rng(1)
    logits = 3.0 * rng.normal(size=(300, 5))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = rng.integers(0, 5, size=300)
    r = cal.reliability(probs, labels, n_bins=15)
    assert 0.0 <= r.ece <= r.mce <= 1.0
    used = r.count > 0
    assert r.mce == pytest.approx(np.max(np.abs(r.accuracy - r.confidence)[used]))


def test_perfectly_calibrated_bins_give_zero():
    # 10 rows of confidence 0.7 with 7 correct, 4 rows of 0.25 with 1 correct (K = 4).
    probs = np.vstack([_rows([0.7] * 10), np.full((4, 4), 0.25)])
    labels = np.array([0] * 7 + [1] * 3 + [0] + [1] * 3)
    r = cal.reliability(probs, labels, n_bins=10)
    assert r.ece == pytest.approx(0.0, abs=1e-15)
    assert r.mce == pytest.approx(0.0, abs=1e-15)


def test_brier_closed_forms():
    k = 7
    assert cal.brier_score(np.eye(k), np.arange(k)) == 0.0
    assert cal.brier_score(np.eye(k), (np.arange(k) + 1) % k) == 2.0
    assert cal.brier_score(np.full((3, k), 1.0 / k), np.array([0, 3, 6])) == pytest.approx(1 - 1 / k)


def test_brier_two_classes_is_twice_sklearn_binary():
    rng = np.random.default_rng(2)
    p1 = rng.uniform(size=200)
    labels = rng.integers(0, 2, size=200)
    probs = np.column_stack([1.0 - p1, p1])
    assert cal.brier_score(probs, labels) == pytest.approx(2.0 * brier_score_loss(labels, p1), rel=1e-12)


def test_bootstrap_of_a_mean_matches_the_normal_interval():
    rng = np.random.default_rng(3)
    x = rng.normal(size=400)
    low, high = cal.bootstrap_interval(np.mean, x, n_resamples=4000, seed=0)
    half = 1.959964 * x.std() / np.sqrt(x.size)
    assert low < x.mean() < high
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)
    assert (low + high) / 2 == pytest.approx(x.mean(), abs=0.1 * half)


def test_bootstrap_is_paired_and_reproducible():
    x = np.arange(50.0)
    # Resampled with the same indices, x - x is always 0 and the interval degenerates.
    assert cal.bootstrap_interval(lambda a, b: np.mean(a - b), x, x.copy(), n_resamples=200) == (0.0, 0.0)
    first = cal.bootstrap_interval(np.mean, x, n_resamples=300, seed=5)
    assert first == cal.bootstrap_interval(np.mean, x, n_resamples=300, seed=5)
    assert first != cal.bootstrap_interval(np.mean, x, n_resamples=300, seed=6)
    low90, high90 = cal.bootstrap_interval(np.mean, x, n_resamples=300, seed=5, confidence=0.9)
    assert first[0] <= low90 <= high90 <= first[1]


@pytest.mark.parametrize(
    "call",
    [
        lambda: cal.reliability(np.ones(3), np.zeros(3, int)),
        lambda: cal.reliability(np.ones((3, 2)) / 2, np.zeros(2, int)),
        lambda: cal.reliability(np.ones((3, 2)) / 2, np.full(3, 2)),
        lambda: cal.reliability(np.ones((3, 2)) / 2, np.zeros(3)),
        lambda: cal.reliability(np.ones((3, 2)) / 2, np.zeros(3, int), n_bins=0),
        lambda: cal.brier_score(np.ones((0, 2)), np.zeros(0, int)),
        lambda: cal.bootstrap_interval(np.mean),
        lambda: cal.bootstrap_interval(np.mean, np.ones(3), confidence=1.0),
        lambda: cal.bootstrap_interval(np.mean, np.ones(3), n_resamples=0),
        lambda: cal.bootstrap_interval(lambda a, b: 0.0, np.ones(3), np.ones(4)),
    ],
)
def test_bad_inputs_raise(call):
    with pytest.raises(ValueError):
        call()


def test_bootstrap_metrics_equal_the_metrics_of_each_resample():
    # The vectorized resampling against the definition, resample by resample, same indices.
    rng = np.random.default_rng(4)
    logits = 2.5 * rng.normal(size=(120, 6))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = rng.integers(0, 6, size=120)
    losses = -np.log(probs[np.arange(120), labels])
    values = cal.bootstrap_metrics(probs, labels, losses, n_bins=10, n_resamples=50, seed=7)
    indices = np.random.default_rng(7).integers(0, 120, size=(50, 120))
    for r, idx in enumerate(indices):
        rel = cal.reliability(probs[idx], labels[idx], n_bins=10)
        assert values["ece"][r] == pytest.approx(rel.ece, abs=1e-13)
        assert values["mce"][r] == pytest.approx(rel.mce, abs=1e-13)
        assert values["brier"][r] == pytest.approx(cal.brier_score(probs[idx], labels[idx]), abs=1e-13)
        assert values["loss"][r] == pytest.approx(np.mean(losses[idx]), abs=1e-13)
    low, high = cal.bootstrap_interval(
        lambda p, y: cal.expected_calibration_error(p, y, 10), probs, labels, n_resamples=50, seed=7)
    assert (low, high) == pytest.approx(cal.percentile_interval(values["ece"]), abs=1e-13)
    assert "loss" not in cal.bootstrap_metrics(probs, labels, n_resamples=5)
    with pytest.raises(ValueError):
        cal.bootstrap_metrics(probs, labels, losses[:5])
    with pytest.raises(ValueError):
        cal.percentile_interval(values["ece"], confidence=0.0)
