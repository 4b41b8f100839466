"""Unit tests of values, shapes and dtypes on ordinary (finite) inputs.

References are jax.nn, jax.scipy.special, scipy.special and optax, or closed forms evaluated
in float64 NumPy. Tolerances follow the dtype: expnorm claims 1 ulp (float64: 4 ulp), the
references themselves may be a few ulp off, so comparisons with a float64 reference use a
small multiple of the output's epsilon.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import mpmath
import scipy.special as sp

import expnorm

RNG_SEED = 20240607

# Compiled wrappers: eager op-by-op dispatch recompiles every primitive for every new shape,
# which is slow; one jit per (function, static arguments, shape) keeps the suite fast. Eager
# calls are still exercised below (lists, integer inputs, jit-vs-eager, error paths).
softmax = jax.jit(expnorm.softmax, static_argnames=("axis",))
log_softmax = jax.jit(expnorm.log_softmax, static_argnames=("axis",))
logsumexp = jax.jit(expnorm.logsumexp, static_argnames=("axis", "keepdims", "return_sign"))
ce_labels = jax.jit(expnorm.softmax_cross_entropy_with_integer_labels, static_argnames=("axis",))
ce_probs = jax.jit(expnorm.softmax_cross_entropy, static_argnames=("axis",))

# Relative tolerance against an accurate float64 reference (a couple of ulp of the output).
RTOL = {
    jnp.float16: 2.0 * 2.0**-10,
    jnp.bfloat16: 2.0 * 2.0**-7,
    jnp.float32: 4.0 * 2.0**-23,
    jnp.float64: 16.0 * 2.0**-52,
}
# Tiny absolute slack for results that are (nearly) zero or subnormal: XLA on CPU flushes
# float32 / float64 subnormals to zero (jnp.exp(-720.0) is 0.0 in float64), a platform property.
ATOL = {jnp.float16: 1e-7, jnp.bfloat16: 2e-38, jnp.float32: 2e-38, jnp.float64: 3e-308}

# int, negative int, tuple (with a negative entry, unsorted), None
AXES_3D = [1, -2, (-1, 0), None]


def rng():
    return np.random.default_rng(RNG_SEED)


def randn(shape, scale=3.0, seed=0):
    return (np.random.default_rng(RNG_SEED + seed).normal(size=shape) * scale).astype(np.float32)


def _mp_rows(fn, x, axis=-1):
    """Apply a 1-D mpmath reference ``fn`` along ``axis`` of a float64 array (50 digits)."""
    x = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    out = np.empty(x.shape)
    with mpmath.workdps(50):
        for idx in np.ndindex(x.shape[:-1]):
            out[idx] = fn([mpmath.mpf(float(v)) for v in x[idx]])
    return np.moveaxis(out, -1, axis)


def _mp_lse(row):
    return float(mpmath.log(mpmath.fsum(mpmath.exp(v) for v in row)))


def mp_logsumexp(x, axis=-1):
    x = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    out = np.empty(x.shape[:-1])
    with mpmath.workdps(50):
        for idx in np.ndindex(x.shape[:-1]):
            out[idx] = _mp_lse([mpmath.mpf(float(v)) for v in x[idx]])
    return out


def mp_softmax(x, axis=-1):
    def row(r):
        s = mpmath.fsum(mpmath.exp(v) for v in r)
        return [float(mpmath.exp(v) / s) for v in r]
    return _mp_rows(row, x, axis)


def mp_log_softmax(x, axis=-1):
    def row(r):
        lse = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in r))
        return [float(v - lse) for v in r]
    return _mp_rows(row, x, axis)


def f64(a):
    return np.asarray(a, dtype=np.float64)


def close(got, want, dtype, rtol_mult=1.0, atol=None):
    got = jnp.asarray(got)
    if got.dtype in (jnp.float16, jnp.bfloat16):
        got = got.astype(jnp.float32)  # exact
    got = np.asarray(got, dtype=np.float64)
    np.testing.assert_allclose(got, f64(want), rtol=RTOL[dtype] * rtol_mult,
                               atol=ATOL[dtype] if atol is None else atol)


# --------------------------------------------------------------------------- softmax


@pytest.mark.parametrize("axis", AXES_3D)
def test_softmax_matches_scipy_and_jax_for_every_axis_form(axis):
    x = randn((3, 4, 5))
    got = softmax(x, axis=axis)
    assert got.shape == x.shape and got.dtype == jnp.float32
    close(got, sp.softmax(f64(x), axis=axis), jnp.float32)
    # jax.nn.softmax is itself a few ulp off in float32.
    np.testing.assert_allclose(got, jax.nn.softmax(x, axis=axis), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("axis", AXES_3D)
def test_log_softmax_matches_scipy_and_jax_for_every_axis_form(axis):
    x = randn((3, 4, 5), seed=1)
    got = log_softmax(x, axis=axis)
    assert got.shape == x.shape and got.dtype == jnp.float32
    close(got, sp.log_softmax(f64(x), axis=axis), jnp.float32)
    np.testing.assert_allclose(got, jax.nn.log_softmax(x, axis=axis), rtol=1e-5, atol=1e-6)


def test_softmax_default_axis_is_last():
    x = randn((3, 4), seed=2)
    close(softmax(x), sp.softmax(f64(x), axis=-1), jnp.float32)
    close(log_softmax(x), sp.log_softmax(f64(x), axis=-1), jnp.float32)
    # and not the first axis
    assert not np.allclose(softmax(x), sp.softmax(f64(x), axis=0))


def test_softmax_rows_sum_to_one_along_chosen_axes():
    x = randn((3, 4, 5), seed=3)
    p = np.asarray(softmax(x, axis=(0, 2)), dtype=np.float64)
    np.testing.assert_allclose(p.sum(axis=(0, 2)), np.ones(4), rtol=0, atol=5 * 2.0**-23)


def test_softmax_hand_values():
    # softmax([0, log 3]) = [1/4, 3/4]; softmax of equal entries is uniform.
    got = softmax(jnp.array([0.0, np.log(3.0)], jnp.float32))
    close(got, [0.25, 0.75], jnp.float32)
    np.testing.assert_array_equal(softmax(jnp.full((5,), 7.0)), np.full(5, 0.2, np.float32))
    np.testing.assert_array_equal(softmax(jnp.array([[3.0]])), [[1.0]])
    np.testing.assert_array_equal(log_softmax(jnp.array([[3.0]])), [[0.0]])


def test_softmax_where_matches_jax_on_partially_masked_rows():
    x = randn((3, 4), seed=4)
    mask = np.array([[1, 0, 1, 1],
                     [1, 1, 1, 1],
                     [0, 0, 1, 0]], bool)
    got = softmax(x, where=mask)
    np.testing.assert_allclose(got, jax.nn.softmax(x, where=mask), rtol=1e-5, atol=1e-7)
    # reference by hand: softmax of the kept entries only, zeros elsewhere
    for r in range(3):
        want = np.zeros(4)
        want[mask[r]] = sp.softmax(f64(x[r, mask[r]]))
        close(got[r], want, jnp.float32)
    np.testing.assert_array_equal(np.asarray(got)[~mask], 0.0)


def test_softmax_where_broadcasts():
    x = randn((3, 4), seed=5)
    mask = np.array([True, False, True, True])
    got = softmax(x, where=mask)
    want = np.zeros((3, 4))
    want[:, mask] = sp.softmax(f64(x[:, mask]), axis=-1)
    close(got, want, jnp.float32)


def test_log_softmax_where():
    x = randn((3, 4), seed=6)
    mask = np.array([[1, 1, 0, 1], [1, 1, 1, 1], [0, 0, 1, 0]], bool)
    got = np.asarray(log_softmax(x, where=mask))
    for r in range(3):
        close(got[r, mask[r]], sp.log_softmax(f64(x[r, mask[r]])), jnp.float32)
    assert np.all(np.isneginf(got[~mask]))
    np.testing.assert_allclose(got[mask], np.asarray(jax.nn.log_softmax(x, where=mask))[mask],
                               rtol=1e-5, atol=1e-6)


def test_where_with_tuple_axis():
    x = randn((2, 3, 4), seed=7)
    mask = rng().random((2, 3, 4)) < 0.7
    mask[:, 0, 0] = True  # no empty rows
    got = np.asarray(softmax(x, axis=(0, 2), where=mask), dtype=np.float64)
    for j in range(3):
        m = mask[:, j, :]
        want = np.zeros((2, 4))
        want[m] = sp.softmax(f64(x[:, j, :][m]))
        close(got[:, j, :], want, jnp.float32)


@pytest.mark.parametrize("temperature", [0.25, 1.0, 3.0, 100.0])
def test_softmax_temperature(temperature):
    x = randn((3, 4), seed=8)
    got = softmax(x, temperature=temperature)
    close(got, sp.softmax(f64(x) / temperature, axis=-1), jnp.float32)
    np.testing.assert_allclose(got, jax.nn.softmax(x / np.float32(temperature)),
                               rtol=1e-5, atol=1e-7)
    got_log = log_softmax(x, temperature=temperature)
    close(got_log, sp.log_softmax(f64(x) / temperature, axis=-1), jnp.float32)
    assert got.dtype == got_log.dtype == jnp.float32


def test_temperature_limits_of_softmax():
    x = jnp.array([1.0, 3.0, 2.0])
    # small T -> one-hot argmax; large T -> uniform
    close(softmax(x, temperature=1e-3), [0.0, 1.0, 0.0], jnp.float32)
    np.testing.assert_allclose(softmax(x, temperature=1e6), np.full(3, 1 / 3), rtol=1e-5)


def test_temperature_as_jax_scalar_and_traced():
    x = randn((3, 4), seed=9)
    want = sp.softmax(f64(x) / 2.0, axis=-1)
    close(softmax(x, temperature=jnp.float32(2.0)), want, jnp.float32)
    f = jax.jit(lambda x, t: softmax(x, temperature=t))
    close(f(x, 2.0), want, jnp.float32)


# --------------------------------------------------------------------------- logsumexp


@pytest.mark.parametrize("axis, keepdims", [(a, False) for a in AXES_3D]
                         + [((0, 2), True), (None, True)])
def test_logsumexp_matches_scipy_and_jax(axis, keepdims):
    x = randn((3, 4, 5), seed=10)
    got = logsumexp(x, axis=axis, keepdims=keepdims)
    want = sp.logsumexp(f64(x), axis=axis, keepdims=keepdims)
    assert got.shape == np.shape(want)
    assert got.dtype == jnp.float32
    close(got, want, jnp.float32)
    ref = jax.scipy.special.logsumexp(x, axis=axis, keepdims=keepdims)
    assert ref.shape == got.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_logsumexp_default_axis_reduces_everything():
    x = randn((3, 4), seed=11)
    got = logsumexp(x)
    assert got.shape == ()
    close(got, sp.logsumexp(f64(x)), jnp.float32)
    got_k = logsumexp(x, keepdims=True)
    assert got_k.shape == (1, 1)


def test_logsumexp_hand_values():
    # log(e^0 + e^0) = log 2 ; LSE of one entry is the entry.
    close(logsumexp(jnp.zeros(2)), np.log(2.0), jnp.float32)
    close(logsumexp(jnp.zeros(1000)), np.log(1000.0), jnp.float32)
    assert float(logsumexp(jnp.array([-3.5]))) == -3.5
    close(logsumexp(jnp.array([1e4, 1e4])), 1e4 + np.log(2.0), jnp.float32)


def test_logsumexp_positive_b_matches_scipy():
    x = randn((3, 4), seed=12)
    b = np.random.default_rng(1).uniform(0.1, 3.0, size=(3, 4)).astype(np.float32)
    got = logsumexp(x, axis=1, b=b)
    close(got, sp.logsumexp(f64(x), axis=1, b=f64(b)), jnp.float32)
    np.testing.assert_allclose(got, jax.scipy.special.logsumexp(x, axis=1, b=b), rtol=1e-5)


def test_logsumexp_b_broadcasts_and_zero_weights_drop_entries():
    x = randn((3, 4), seed=13)
    b = np.array([1.0, 0.0, 2.0, 0.5], np.float32)
    got = logsumexp(x, axis=-1, b=b)
    close(got, sp.logsumexp(f64(x), axis=-1, b=f64(b)), jnp.float32)
    # a huge entry with weight 0 does not swamp the others
    got = logsumexp(jnp.array([1e30, 0.0, 0.0]), b=jnp.array([0.0, 1.0, 1.0]))
    close(got, np.log(2.0), jnp.float32)


def test_logsumexp_negative_b_with_return_sign_matches_scipy():
    x = randn((3, 4), seed=14)
    b = np.random.default_rng(2).uniform(-2.0, 2.0, size=(3, 4)).astype(np.float32)
    got, sign = logsumexp(x, axis=1, b=b, return_sign=True)
    want, want_sign = sp.logsumexp(f64(x), axis=1, b=f64(b), return_sign=True)
    assert np.any(want_sign < 0) and np.any(want_sign > 0)  # the test covers both signs
    np.testing.assert_array_equal(sign, want_sign)
    # accuracy is relative to sum |b| e^x when the sum cancels
    scale = sp.logsumexp(f64(x), axis=1, b=np.abs(f64(b)))
    np.testing.assert_allclose(np.exp(f64(got)) * want_sign, np.exp(want) * want_sign,
                               rtol=0, atol=float(np.max(np.exp(scale))) * 1e-6)
    assert got.dtype == sign.dtype == jnp.float32


def test_logsumexp_negative_sum_without_return_sign_is_nan():
    got = logsumexp(jnp.array([1.0, 2.0]), b=jnp.array([1.0, -2.0]))
    want = sp.logsumexp([1.0, 2.0], b=[1.0, -2.0])
    assert np.isnan(want) and np.isnan(float(got))
    # hand value with return_sign: log|e - 2 e^2| = log(2e^2 - e), sign -1
    lse, sign = logsumexp(jnp.array([1.0, 2.0]), b=jnp.array([1.0, -2.0]),
                                  return_sign=True)
    close(lse, np.log(2 * np.e**2 - np.e), jnp.float32)
    assert float(sign) == -1.0


def test_logsumexp_return_sign_without_b_is_one():
    x = randn((3, 4), seed=15)
    lse, sign = logsumexp(x, axis=0, return_sign=True)
    np.testing.assert_array_equal(sign, np.ones(4))
    close(lse, sp.logsumexp(f64(x), axis=0), jnp.float32)


def test_logsumexp_where_matches_jax():
    x = randn((3, 4), seed=16)
    mask = np.random.default_rng(3).random((3, 4)) < 0.6
    mask[:, 2] = True
    got = logsumexp(x, axis=1, where=mask)
    np.testing.assert_allclose(got, jax.scipy.special.logsumexp(x, axis=1, where=mask),
                               rtol=1e-5, atol=1e-6)
    want = [sp.logsumexp(f64(x[r, mask[r]])) for r in range(3)]
    close(got, want, jnp.float32)


def test_logsumexp_where_and_b_together():
    x = randn((6,), seed=17)
    b = np.linspace(0.5, 2.0, 6).astype(np.float32)
    mask = np.array([1, 0, 1, 1, 0, 1], bool)
    got = logsumexp(x, b=b, where=mask)
    close(got, sp.logsumexp(f64(x[mask]), b=f64(b[mask])), jnp.float32)


@pytest.mark.parametrize("temperature", [0.1, 0.5, 2.0, 50.0])
def test_logsumexp_temperature(temperature):
    x = randn((3, 4), seed=18)
    got = logsumexp(x, axis=-1, temperature=temperature)
    want = temperature * sp.logsumexp(f64(x) / temperature, axis=-1)
    close(got, want, jnp.float32)
    assert got.dtype == jnp.float32


def test_logsumexp_temperature_with_b_and_sign():
    x = jnp.array([1.0, 2.0, 0.5])
    b = jnp.array([1.0, -3.0, 1.0])
    T = 2.0
    got, sign = logsumexp(x, b=b, return_sign=True, temperature=T)
    want, want_sign = sp.logsumexp(np.array([1.0, 2.0, 0.5]) / T, b=[1.0, -3.0, 1.0],
                                   return_sign=True)
    close(got, T * want, jnp.float32)
    assert float(sign) == want_sign == -1.0


def test_logsumexp_accuracy_claim_one_dominant_entry():
    # Docstring: LSE([0, -30, -30]) in float32 is 1.87e-13 (jax returns 0).
    got = logsumexp(jnp.array([0.0, -30.0, -30.0], jnp.float32))
    want = np.log1p(2.0 * np.exp(-30.0))
    close(got, want, jnp.float32)
    assert float(got) > 0.0


def test_log_softmax_accuracy_claim_one_dominant_entry():
    got = log_softmax(jnp.array([0.0, -20.0], jnp.float32))
    want = np.array([-np.log1p(np.exp(-20.0)), -20.0 - np.log1p(np.exp(-20.0))])
    close(got, want, jnp.float32)
    assert float(got[0]) < 0.0


# --------------------------------------------------------------------------- dtypes

DTYPES = [jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64]


def _cast_input(x, dtype):
    return jnp.asarray(np.asarray(x, np.float32)).astype(dtype)


def _exact64(xd):
    """The exact values of the (already rounded) low-precision input, in float64."""
    return np.asarray(jnp.asarray(xd).astype(jnp.float32), np.float64) if xd.dtype != jnp.float64 \
        else np.asarray(xd)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_family_dtypes(dtype):
    with jax.enable_x64(dtype == jnp.float64):
        x = randn((3, 4), scale=4.0, seed=19)
        if dtype == jnp.float64:
            xd = jnp.asarray(np.random.default_rng(4).normal(size=(3, 4)) * 4.0)
        else:
            xd = _cast_input(x, dtype)
        assert xd.dtype == dtype
        xe = _exact64(xd)

        p = softmax(xd)
        assert p.dtype == dtype and p.shape == xd.shape
        close(p, mp_softmax(xe), dtype)  # 50-digit reference

        ls = log_softmax(xd)
        assert ls.dtype == dtype
        close(ls, mp_log_softmax(xe), dtype)

        lse = logsumexp(xd, axis=-1)
        assert lse.dtype == dtype and lse.shape == (3,)
        close(lse, mp_logsumexp(xe), dtype)

        lse_b, sign = logsumexp(xd, axis=-1, b=jnp.full(xd.shape, 0.5, dtype),
                                        return_sign=True)
        assert lse_b.dtype == sign.dtype == dtype
        close(lse_b, mp_logsumexp(xe) + np.log(0.5), dtype)

        pt = softmax(xd, temperature=2.0)
        assert pt.dtype == dtype
        close(pt, mp_softmax(xe / 2.0), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_dtypes(dtype):
    with jax.enable_x64(dtype == jnp.float64):
        xd = _cast_input(randn((3, 4), seed=20), dtype)
        xe = _exact64(xd)
        labels = np.array([0, 3, 2])
        loss = ce_labels(xd, labels)
        assert loss.dtype == dtype and loss.shape == (3,)
        want = -sp.log_softmax(xe, axis=-1)[np.arange(3), labels]
        close(loss, want, dtype)

        y = np.random.default_rng(5).dirichlet(np.ones(4), size=3)
        yd = jnp.asarray(y).astype(dtype)
        loss2 = ce_probs(xd, yd)
        assert loss2.dtype == dtype and loss2.shape == (3,)
        want2 = -np.sum(_exact64(yd) * sp.log_softmax(xe, axis=-1), axis=-1)
        close(loss2, want2, dtype, rtol_mult=2.0)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_low_precision_does_not_overflow_in_intermediates(dtype):
    # exp(60000) overflows float16; expnorm works in float64 internally.
    xd = jnp.array([60000.0, 59999.0], dtype)
    xe = _exact64(xd)
    close(softmax(xd), sp.softmax(xe), dtype)
    close(logsumexp(xd), sp.logsumexp(xe), dtype)


def test_float64_input_without_x64_is_float32_and_with_x64_is_float64():
    x = np.array([1.0, 2.0, 3.0])  # numpy float64
    assert softmax(x).dtype == jnp.float32  # x64 off: JAX canonicalizes
    with jax.enable_x64(True):
        p = softmax(x)
        assert p.dtype == jnp.float64
        close(p, sp.softmax(x), jnp.float64)
    assert softmax(jnp.ones(3)).dtype == jnp.float32  # context did not leak


def test_float64_accuracy_on_wide_range():
    with jax.enable_x64(True):
        x = np.random.default_rng(6).uniform(-700, 700, size=(3, 20))
        np.testing.assert_array_max_ulp(np.asarray(logsumexp(x, axis=1)), mp_logsumexp(x, axis=1),
                                        maxulp=4)
        p, want = np.asarray(softmax(x, axis=1)), mp_softmax(x, axis=1)
        normal = want > np.finfo(np.float64).tiny
        np.testing.assert_array_max_ulp(p[normal], want[normal], maxulp=4)
        np.testing.assert_allclose(p[~normal], want[~normal], rtol=0, atol=3e-308)  # FTZ


@pytest.mark.parametrize("fn", [expnorm.softmax, expnorm.log_softmax, expnorm.logsumexp,
                                expnorm.naive_softmax, expnorm.linear_normalize])
@pytest.mark.parametrize("int_dtype", [np.int32, np.int8, np.uint8, np.bool_])
def test_integer_and_bool_input_is_converted_to_float(fn, int_dtype):
    xi = np.array([[1, 0, 1, 1], [0, 1, 1, 0], [1, 1, 1, 1]], dtype=int_dtype)
    got = fn(xi)
    assert got.dtype == jnp.float32
    want = fn(jnp.asarray(xi.astype(np.float32)))
    np.testing.assert_array_equal(got, want)


def test_integer_input_values():
    xi = np.arange(12).reshape(3, 4) - 5
    got = expnorm.softmax(jnp.asarray(xi))
    assert got.dtype == jnp.float32
    close(got, sp.softmax(f64(xi), axis=-1), jnp.float32)
    got = expnorm.logsumexp(xi.tolist())
    close(got, sp.logsumexp(f64(xi)), jnp.float32)
    with jax.enable_x64(True):
        assert softmax(jnp.asarray(xi)).dtype == jnp.float64


def test_python_list_input():
    x = randn((3, 4), seed=31)
    close(expnorm.softmax(x.tolist()), sp.softmax(f64(x), axis=-1), jnp.float32)
    close(expnorm.log_softmax(x.tolist()), sp.log_softmax(f64(x), axis=-1), jnp.float32)
    close(expnorm.logsumexp(tuple(x[0].tolist())), sp.logsumexp(f64(x[0])), jnp.float32)


# --------------------------------------------------------------------------- cross-entropy


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_integer_labels_cross_entropy_matches_optax(axis):
    x = randn((3, 4, 5), seed=21)
    k = x.shape[axis]
    label_shape = tuple(s for i, s in enumerate(x.shape) if i != axis % 3)
    labels = np.random.default_rng(7).integers(0, k, size=label_shape)
    got = ce_labels(x, labels, axis=axis)
    assert got.shape == label_shape and got.dtype == jnp.float32
    ref = optax.softmax_cross_entropy_with_integer_labels(x, labels, axis=axis)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    ls = sp.log_softmax(f64(x), axis=axis)
    want = -np.squeeze(np.take_along_axis(ls, np.expand_dims(labels, axis), axis=axis), axis)
    close(got, want, jnp.float32)


@pytest.mark.parametrize("axis", [-1, 0, (1, 2)])
def test_probability_cross_entropy_matches_optax(axis):
    x = randn((3, 4, 5), seed=22)
    y = np.random.default_rng(8).random((3, 4, 5)).astype(np.float32)
    y = y / y.sum(axis=axis, keepdims=True)
    got = ce_probs(x, y, axis=axis)
    ref = optax.softmax_cross_entropy(x, y, axis=axis)
    assert got.shape == ref.shape and got.dtype == jnp.float32
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    want = -np.sum(f64(y) * sp.log_softmax(f64(x), axis=axis), axis=axis)
    close(got, want, jnp.float32, rtol_mult=2.0)


def test_probability_cross_entropy_unnormalized_weights_and_broadcast_targets():
    x = randn((3, 4), seed=23)
    y = np.array([0.0, 2.0, 0.5, 1.0], np.float32)  # broadcast over rows, sums to 3.5
    got = ce_probs(x, y)
    want = -np.sum(f64(y) * sp.log_softmax(f64(x), axis=-1), axis=-1)
    close(got, want, jnp.float32, rtol_mult=2.0)


def test_cross_entropy_equals_lse_minus_label_logit():
    x = randn((3, 4), seed=24)
    labels = np.array([0, 3, 2])
    got = ce_labels(x, labels)
    want = sp.logsumexp(f64(x), axis=-1) - f64(x)[np.arange(3), labels]
    close(got, want, jnp.float32, rtol_mult=2.0, atol=1e-6)
    onehot = np.eye(4, dtype=np.float32)[labels]
    close(ce_probs(x, onehot), want, jnp.float32, rtol_mult=2.0, atol=1e-6)


def test_cross_entropy_temperature():
    x = randn((3, 4), seed=25)
    labels = np.array([1, 0, 3])
    T = 3.0
    got = ce_labels(x, labels, temperature=T)
    want = -sp.log_softmax(f64(x) / T, axis=-1)[np.arange(3), labels]
    close(got, want, jnp.float32)
    y = np.eye(4, dtype=np.float32)[labels] * 0.5 + 0.1
    got2 = ce_probs(x, y, temperature=T)
    want2 = -np.sum(f64(y) * sp.log_softmax(f64(x) / T, axis=-1), axis=-1)
    close(got2, want2, jnp.float32, rtol_mult=2.0)
    np.testing.assert_allclose(got2, optax.softmax_cross_entropy(x / T, y), rtol=1e-5)


def test_cross_entropy_tiny_loss_accuracy_claims():
    # Docstrings: logits [20, 0] with target [1, 0] give 2.06e-9 (optax gives 0 in float32).
    x = jnp.array([20.0, 0.0], jnp.float32)
    want = np.log1p(np.exp(-20.0))
    close(ce_probs(x, jnp.array([1.0, 0.0])), want, jnp.float32)
    close(ce_labels(x, 0), want, jnp.float32)
    x = jnp.array([0.0, 30.0, -5.0], jnp.float32)
    want = np.log1p(np.exp(-30.0) + np.exp(-35.0))
    close(ce_labels(x, jnp.array(1)), want, jnp.float32)


def test_integer_labels_accepts_any_integer_label_type_eagerly():
    x = randn((3, 4), seed=26)
    want = -sp.log_softmax(f64(x), axis=-1)[np.arange(3), [3, 0, 2]]
    for labels in ([3, 0, 2], np.array([3, 0, 2], np.int64), jnp.array([3, 0, 2], jnp.uint8)):
        close(expnorm.softmax_cross_entropy_with_integer_labels(x, labels), want, jnp.float32)


# --------------------------------------------------------------------------- jit and vmap


def _all_functions():
    labels = jnp.array([2, 0, 3])
    y = jnp.asarray(np.random.default_rng(9).dirichlet(np.ones(4), size=3).astype(np.float32))
    mask = jnp.array([[True, False, True, True]] * 3)
    b = jnp.array([1.0, -0.5, 2.0, 0.25])
    return {
        "softmax": lambda x: expnorm.softmax(x),
        "softmax_where_T": lambda x: expnorm.softmax(x, where=mask, temperature=1.5),
        "log_softmax": lambda x: expnorm.log_softmax(x, axis=0),
        "logsumexp": lambda x: expnorm.logsumexp(x, axis=-1),
        "logsumexp_b_sign": lambda x: expnorm.logsumexp(x, axis=-1, b=b, return_sign=True),
        "logsumexp_where": lambda x: expnorm.logsumexp(x, axis=1, where=mask, keepdims=True),
        "ce_labels": lambda x: expnorm.softmax_cross_entropy_with_integer_labels(x, labels),
        "ce_probs": lambda x: expnorm.softmax_cross_entropy(x, y),
        "naive": lambda x: expnorm.naive_softmax(x),
        "linear": lambda x: expnorm.linear_normalize(jnp.abs(x) + 1.0),
    }


@pytest.mark.parametrize("name", list(_all_functions()))
def test_jit_matches_eager(name):
    f = _all_functions()[name]
    x = jnp.asarray(randn((3, 4), seed=27))
    eager, jitted = f(x), jax.jit(f)(x)
    for e, j in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
        assert e.dtype == j.dtype and e.shape == j.shape
        np.testing.assert_allclose(j, e, rtol=2e-7, atol=1e-7)


def test_vmap_matches_unbatched():
    x = jnp.asarray(randn((5, 3, 4), seed=28))
    xe = f64(x)
    got = jax.jit(jax.vmap(lambda r: (expnorm.softmax(r), expnorm.log_softmax(r, axis=0),
                                      expnorm.logsumexp(r, axis=None))))(x)
    close(got[0], sp.softmax(xe, axis=-1), jnp.float32)
    close(got[1], sp.log_softmax(xe, axis=1), jnp.float32)
    close(got[2], sp.logsumexp(xe, axis=(1, 2)), jnp.float32)
    labels = jnp.array([[0, 3, 1], [2, 2, 2], [3, 0, 0], [1, 1, 1], [0, 0, 3]])
    y = np.random.default_rng(12).dirichlet(np.ones(4), size=(5, 3)).astype(np.float32)
    got = jax.jit(jax.vmap(lambda r, l, t: (expnorm.softmax_cross_entropy_with_integer_labels(
        r, l), expnorm.softmax_cross_entropy(r, t))))(x, labels, y)
    ls = sp.log_softmax(xe, axis=-1)
    close(got[0], -np.take_along_axis(ls, np.asarray(labels)[..., None], -1)[..., 0],
          jnp.float32)
    close(got[1], -np.sum(f64(y) * ls, axis=-1), jnp.float32, rtol_mult=2.0)


def test_vmap_with_where_and_in_axes():
    x = randn((3, 4), seed=29)
    mask = np.random.default_rng(10).random((3, 4)) < 0.6
    mask[:, 0] = True
    batched = jax.jit(jax.vmap(lambda r, m: expnorm.softmax(r, where=m), in_axes=(1, 1),
                               out_axes=1))(x.T, mask.T)
    want = np.zeros((3, 4))
    for r in range(3):
        want[r, mask[r]] = sp.softmax(f64(x[r, mask[r]]))
    close(batched.T, want, jnp.float32)


def test_jit_float64():
    # float64 is claimed accurate to 4 ulp; scipy's float64 log_softmax is not (it loses
    # relative accuracy near the max entry), so the reference is 50-digit mpmath.
    with jax.enable_x64(True):
        x = np.random.default_rng(11).normal(size=(3, 5)) * 10
        got = jax.jit(expnorm.log_softmax)(x)
        assert got.dtype == jnp.float64
        np.testing.assert_array_max_ulp(np.asarray(got), mp_log_softmax(x, axis=-1), maxulp=4)
        got = jax.jit(expnorm.logsumexp, static_argnames="axis")(x, axis=0)
        np.testing.assert_array_max_ulp(np.asarray(got), mp_logsumexp(x, axis=0), maxulp=4)


# --------------------------------------------------------------------------- teaching


def test_naive_softmax_overflows_to_nan_in_float32():
    got = expnorm.naive_softmax(jnp.array([1.0, 2.0, 10000.0], jnp.float32))
    assert got.dtype == jnp.float32
    assert np.isnan(np.asarray(got)[2])  # inf / inf
    np.testing.assert_array_equal(np.asarray(got)[:2], 0.0)  # finite / inf
    # docstring example
    assert np.isnan(np.asarray(expnorm.naive_softmax(jnp.array([0.0, 10000.0])))[1])
    # while the stable one is fine
    np.testing.assert_array_equal(softmax(jnp.array([1.0, 2.0, 10000.0])), [0.0, 0.0, 1.0])


def test_naive_softmax_agrees_on_small_inputs():
    x = randn((3, 4), seed=30)
    close(expnorm.naive_softmax(x), sp.softmax(f64(x), axis=-1), jnp.float32, rtol_mult=4)
    close(expnorm.naive_softmax(x, axis=0), sp.softmax(f64(x), axis=0), jnp.float32, rtol_mult=4)
    close(expnorm.naive_softmax(x, axis=None), sp.softmax(f64(x), axis=None), jnp.float32,
          rtol_mult=4)


def test_naive_softmax_underflows_to_nan():
    # all exp underflow: 0 / 0
    assert np.all(np.isnan(expnorm.naive_softmax(jnp.array([-1000.0, -1000.0]))))


def test_linear_normalize():
    got = expnorm.linear_normalize(jnp.array([[1.0, 3.0], [2.0, 2.0]]))
    np.testing.assert_array_equal(got, [[0.25, 0.75], [0.5, 0.5]])
    got = expnorm.linear_normalize(jnp.array([[1.0, 3.0], [2.0, 2.0]]), axis=0)
    np.testing.assert_allclose(got, [[1 / 3, 0.6], [2 / 3, 0.4]], rtol=1e-7)
    got = expnorm.linear_normalize(jnp.array([1.0, 1.0, 2.0]), axis=None)
    np.testing.assert_array_equal(got, [0.25, 0.25, 0.5])


def test_linear_normalize_is_unguarded():
    # negative scores give negative "probabilities"
    got = np.asarray(expnorm.linear_normalize(jnp.array([-1.0, 3.0])))
    np.testing.assert_array_equal(got, [-0.5, 1.5])
    # a zero sum gives inf or nan
    got = np.asarray(expnorm.linear_normalize(jnp.array([1.0, -1.0])))
    assert np.all(np.isinf(got))
    assert np.all(np.isnan(expnorm.linear_normalize(jnp.zeros(3))))


def test_linear_normalize_is_not_softmax():
    x = jnp.array([1.0, 2.0])
    assert not np.allclose(expnorm.linear_normalize(x), softmax(x))


def test_ce_probs_gradient_with_respect_to_targets_is_minus_log_softmax():
    # d/dy of -sum(y * log softmax(z)) is -log softmax(z): reverse mode must transpose it,
    # and a class of probability 0 has derivative +inf (not nan).
    z = jnp.array([[0.5, -1.0, 2.0], [0.0, -jnp.inf, 1.0]], jnp.float32)
    y = jnp.array([[0.2, 0.3, 0.5], [0.5, 0.0, 0.5]], jnp.float32)
    g = jax.grad(lambda y: expnorm.softmax_cross_entropy(z, y).sum())(y)
    expected = -jax.nn.log_softmax(z)
    np.testing.assert_allclose(np.asarray(g[0]), np.asarray(expected[0]), rtol=1e-6)
    assert g[1, 1] == jnp.inf
    np.testing.assert_allclose(np.asarray(g[1, [0, 2]]), np.asarray(expected[1, [0, 2]]), rtol=1e-6)
    # and differentiating only the logits stays finite at that -inf logit
    gz = jax.grad(lambda z: expnorm.softmax_cross_entropy(z, y).sum())(z)
    assert np.all(np.isfinite(np.asarray(gz)))


@pytest.mark.parametrize("margin", [5.0, 17.0, 20.0, 30.0, 60.0, 85.0])
def test_ce_labels_gradient_keeps_tiny_confident_component(margin):
    # d loss / d z_k = p_k - 1 = -(sum of the other probabilities): tiny but representable
    # in float32 at a confident margin; computing it as p_k - 1 would round it to 0.
    from expnorm import numerics as N

    z = np.array([margin, 0.0, -1.0], np.float32)
    g = jax.grad(lambda z: expnorm.softmax_cross_entropy_with_integer_labels(z[None], jnp.array([0]))[0])(
        jnp.asarray(z))
    p = N.ref_softmax(z)
    exact = -(p[1] + p[2])
    assert N.is_normal(exact, np.float32)
    assert N.ulp_error(float(g[0]), exact, np.float32) <= 1.0
