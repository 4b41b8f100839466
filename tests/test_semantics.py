"""Special values: every expnorm row of the semantics table of chapter 6, against closed forms.

Each case is one float32 row of three entries; the gradient of a vector-valued function is its
vector-Jacobian product with the cotangent ``W = (1, 2, 3)``. The expected values are derived by
hand from the rules in the docstrings (see book/06_masks_infinities_nan.ipynb):

* ``p = softmax(x)``; ``vjp_softmax(W) = p * (W - <p, W>)``;
* log-softmax: ``vjp(W) = sum over *finite* outputs i of W_i (e_i - p)`` (a -inf output is
  constant, so its derivative is 0);
* ``grad logsumexp = p``; ``grad cross-entropy = sum(y) p - y``;
* an empty row (all -inf or fully masked): softmax 0, log-softmax -inf, logsumexp -inf,
  gradients 0; ``+inf`` entries share the mass; NaN propagates; ``0 log 0 = 0``.
"""

import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import expnorm

INF, NAN, LOG2 = math.inf, math.nan, math.log(2.0)
W = np.array([1.0, 2.0, 3.0], np.float32)

# name -> (x, where)
CASES = {
    "-inf entry": ([0.0, 0.0, -INF], None),
    "all -inf": ([-INF, -INF, -INF], None),
    "where: none kept": ([1.0, 2.0, 3.0], [False, False, False]),
    "+inf entry": ([INF, 0.0, 0.0], None),
    "NaN entry": ([NAN, 0.0, 0.0], None),
    # beyond the table: two +inf entries share the mass equally
    "two +inf entries": ([INF, INF, 0.0], None),
}

ALL_NAN = [NAN, NAN, NAN]

# case -> (value, vjp with W)
SOFTMAX = {
    # p = (1/2, 1/2, 0), <p, W> = 3/2: p * (W - 3/2) = (-1/4, 1/4, 0)
    "-inf entry": ([0.5, 0.5, 0.0], [-0.25, 0.25, 0.0]),
    "all -inf": ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0]),
    "where: none kept": ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0]),
    # p = e_1, <p, W> = W_1 = 1: p * (W - 1) = 0
    "+inf entry": ([1.0, 0.0, 0.0], [0.0, 0.0, 0.0]),
    "NaN entry": (ALL_NAN, ALL_NAN),
    "two +inf entries": ([0.5, 0.5, 0.0], [-0.25, 0.25, 0.0]),
}

LOG_SOFTMAX = {
    # finite outputs 1, 2: 1 * (e_1 - p) + 2 * (e_2 - p) = (1, 2, 0) - 3 p = (-1/2, 1/2, 0)
    "-inf entry": ([-LOG2, -LOG2, -INF], [-0.5, 0.5, 0.0]),
    "all -inf": ([-INF, -INF, -INF], [0.0, 0.0, 0.0]),
    "where: none kept": ([-INF, -INF, -INF], [0.0, 0.0, 0.0]),
    # only output 1 is finite (log 1 = 0): 1 * (e_1 - e_1) = 0
    "+inf entry": ([0.0, -INF, -INF], [0.0, 0.0, 0.0]),
    "NaN entry": (ALL_NAN, ALL_NAN),
    # k = 2 entries at +inf return -log 2: (1, 2, 0) - 3 * (1/2, 1/2, 0)
    "two +inf entries": ([-LOG2, -LOG2, -INF], [-0.5, 0.5, 0.0]),
}

LOGSUMEXP = {
    "-inf entry": (LOG2, [0.5, 0.5, 0.0]),
    "all -inf": (-INF, [0.0, 0.0, 0.0]),
    "where: none kept": (-INF, [0.0, 0.0, 0.0]),
    "+inf entry": (INF, [1.0, 0.0, 0.0]),
    "NaN entry": (NAN, ALL_NAN),
    "two +inf entries": (INF, [0.5, 0.5, 0.0]),
}

# cross-entropy with probability targets: case -> (x, y, loss, gradient)
CROSS_ENTROPY = {
    # all target mass on the -inf class: -log 0 = +inf; gradient p - y = (1/2, 1/2, -1)
    "-inf entry": ([0.0, 0.0, -INF], [0.0, 0.0, 1.0], INF, [0.5, 0.5, -1.0]),
    # softmax of an empty row is 0: loss -log 0 = +inf, gradient 0 - y
    "all -inf": ([-INF, -INF, -INF], [1.0, 0.0, 0.0], INF, [-1.0, 0.0, 0.0]),
    # p = e_1 = y: loss -log 1 = 0, gradient 0
    "+inf entry": ([INF, 0.0, 0.0], [1.0, 0.0, 0.0], 0.0, [0.0, 0.0, 0.0]),
    "NaN entry": ([NAN, 0.0, 0.0], [1.0, 0.0, 0.0], NAN, ALL_NAN),
    # optax issue 896: 0 log 0 = 0, loss -log(1/2); gradient p - y = (-1/2, 1/2, 0)
    "-inf, target 0": ([0.0, 0.0, -INF], [1.0, 0.0, 0.0], LOG2, [-0.5, 0.5, 0.0]),
    # soft target (1/2, 1/2, 0): loss log 2, gradient p - y = 0
    "-inf, soft target 0": ([0.0, 0.0, -INF], [0.5, 0.5, 0.0], LOG2, [0.0, 0.0, 0.0]),
}


