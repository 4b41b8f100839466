"""Calibration metrics of a probabilistic classifier, with bootstrap confidence intervals.

Chapter 8 of *Why Softmax?* measures how far a classifier's probabilities can be trusted.
The functions here take a matrix of predicted probabilities ``probs`` of shape ``(N, K)``
(rows on the simplex) and integer labels of shape ``(N,)``, and compute in float64 with NumPy:

- :func:`reliability` and the two binned metrics derived from it,
  :func:`expected_calibration_error` (ECE) and :func:`maximum_calibration_error` (MCE).
  They measure *top-label* (or *confidence*) calibration: whether the largest probability of
  a row, the confidence, matches the frequency with which the predicted class is correct.
  Confidences are sorted into ``n_bins`` equal-width bins ``((m - 1)/M, m/M]``, as in Guo et
  al. (2017), "On calibration of modern neural networks".
- :func:`brier_score`, the mean squared distance between the probability vector and the
  one-hot label (multi-class Brier score, between 0 and 2).
- :func:`bootstrap_interval`, a percentile bootstrap confidence interval for any statistic of
  examples resampled with replacement (paired: all arrays are resampled with the same indices),
  and :func:`bootstrap_metrics`, the same resampling applied at once to ECE, MCE, Brier score
  and (optionally) the mean loss, vectorized over the resamples; :func:`percentile_interval`
  turns its values into an interval. With the same seed and the same number of examples, two
  models are resampled with the same indices, so differences of their values are paired.

The negative log-likelihood is best computed from the logits, with
:func:`expnorm.softmax_cross_entropy_with_integer_labels`, and bootstrapped as a mean of the
per-example losses.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

__all__ = [
    "Reliability",
    "bootstrap_interval",
    "bootstrap_metrics",
    "brier_score",
    "expected_calibration_error",
    "maximum_calibration_error",
    "percentile_interval",
    "reliability",
]


class Reliability(NamedTuple):
    """Per-bin statistics of top-label calibration (empty bins have accuracy and confidence 0)."""

    ece: float
    mce: float
    count: np.ndarray
    accuracy: np.ndarray
    confidence: np.ndarray
    edges: np.ndarray


def _check(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2:
        raise ValueError(f"probs must have shape (N, K), got {probs.shape}")
    if labels.shape != probs.shape[:1]:
        raise ValueError(f"labels must have shape ({probs.shape[0]},), got {labels.shape}")
    if probs.shape[0] == 0:
        raise ValueError("need at least one example")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if np.any(labels < 0) or np.any(labels >= probs.shape[1]):
        raise ValueError("labels must lie in 0 .. K - 1")
    return probs, labels


def reliability(probs, labels, n_bins: int = 15) -> Reliability:
    """Top-label reliability statistics with ``n_bins`` equal-width confidence bins.

    The confidence of row ``n`` is ``max_k probs[n, k]`` and it is correct when its argmax
    (the first one, as :func:`numpy.argmax`) equals ``labels[n]``. Bin ``m`` (1-based) holds
    the confidences in ``((m - 1)/M, m/M]``; a confidence of exactly 0 goes to the first bin.
    ``ece`` is the average over bins of ``|accuracy - confidence|`` weighted by the fraction of
    examples in the bin, ``mce`` the largest such gap over the non-empty bins.
    """
    probs, labels = _check(probs, labels)
    confidence, correct, bins, n_bins = _confidence_bins(probs, labels, n_bins)
    count = np.bincount(bins, minlength=n_bins)
    safe = np.maximum(count, 1)
    acc = np.bincount(bins, weights=correct, minlength=n_bins) / safe
    conf = np.bincount(bins, weights=confidence, minlength=n_bins) / safe
    gap = np.abs(acc - conf)
    ece = float(np.sum(count / confidence.size * gap))
    mce = float(np.max(gap[count > 0]))
    return Reliability(ece, mce, count, acc, conf, np.linspace(0.0, 1.0, n_bins + 1))


def expected_calibration_error(probs, labels, n_bins: int = 15) -> float:
    """Expected (top-label) calibration error with ``n_bins`` equal-width bins."""
    return reliability(probs, labels, n_bins).ece


def maximum_calibration_error(probs, labels, n_bins: int = 15) -> float:
    """Maximum (top-label) calibration error: the largest gap over the non-empty bins."""
    return reliability(probs, labels, n_bins).mce


def brier_score(probs, labels) -> float:
    """Multi-class Brier score: the mean over rows of ``sum_k (probs[n, k] - [k == labels[n]])**2``.

    It is 0 for a confident correct prediction, 2 for a confident wrong one, and ``1 - 1/K``
    for the uniform distribution. With two classes it is twice the binary Brier score of the
    probability of class 1.
    """
    probs, labels = _check(probs, labels)
    onehot = np.zeros_like(probs)
    onehot[np.arange(labels.size), labels] = 1.0
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=-1)))


def _confidence_bins(probs, labels, n_bins):
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins}")
    n_bins = int(n_bins)
    confidence = probs.max(axis=-1)
    correct = (probs.argmax(axis=-1) == labels).astype(np.float64)
    bins = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    return confidence, correct, bins, n_bins


def _check_bootstrap(n_resamples, confidence=0.5):
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples}")
    return int(n_resamples)


def bootstrap_interval(
    statistic: Callable[..., float],
    *arrays,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``statistic(*arrays)``.

    Each resample draws ``N`` example indices with replacement (``N`` is the common length of
    the first axis of ``arrays``) and applies ``statistic`` to all arrays indexed with the same
    indices, so that paired quantities (probabilities and labels; two models on the same
    examples) stay paired. Returns the ``(1 - confidence)/2`` and ``(1 + confidence)/2``
    quantiles of the ``n_resamples`` values. The seed makes the interval reproducible.
    """
    if not arrays:
        raise ValueError("need at least one array to resample")
    n_resamples = _check_bootstrap(n_resamples, confidence)
    arrays = [np.asarray(a) for a in arrays]
    n = arrays[0].shape[0]
    if n == 0 or any(a.shape[:1] != (n,) for a in arrays):
        raise ValueError("all arrays need the same, nonzero length along their first axis")
    indices = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    values = np.array([statistic(*(a[idx] for a in arrays)) for idx in indices], dtype=np.float64)
    return percentile_interval(values, confidence)


