"""Bad input gives clear errors that name the problem (and documented fallbacks under jit)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import expnorm

X = np.arange(12, dtype=np.float32).reshape(3, 4) / 4.0  # one shape everywhere: fewer compiles
LABELS = np.array([0, 3, 1])
Y = np.full((3, 4), 0.25, np.float32)

# Every public function, called with the keyword arguments under test.
FUNCS = {
    "softmax": lambda x, **kw: expnorm.softmax(x, **kw),
    "log_softmax": lambda x, **kw: expnorm.log_softmax(x, **kw),
    "logsumexp": lambda x, **kw: expnorm.logsumexp(x, **kw),
    "ce_probs": lambda x, **kw: expnorm.softmax_cross_entropy(x, Y, **kw),
    "ce_labels": lambda x, **kw: expnorm.softmax_cross_entropy_with_integer_labels(x, LABELS,
                                                                                   **kw),
}
AXIS_FUNCS = dict(FUNCS, naive_softmax=lambda x, **kw: expnorm.naive_softmax(x, **kw),
                  linear_normalize=lambda x, **kw: expnorm.linear_normalize(x, **kw))


# --------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("name", list(AXIS_FUNCS))
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_complex_input_raises_type_error(name, dtype):
    with pytest.raises(TypeError, match="complex"):
        AXIS_FUNCS[name](X.astype(dtype))


def test_complex_targets_and_weights_raise_type_error():
    with pytest.raises(TypeError, match="complex"):
        expnorm.softmax_cross_entropy(X, Y.astype(np.complex64))
    with pytest.raises(TypeError, match="complex"):
        expnorm.logsumexp(X, b=np.ones((3, 4), np.complex64))


def test_complex_error_names_the_argument():
    with pytest.raises(TypeError, match=r"logits has complex dtype"):
        expnorm.softmax_cross_entropy(X.astype(np.complex64), Y)
    with pytest.raises(TypeError, match=r"labels has complex dtype"):
        expnorm.softmax_cross_entropy(X, Y.astype(np.complex64))
    with pytest.raises(TypeError, match=r"\bb has complex dtype"):
        expnorm.logsumexp(X, b=np.ones(4, np.complex64))


def test_non_numeric_input_raises_type_error():
    with pytest.raises(TypeError):
        expnorm.softmax(np.array(["a", "b"]))


# --------------------------------------------------------------------------- axes


@pytest.mark.parametrize("name", list(AXIS_FUNCS))
@pytest.mark.parametrize("axis", [2, -3, 7])
def test_axis_out_of_range(name, axis):
    with pytest.raises(ValueError, match="out of range"):
        AXIS_FUNCS[name](X, axis=axis)


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp", "ce_probs",
                                  "naive_softmax", "linear_normalize"])
def test_axis_out_of_range_inside_tuple(name):
    with pytest.raises(ValueError, match="out of range"):
        AXIS_FUNCS[name](X, axis=(0, 5))


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp", "ce_probs",
                                  "naive_softmax", "linear_normalize"])
@pytest.mark.parametrize("axis", [(1, 1), (0, -2), (-1, 1)])
def test_repeated_axis(name, axis):
    with pytest.raises(ValueError, match="repeats an axis"):
        AXIS_FUNCS[name](X, axis=axis)


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
@pytest.mark.parametrize("axis", [1.0, "1", True, (0, 1.0)])
def test_non_integer_axis(name, axis):
    with pytest.raises(TypeError, match="axis must be an int"):
        FUNCS[name](X, axis=axis)


@pytest.mark.parametrize("axis", [[1], None, 1.0])
def test_integer_labels_axis_must_be_an_int_or_a_tuple(axis):
    with pytest.raises(TypeError, match="axis must be an int or a tuple of ints"):
        expnorm.softmax_cross_entropy_with_integer_labels(X, LABELS, axis=axis)


def test_tuple_axis_for_integer_labels_as_optax():
    """A tuple axis: the classes are a slice over those axes (in the order given), a label a
    flat C-order index into it (optax >= 0.2.4). Reference: the loss computed by hand."""
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7.0
    labels = np.array([5, 11])
    for axis, perm in (((1, 2), (0, 1, 2)), ((2, 1), (0, 2, 1))):
        got = np.asarray(expnorm.softmax_cross_entropy_with_integer_labels(x, labels, axis=axis))
        flat = x.transpose(perm).reshape(2, 12).astype(np.float64)
        want = np.log(np.exp(flat).sum(-1)) - flat[np.arange(2), labels]
        np.testing.assert_allclose(got, want, rtol=1e-6)
    one = expnorm.softmax_cross_entropy_with_integer_labels(X, LABELS, axis=(1,))
    np.testing.assert_array_equal(one, expnorm.softmax_cross_entropy_with_integer_labels(X, LABELS))
    with pytest.raises(ValueError, match="repeats"):
        expnorm.softmax_cross_entropy_with_integer_labels(x, labels, axis=(1, 1))


def test_axis_errors_fire_under_jit_too():
    with pytest.raises(ValueError, match="out of range"):
        jax.jit(lambda x: expnorm.softmax(x, axis=3))(X)
    with pytest.raises(ValueError, match="repeats an axis"):
        jax.jit(lambda x: expnorm.logsumexp(x, axis=(0, 0)))(X)
    with pytest.raises(TypeError, match="complex"):
        jax.jit(expnorm.log_softmax)(X.astype(np.complex64))


# --------------------------------------------------------------------------- where / b


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
@pytest.mark.parametrize("where", [np.ones((3, 4), np.int32), np.ones((3, 4), np.float32),
                                   [[1, 0, 1, 1]] * 3])
def test_non_boolean_where(name, where):
    with pytest.raises(TypeError, match="boolean"):
        FUNCS[name](X, where=where)


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
def test_where_not_broadcastable(name):
    with pytest.raises(ValueError, match=r"where of shape \(3, 3\) does not broadcast"):
        FUNCS[name](X, where=np.ones((3, 3), bool))


def test_b_not_broadcastable():
    with pytest.raises(ValueError, match=r"b of shape \(5,\) does not broadcast"):
        expnorm.logsumexp(X, b=np.ones(5, np.float32))


# --------------------------------------------------------------------------- labels and targets


@pytest.mark.parametrize("labels, axis", [(np.zeros((3, 1), int), -1), (np.zeros(4, int), -1),
                                          (np.zeros((3, 4), int), -1), (np.zeros(3, int), 0),
                                          (np.array(0), -1)])
def test_labels_with_wrong_shape(labels, axis):
    with pytest.raises(ValueError, match=r"labels have shape .* need labels of shape"):
        expnorm.softmax_cross_entropy_with_integer_labels(X, labels, axis=axis)


def test_labels_shape_message_gives_both_shapes():
    with pytest.raises(ValueError, match=r"\(4,\).*\(3, 4\).*\(3,\)"):
        expnorm.softmax_cross_entropy_with_integer_labels(X, np.zeros(4, int))


@pytest.mark.parametrize("labels", [np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0, 2.0],
                                                                         np.float32),
                                    np.array([True, False, True])])
def test_non_integer_labels(labels):
    with pytest.raises(TypeError, match="integer dtype"):
        expnorm.softmax_cross_entropy_with_integer_labels(X, labels)


@pytest.mark.parametrize("labels, bad", [([0, -1, 2], "-1"), ([0, 4, 2], "4"),
                                         ([-7, 1, 9], "-7"), ([0, 1, 100], "100")])
def test_concrete_labels_out_of_range(labels, bad):
    with pytest.raises(ValueError, match=rf"label {bad} is out of range for 4 classes"):
        expnorm.softmax_cross_entropy_with_integer_labels(X, np.array(labels))


def test_concrete_labels_out_of_range_other_axis():
    with pytest.raises(ValueError, match="out of range for 3 classes"):
        expnorm.softmax_cross_entropy_with_integer_labels(X, np.array([0, 1, 2, 3]), axis=0)


_ce_labels_jit = jax.jit(expnorm.softmax_cross_entropy_with_integer_labels)


def test_out_of_range_labels_under_jit_give_nan_loss():
    # Documented: under jit labels cannot be checked; out-of-range labels give NaN.
    loss = np.asarray(_ce_labels_jit(X, jnp.array([-1, 4, 2])))
    assert np.isnan(loss[0]) and np.isnan(loss[1])
    want = np.log(np.exp(X[2].astype(np.float64)).sum()) - X[2, 2]
    np.testing.assert_allclose(loss[2], want, rtol=1e-6)


def test_out_of_range_labels_under_jit_give_zero_gradient():
    # Documented: "a label outside [0, K) gives a NaN loss (and a zero gradient)".
    g = jax.jit(jax.grad(lambda x, l: jnp.sum(
        expnorm.softmax_cross_entropy_with_integer_labels(x, l))))(X, jnp.array([-1, 4, 2]))
    g = np.asarray(g)
    np.testing.assert_array_equal(g[:2], 0.0)
    p = np.exp(X[2].astype(np.float64))
    p /= p.sum()
    np.testing.assert_allclose(g[2], p - np.eye(4)[2], rtol=1e-6, atol=1e-7)


def test_constant_labels_under_jit_are_checked_or_fall_back():
    # Labels closed over as a constant inside a jitted function: either the concrete check
    # applies (ValueError for bad labels) or the jit fallback does; it must not crash.
    good = jnp.array([0, 3, 1])
    loss = jax.jit(lambda x: expnorm.softmax_cross_entropy_with_integer_labels(x, good))(X)
    want = np.log(np.exp(X.astype(np.float64)).sum(-1)) - X[np.arange(3), good]
    np.testing.assert_allclose(loss, want, rtol=1e-6)


def test_labels_not_broadcastable():
    with pytest.raises(ValueError, match=r"labels of shape \(3,\) do not broadcast to logits "
                                         r"of shape \(3, 4\)"):
        expnorm.softmax_cross_entropy(X, np.ones(3, np.float32))
    with pytest.raises(ValueError, match="do not broadcast"):
        expnorm.softmax_cross_entropy(X, np.ones((2, 4), np.float32))


# --------------------------------------------------------------------------- temperature


@pytest.mark.parametrize("name", list(FUNCS))
@pytest.mark.parametrize("temperature", [0.0, -1.0, -0.0, np.inf, -np.inf, np.nan])
def test_bad_temperature(name, temperature):
    with pytest.raises(ValueError, match="temperature must be positive and finite"):
        FUNCS[name](X, temperature=temperature)


@pytest.mark.parametrize("name", list(FUNCS))
def test_non_scalar_temperature(name):
    with pytest.raises(ValueError, match="temperature must be a scalar"):
        FUNCS[name](X, temperature=np.array([1.0, 2.0]))


def test_bad_temperature_as_jax_array():
    with pytest.raises(ValueError, match="positive and finite"):
        expnorm.softmax(X, temperature=jnp.float32(0.0))
