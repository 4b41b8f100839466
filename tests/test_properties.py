"""Property tests (hypothesis): invariants, agreement with references, and derivatives.

Shapes are fixed per test so that every example reuses one XLA compilation (compiling these
functions costs ~0.5 s each on CPU; the examples themselves are cheap). Hypothesis runs
derandomized, without an example database, so CI is reproducible.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from jax.test_util import check_grads

import expnorm

SETTINGS = dict(deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
fast = settings(max_examples=50, **SETTINGS)
slow = settings(max_examples=8, **SETTINGS)  # for the costly second-order checks

EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)
TINY32 = float(np.finfo(np.float32).tiny)
SHAPE = (3, 5)
K = SHAPE[-1]

# ---------------------------------------------------------------------------- strategies


def f32_arrays(lo=-1e3, hi=1e3, shape=SHAPE):
    return arrays(np.float32, shape, elements=st.floats(lo, hi, width=32))


@st.composite
def offset_f32_arrays(draw):
    """Bounded values around a large common offset (rounded to float32, as a user's would be)."""
    x = draw(f32_arrays(-50.0, 50.0))
    offset = draw(st.sampled_from([0.0, 1e4, -3e5, 2e7, -1e30]))
    return (x.astype(np.float64) + offset).astype(np.float32)


def dyadic_arrays(shape=SHAPE):
    """Multiples of 1/16 in [-128, 128]: x + c is exact in float32 for integer |c| <= 2**17."""
    return arrays(np.int32, shape, elements=st.integers(-2048, 2048)).map(
        lambda a: a.astype(np.float32) / 16)


any_f32 = st.one_of(f32_arrays(), offset_f32_arrays(), dyadic_arrays())


def f64_arrays(shape, lo=-5.0, hi=5.0):
    return arrays(np.float64, shape, elements=st.floats(lo, hi))


# ---------------------------------------------------------------------------- compiled functions


@jax.jit
def family(x):
    return (expnorm.softmax(x), expnorm.log_softmax(x), expnorm.logsumexp(x, axis=-1),
            jax.nn.softmax(x), jax.nn.log_softmax(x), jax.scipy.special.logsumexp(x, axis=-1))


@jax.jit
def family_T(x, t):
    return (expnorm.softmax(x, temperature=t), expnorm.logsumexp(x, axis=-1, temperature=t))


@jax.jit
def ce_grads(x, labels, y):
    gl = jax.grad(lambda z: jnp.sum(expnorm.softmax_cross_entropy_with_integer_labels(z, labels)))
    gp = jax.grad(lambda z: jnp.sum(expnorm.softmax_cross_entropy(z, y)))
    return gl(x), gp(x)


def ref_softmax(x):
    return sp.softmax(np.asarray(x, np.float64), axis=-1)


# ---------------------------------------------------------------------------- invariants


@fast
@given(any_f32)
def test_rows_sum_to_one_and_probabilities_in_unit_interval(x):
    p = np.asarray(family(x)[0], np.float64)
    assert np.all(p >= 0.0) and np.all(p <= 1.0)
    # each entry within 1 ulp (<= eps * p) => the row sum is within eps of 1; allow 2 eps and a
    # few (flushed) subnormals.
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=0, atol=2 * EPS32 + K * TINY32)


@fast
@given(dyadic_arrays(), arrays(np.int32, (SHAPE[0], 1), elements=st.integers(-2**17, 2**17)))
def test_shift_invariance(x, c):
    xc = x + c.astype(np.float32)
    np.testing.assert_array_equal(xc.astype(np.float64), x.astype(np.float64) + c)  # exact
    p, ls, lse = (np.asarray(v, np.float64) for v in family(x)[:3])
    pc, lsc, lsec = (np.asarray(v, np.float64) for v in family(xc)[:3])
    # both are within 1 ulp of the same true value
    np.testing.assert_allclose(pc, p, rtol=2 * EPS32, atol=2 * TINY32)
    np.testing.assert_allclose(lsc, ls, rtol=2 * EPS32, atol=2 * TINY32)
    # LSE(x + c) = LSE(x) + c, each side rounded once
    np.testing.assert_allclose(lsec, lse + c[:, 0], rtol=2 * EPS32, atol=4 * EPS32)