def percentile_interval(values, confidence: float = 0.95) -> tuple[float, float]:
    """The ``(1 - confidence)/2`` and ``(1 + confidence)/2`` quantiles of bootstrap ``values``."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    low, high = np.quantile(np.asarray(values, dtype=np.float64),
                            [(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0])
    return float(low), float(high)


def bootstrap_metrics(
    probs,
    labels,
    losses=None,
    n_bins: int = 15,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """ECE, MCE, Brier score and mean loss on ``n_resamples`` bootstrap resamples of the examples.

    Draws the same example indices as :func:`bootstrap_interval` with the same ``seed`` (one
    row of ``N`` indices per resample) and returns a dict of arrays of shape
    ``(n_resamples,)``: ``"ece"``, ``"mce"``, ``"brier"`` and, when per-example ``losses``
    (e.g. the negative log-likelihoods) are given, ``"loss"``, their mean. Each resample is
    represented by the multiplicities of the examples, so all resamples are evaluated with a
    few matrix products. Pass the values to :func:`percentile_interval`.
    """
    probs, labels = _check(probs, labels)
    n_resamples = _check_bootstrap(n_resamples)
    confidence, correct, bins, n_bins = _confidence_bins(probs, labels, n_bins)
    n = labels.size
    indices = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    weights = np.zeros((n_resamples, n))
    np.add.at(weights, (np.repeat(np.arange(n_resamples), n), indices.ravel()), 1.0)

    in_bin = np.zeros((n, n_bins))
    in_bin[np.arange(n), bins] = 1.0
    count = weights @ in_bin
    safe = np.maximum(count, 1.0)
    gap = np.abs(weights @ (in_bin * correct[:, None]) - weights @ (in_bin * confidence[:, None])) / safe
    onehot = np.zeros_like(probs)
    onehot[np.arange(n), labels] = 1.0
    out = {
        "ece": np.sum(count * gap, axis=1) / n,
        "mce": np.max(np.where(count > 0, gap, -np.inf), axis=1),
        "brier": weights @ np.sum((probs - onehot) ** 2, axis=-1) / n,
    }
    if losses is not None:
        losses = np.asarray(losses, dtype=np.float64)
        if losses.shape != (n,):
            raise ValueError(f"losses must have shape ({n},), got {losses.shape}")
        out["loss"] = weights @ losses / n
    return out