def value_and_vjp(fn, x, where):
    kw = {} if where is None else {"where": jnp.asarray(where)}
    x = jnp.asarray(x, jnp.float32)
    value, vjp = jax.vjp(lambda x: fn(x, **kw), x)
    (grad,) = vjp(jnp.ones_like(value) if value.ndim == 0 else jnp.asarray(W))
    return np.asarray(value), np.asarray(grad)


def check(actual, expected):
    """Equal to the closed form: NaN where NaN, the same infinities, exact zeros."""
    actual = np.asarray(actual, np.float64)
    expected = np.broadcast_to(np.asarray(expected, np.float64), actual.shape)
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(actual), np.isposinf(expected))
    np.testing.assert_array_equal(np.isneginf(actual), np.isneginf(expected))
    np.testing.assert_array_equal(actual == 0, expected == 0)  # zeros are exact
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("case", list(SOFTMAX))
def test_softmax(case):
    value, grad = value_and_vjp(expnorm.softmax, *CASES[case])
    check(value, SOFTMAX[case][0])
    check(grad, SOFTMAX[case][1])


@pytest.mark.parametrize("case", list(LOG_SOFTMAX))
def test_log_softmax(case):
    value, grad = value_and_vjp(expnorm.log_softmax, *CASES[case])
    check(value, LOG_SOFTMAX[case][0])
    check(grad, LOG_SOFTMAX[case][1])


@pytest.mark.parametrize("case", list(LOGSUMEXP))
def test_logsumexp(case):
    value, grad = value_and_vjp(expnorm.logsumexp, *CASES[case])
    assert value.shape == ()
    check(value, LOGSUMEXP[case][0])
    check(grad, LOGSUMEXP[case][1])


@pytest.mark.parametrize("case", list(CROSS_ENTROPY))
def test_softmax_cross_entropy(case):
    x, y, loss, grad = CROSS_ENTROPY[case]
    y = jnp.asarray(y, jnp.float32)
    value, g = value_and_vjp(lambda x: expnorm.softmax_cross_entropy(x, y), x, None)
    assert value.shape == ()
    check(value, loss)
    check(g, grad)


def test_cross_entropy_where_excludes_every_class_gives_zero():
    # optax's where= (issue 15): an example with no included class has loss 0 and gradient 0
    z = jnp.array([[1.0, 2.0, 3.0]])
    y = jnp.array([[0.0, 0.0, 1.0]])
    none = jnp.zeros((1, 3), bool)
    assert "where" in inspect.signature(expnorm.softmax_cross_entropy).parameters
    loss, grad = jax.value_and_grad(
        lambda z: expnorm.softmax_cross_entropy(z, y, where=none).sum())(z)
    assert float(loss) == 0.0 and not np.any(np.asarray(grad))


def test_masked_nan_is_ignored():
    # a NaN at a masked position takes no part: softmax of the kept (0, 0) is (1/2, 1/2)
    value, grad = value_and_vjp(expnorm.softmax, [NAN, 0.0, 0.0], [False, True, True])
    check(value, [0.0, 0.5, 0.5])
    # p = (0, 1/2, 1/2), <p, W> = 5/2: p * (W - 5/2) = (0, -1/4, 1/4)
    check(grad, [0.0, -0.25, 0.25])


def test_float16_finite_mask_becomes_empty_row():
    # -1e6 does not exist in float16 (max 65504): the "finite" mask is -inf, the row is empty
    masked = jnp.where(jnp.zeros(3, bool), jnp.zeros(3, jnp.float16), -1e6)
    assert masked.dtype == jnp.float16 and bool(jnp.all(jnp.isneginf(masked)))
    value = expnorm.softmax(masked)
    assert value.dtype == jnp.float16
    check(value, [0.0, 0.0, 0.0])
    check(expnorm.logsumexp(masked), -INF)


def test_empty_row_in_a_batch_leaves_other_rows_alone():
    # row 0: softmax(2, 1, -inf) = (s, 1 - s, 0) with s = 1 / (1 + e^-1); row 1: empty
    x = jnp.array([[2.0, 1.0, -INF], [-INF, -INF, -INF]])
    s = 1.0 / (1.0 + math.exp(-1.0))
    check(expnorm.softmax(x), [[s, 1.0 - s, 0.0], [0.0, 0.0, 0.0]])
    grad = jax.grad(lambda x: jnp.sum(expnorm.softmax(x) * jnp.asarray(W)))(x)
    # row 0: p * (W - <p, W>) with <p, W> = s + 2 (1 - s) = 2 - s
    check(grad, [[s * (1.0 - (2.0 - s)), (1.0 - s) * (2.0 - (2.0 - s)), 0.0], [0.0, 0.0, 0.0]])