@fast
@given(any_f32)
def test_log_softmax_is_log_of_softmax(x):
    p, ls = (np.asarray(v, np.float64) for v in family(x)[:2])
    big = p > 1e-30  # away from float32 underflow
    # |log(p(1 + d)) - log p| <= |d| <= eps, plus the 1-ulp rounding of ls itself
    np.testing.assert_allclose(np.log(p[big]), ls[big], rtol=EPS32, atol=2 * EPS32)
    assert np.all(ls <= 0.0)
    np.testing.assert_array_equal(np.isneginf(ls), False)  # finite input: finite log_softmax


@fast
@given(any_f32)
def test_logsumexp_between_max_and_max_plus_log_n(x):
    lse = np.asarray(family(x)[2], np.float64)
    m = x.max(axis=-1).astype(np.float64)
    assert np.all(lse >= m)
    upper = m + np.log(K)
    assert np.all(lse <= upper + EPS32 * np.abs(upper))


# ---------------------------------------------------------------------------- references


@fast
@given(any_f32)
def test_float32_agrees_with_scipy_and_jax_nn(x):
    p, ls, lse, jp, jls, jlse = (np.asarray(v, np.float64) for v in family(x))
    x64 = x.astype(np.float64)
    want_p = ref_softmax(x)
    normal = want_p > TINY32
    np.testing.assert_allclose(p[normal], want_p[normal], rtol=2 * EPS32)
    np.testing.assert_allclose(p[~normal], want_p[~normal], rtol=0, atol=TINY32)
    # scipy's float64 log_softmax / logsumexp have absolute error ~ eps64 * |x - max|
    scale = 1.0 + np.abs(x64 - x64.max(axis=-1, keepdims=True))
    np.testing.assert_allclose(ls, sp.log_softmax(x64, axis=-1),
                               rtol=2 * EPS32, atol=float(np.max(scale)) * 1e-14)
    np.testing.assert_allclose(lse, sp.logsumexp(x64, axis=-1), rtol=2 * EPS32, atol=1e-30)
    # jax.nn in float32 is a few ulp off itself
    np.testing.assert_allclose(p, jp, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ls, jls, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(lse, jlse, rtol=1e-6, atol=1e-6)


@fast
@given(f32_arrays(-100.0, 100.0), st.sampled_from([0.0625, 0.5, 1.0, 3.0, 1024.0]))
def test_temperature_matches_scaled_input(x, t):
    # t is exactly representable in float32 (a traced Python float becomes float32 under jit)
    p, lse = (np.asarray(v, np.float64) for v in family_T(x, t))
    want_p = ref_softmax(x.astype(np.float64) / t)
    normal = want_p > TINY32
    np.testing.assert_allclose(p[normal], want_p[normal], rtol=2 * EPS32)
    np.testing.assert_allclose(p[~normal], 0.0, atol=TINY32)
    want = t * sp.logsumexp(x.astype(np.float64) / t, axis=-1)
    np.testing.assert_allclose(lse, want, rtol=2 * EPS32, atol=1e-6 * t)


@jax.jit
def family64(x):
    return (expnorm.softmax(x), expnorm.log_softmax(x), expnorm.logsumexp(x, axis=-1),
            jax.nn.softmax(x), jax.nn.log_softmax(x))


@fast
@given(arrays(np.float64, SHAPE, elements=st.floats(-1e3, 1e3)))
def test_float64_agrees_with_scipy_and_jax_nn(x):
    with jax.enable_x64(True):
        p, ls, lse, jp, jls = (np.asarray(v) for v in family64(jnp.asarray(x)))
        assert p.dtype == ls.dtype == lse.dtype == np.float64
    # scipy's own error: ~eps64 * |x - max| absolute in the exponent / logarithm
    spread = float(np.max(np.abs(x - x.max(axis=-1, keepdims=True)))) + 1.0
    want_p = sp.softmax(x, axis=-1)
    np.testing.assert_allclose(p, want_p, rtol=4 * spread * EPS64, atol=1e-300)
    np.testing.assert_allclose(ls, sp.log_softmax(x, axis=-1), rtol=4 * EPS64,
                               atol=4 * spread * EPS64)
    np.testing.assert_allclose(lse, sp.logsumexp(x, axis=-1), rtol=4 * EPS64,
                               atol=4 * spread * EPS64)
    np.testing.assert_allclose(p, jp, rtol=4 * spread * EPS64, atol=1e-300)
    np.testing.assert_allclose(ls, jls, rtol=4 * EPS64, atol=4 * spread * EPS64)


# ---------------------------------------------------------------------------- gradients


@fast
@given(f32_arrays(-30.0, 30.0), arrays(np.int32, (SHAPE[0],), elements=st.integers(0, K - 1)),
       arrays(np.float32, SHAPE, elements=st.floats(0.0, 2.0, width=32)))
def test_cross_entropy_gradients(x, labels, y):
    gl, gp = (np.asarray(v, np.float64) for v in ce_grads(x, labels, y))
    p = ref_softmax(x)
    # integer labels: softmax(z) - onehot(k)
    np.testing.assert_allclose(gl, p - np.eye(K)[labels], rtol=0, atol=4 * EPS32)
    # probability targets: sum(y) * softmax(z) - y
    y64 = y.astype(np.float64)
    sy = y64.sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(gp, sy * p - y64, rtol=0,
                               atol=4 * EPS32 * (1.0 + float(sy.max())))


@jax.jit
def jac_hess(x):
    return jax.jacobian(expnorm.softmax)(x), jax.hessian(lambda z: expnorm.logsumexp(z))(x)


@fast
@given(st.one_of(f64_arrays((K,)), f64_arrays((K,), -300.0, 300.0)))
def test_softmax_jacobian_and_logsumexp_hessian(x):
    with jax.enable_x64(True):
        j, h = (np.asarray(v) for v in jac_hess(jnp.asarray(x)))
    p = sp.softmax(x)
    want = np.diag(p) - np.outer(p, p)
    np.testing.assert_allclose(j, want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(h, want, rtol=1e-12, atol=1e-15)


@fast
@given(f32_arrays(-20.0, 20.0, shape=(K,)))
def test_softmax_jacobian_float32(x):
    j = np.asarray(jac_hess(jnp.asarray(x))[0], np.float64)
    p = ref_softmax(x)
    np.testing.assert_allclose(j, np.diag(p) - np.outer(p, p), rtol=0, atol=4 * EPS32)


GRAD_SHAPE = (2, 4)
_LABELS = np.array([3, 0])
_Y = np.array([[0.1, 0.2, 0.3, 0.4], [0.5, 0.0, 0.25, 0.25]])
_B = np.array([[0.5, 1.0, 2.0, 0.25], [1.0, 3.0, 0.1, 1.0]])

GRAD_FUNCS = {
    "softmax": lambda x: expnorm.softmax(x),
    "log_softmax": lambda x: expnorm.log_softmax(x, axis=0),
    "logsumexp": lambda x: expnorm.logsumexp(x, axis=-1),
    "logsumexp_b": lambda x: expnorm.logsumexp(x, b=_B),
    "ce_probs": lambda x: expnorm.softmax_cross_entropy(x, _Y),
    "ce_labels": lambda x: expnorm.softmax_cross_entropy_with_integer_labels(x, _LABELS),
}


@jax.jit
def all_grad_funcs(x):
    # One function with a dict of outputs: check_grads then compiles each derivative once
    # for all six (a separate check per function would cost ~3 s of XLA compiles each).
    return {name: f(x) for name, f in GRAD_FUNCS.items()}


@slow
@given(st.one_of(f64_arrays(GRAD_SHAPE),
                 f64_arrays(GRAD_SHAPE).map(lambda a: np.round(a))))  # rounding makes ties
def test_check_grads_second_order_float64(x):
    with jax.enable_x64(True):
        check_grads(all_grad_funcs, (jnp.asarray(x),), order=2, modes=["fwd", "rev"], eps=1e-4)


@settings(max_examples=1, **SETTINGS)
@given(st.sampled_from(list(GRAD_FUNCS)))
def test_check_grads_catches_a_wrong_derivative(name):
    # check_grads must be able to fail here: a function whose custom derivative is wrong.
    @jax.custom_jvp
    def wrong(x):
        return GRAD_FUNCS[name](x)

    wrong.defjvp(lambda primals, tangents: (wrong(primals[0]), 0.9 * jax.jvp(
        GRAD_FUNCS[name], primals, tangents)[1]))
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(0).normal(size=GRAD_SHAPE))
        try:
            check_grads(wrong, (x,), order=1, modes=["fwd"], eps=1e-4)
        except AssertionError:
            return
    raise AssertionError("check_grads accepted a derivative that is off by 10%")
