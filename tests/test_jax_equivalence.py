"""expnorm against what jax's own tests check of softmax, log_softmax and logsumexp.

jax's test files are not in its wheel. These cases follow the properties that jax 0.10.2's
``tests/nn_test.py`` and ``tests/lax_scipy_test.py`` check (special values, masks, dtypes,
``b`` broadcasting, ``return_sign``, gradients, ``debug_nans``/``debug_infs``, saved residual
counts, jit/vmap/grad), written independently: the references are SciPy in float64, closed
forms, or jax's own function where its answer is exact (result dtypes, residual counts).

Documented difference (issue 15): complex input is a TypeError in expnorm.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special as sps
from jax._src import ad_checkpoint  # saved_residuals, as jax's own nn_test uses it
from jax.test_util import check_grads

import expnorm

SOFTMAXES = {"softmax": (expnorm.softmax, jax.nn.softmax),
             "log_softmax": (expnorm.log_softmax, jax.nn.log_softmax)}
X4 = np.array([5.5, 1.3, -4.2, 0.9], np.float32)


def rng(seed=0):
    return np.random.default_rng(seed)


def scipy_softmax(x, axis=-1):
    return sps.softmax(np.asarray(x, np.float64), axis=axis)


# --------------------------------------------------------------------------- masks, empty input

@pytest.mark.parametrize("name", SOFTMAXES)
def test_empty_array(name):
    f, _ = SOFTMAXES[name]
    out = f(jnp.array([], dtype=jnp.float32))
    assert out.shape == (0,) and out.dtype == jnp.float32


@pytest.mark.parametrize("name", SOFTMAXES)
def test_fully_masked_row(name):
    f, _ = SOFTMAXES[name]
    out = np.asarray(f(X4, where=np.zeros(4, bool)))
    np.testing.assert_array_equal(out, np.full(4, 0.0 if name == "softmax" else -np.inf))


@pytest.mark.parametrize("name", SOFTMAXES)
def test_where_equals_dropping_entries(name):
    f, _ = SOFTMAXES[name]
    m = np.array([True, False, True, True])
    out = np.asarray(f(X4, where=m))
    ref = scipy_softmax(X4[m])
    got = out[m] if name == "softmax" else np.exp(out[m])
    np.testing.assert_allclose(got, ref, rtol=2e-6)
    assert out[1] == (0.0 if name == "softmax" else -np.inf)
    np.testing.assert_allclose(got.sum(), 1.0, rtol=1e-6)


def test_where_softmax_check_grads_second_order():
    m = jnp.array([True, False, True, True])
    g = lambda x: jnp.take(expnorm.softmax(x, where=m), jnp.array([0, 2, 3]))
    check_grads(g, (jnp.asarray(X4),), order=2, atol=5e-3, rtol=5e-3)


@pytest.mark.parametrize("name", SOFTMAXES)
def test_where_grad_ignores_huge_masked_entry(name):
    # a masked entry of 10000 must not make the gradient NaN (jax issue 19490)
    f, _ = SOFTMAXES[name]
    x = jnp.array([36.0, 10000.0])
    g = jax.grad(lambda x: f(x, where=x < 1000)[0])(x)
    np.testing.assert_array_equal(np.asarray(g), [0.0, 0.0])


# --------------------------------------------------------------------------- gradients

def test_softmax_check_grads():
    check_grads(expnorm.softmax, (jnp.asarray(X4),), order=2, atol=5e-3, rtol=5e-3)


def test_log_softmax_check_grads():
    check_grads(expnorm.log_softmax, (jnp.asarray(X4),), order=2, atol=5e-3, rtol=5e-3)


def test_logsumexp_check_grads():
    check_grads(expnorm.logsumexp, (jnp.asarray(X4),), order=2, atol=5e-3, rtol=5e-3)


def test_logsumexp_grad_is_softmax():
    g = jax.grad(expnorm.logsumexp)(jnp.asarray(X4))
    np.testing.assert_allclose(np.asarray(g), scipy_softmax(X4), rtol=2e-6)


def test_logsumexp_where_grad():
    x = jnp.array([0.0, 0.0, 0.0, 0.0, 100.0])
    g = jax.grad(lambda x: expnorm.logsumexp(x, where=jnp.arange(5) < 4))(x)
    np.testing.assert_array_equal(np.asarray(g), [0.25, 0.25, 0.25, 0.25, 0.0])


# --------------------------------------------------------------------------- saved residuals

def residual_elements(f, x):
    return sum(int(np.prod(a.shape)) for a, _ in ad_checkpoint.saved_residuals(f, x))


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
def test_saved_residuals_no_more_than_jax(name):
    """jax's testSoftmaxGradFlag counts what is saved for the backward pass (4 entries:
    jax keeps 6 elements by default, 4 with jax_softmax_custom_jvp); expnorm keeps no more."""
    ours = {"softmax": expnorm.softmax, "log_softmax": expnorm.log_softmax,
            "logsumexp": expnorm.logsumexp}[name]
    theirs = {"softmax": jax.nn.softmax, "log_softmax": jax.nn.log_softmax,
              "logsumexp": jax.scipy.special.logsumexp}[name]
    x = jnp.asarray(X4)
    if name == "log_softmax":
        # A documented difference (README, "Differences from jax, optax and scipy"): the -inf
        # outputs have derivative 0, which needs p and a boolean mask of the finite outputs.
        res = ad_checkpoint.saved_residuals(ours, x)
        assert len(res) <= 2 and residual_elements(ours, x) <= 2 * x.size
        return
    assert residual_elements(ours, x) <= residual_elements(theirs, x)


# --------------------------------------------------------------------------- logsumexp vs scipy

COMPATIBLE = [[(), ()], [(4,), (3, 4)], [(3, 1), (1, 4)], [(2, 3, 4), (2, 1, 4)]]


def _lse_cases():
    for group in COMPATIBLE:
        for use_b in (False, True):
            for shapes in itertools.product(group, repeat=2 if use_b else 1):
                nd = max(len(s) for s in shapes)
                axes = [None] + list(range(-nd, nd))
                for axis in axes:
                    for return_sign in (False, True):
                        yield shapes, use_b, axis, return_sign


# every case in float32; float64 and int32 on the reductions over all axes or the last one
LSE_CASES = [c + ("float32",) for c in _lse_cases()] + [
    c + (dt,) for dt in ("float64", "int32") for c in _lse_cases() if c[2] in (None, -1)]


def _random(shape, dtype, seed):
    r = rng(seed)
    x = r.normal(scale=3.0, size=shape)
    if np.issubdtype(np.dtype(dtype), np.integer):
        x = np.round(x)
    return np.asarray(x).astype(dtype)


@pytest.mark.parametrize("shapes,use_b,axis,return_sign,dtype", LSE_CASES,
                         ids=[f"{'x'.join(map(str, s[0])) or 'scalar'}"
                              f"{'-b' + ('x'.join(map(str, s[1])) or 'scalar') if b else ''}"
                              f"-axis{a}{'-sign' if r else ''}-{d}" for s, b, a, r, d in LSE_CASES])
def test_logsumexp_matches_scipy(shapes, use_b, axis, return_sign, dtype):
    """a and b broadcast together, axis refers to the broadcast shape (as in jax and scipy)."""
    a = _random(shapes[0], dtype, 1)
    b = _random(shapes[1], dtype, 2) if use_b else None
    with jax.enable_x64(True):
        got = expnorm.logsumexp(a, axis=axis, b=b, return_sign=return_sign)
        want_dtype = jax.scipy.special.logsumexp(a, axis=axis, b=b, return_sign=return_sign)
        want_dtype = (want_dtype[0] if return_sign else want_dtype).dtype
    ref = sps.logsumexp(a.astype(np.float64), axis=axis,
                        b=None if b is None else b.astype(np.float64), return_sign=return_sign)
    val, ref_val = (got[0], ref[0]) if return_sign else (got, ref)
    assert val.dtype == want_dtype
    rtol = 1e-13 if want_dtype == jnp.float64 else 2e-6
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(np.asarray(val, np.float64), ref_val, rtol=rtol, atol=rtol)
    if return_sign:
        np.testing.assert_array_equal(np.asarray(got[1], np.float64), ref[1])


def test_logsumexp_keepdims_shape():
    a = _random((2, 3, 4), "float32", 3)
    for axis in (None, 0, 1, -1, (0, 2)):
        got = expnorm.logsumexp(a, axis=axis, keepdims=True)
        assert got.shape == sps.logsumexp(a, axis=axis, keepdims=True).shape


def test_logsumexp_b_broadcasts_beyond_a():
    """scipy's test_logsumexp_b_shape: a (4, 1, 2, 1) with b (3, 1, 5) gives a scalar."""
    a, b = np.zeros((4, 1, 2, 1)), np.ones((3, 1, 5))
    got = expnorm.logsumexp(a, b=b)
    np.testing.assert_allclose(float(got), np.log(4 * 2 * 3 * 5), rtol=1e-6)


def test_logsumexp_weight_zero_drops_entry():
    # jax issue 5370: a -1000 entry next to a zero-weighted one
    a, b = np.array([-1000.0, -2.0], np.float32), np.array([1.0, 0.0], np.float32)
    np.testing.assert_allclose(float(expnorm.logsumexp(a, b=b)), -1000.0, rtol=1e-7)
    np.testing.assert_allclose(float(jax.jit(lambda a, b: expnorm.logsumexp(a, b=b))(a, b)),
                               -1000.0, rtol=1e-7)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5])
def test_logsumexp_where_matches_dropping(n):
    x = _random((n,), "float32", 4)
    m = rng(5).random(n) < 0.5
    ref = sps.logsumexp(x[m].astype(np.float64)) if m.any() else -np.inf
    np.testing.assert_allclose(float(expnorm.logsumexp(x, where=m)), ref, rtol=2e-6)


@pytest.mark.parametrize("a,b,value,sign", [
    ([1.0, 1.0, 1.0], [1.0, -1.0, -1.0], 1.0, -1.0),  # log|e - 2e| = 1, negative
    ([1.0, 1.0], [1.0, -1.0], -np.inf, 0.0),  # exact cancellation
    ([np.inf], None, np.inf, 1.0),
    ([np.inf], [-1.0], np.inf, -1.0),
    ([-np.inf, -np.inf], None, -np.inf, 0.0),
])
def test_logsumexp_return_sign(a, b, value, sign):
    v, s = expnorm.logsumexp(np.array(a), b=None if b is None else np.array(b), return_sign=True)
    np.testing.assert_allclose(float(v), value, rtol=1e-6)
    assert float(s) == sign


@pytest.mark.parametrize("x,expected", [
    ([np.inf], np.inf), ([-np.inf], -np.inf), ([np.nan], np.nan),
    ([-np.inf, -np.inf], -np.inf), ([1000.0, 1000.0], 1000.0 + np.log(2.0)),
    ([], -np.inf),
])
def test_logsumexp_special_values(x, expected):
    np.testing.assert_allclose(float(expnorm.logsumexp(np.array(x, np.float32))), expected,
                               rtol=1e-7)


# --------------------------------------------------------------------------- result dtypes

INT_DTYPES = ["int8", "int16", "int32", "int64", "uint8", "bool"]


@pytest.mark.parametrize("dtype", INT_DTYPES)
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
def test_integer_input_dtype_as_jax(name, dtype):
    """Under x64, jax maps int8/16/32 and uint8 to float32 and int64 to float64."""
    ours = {"softmax": expnorm.softmax, "log_softmax": expnorm.log_softmax,
            "logsumexp": expnorm.logsumexp}[name]
    theirs = {"softmax": jax.nn.softmax, "log_softmax": jax.nn.log_softmax,
              "logsumexp": jax.scipy.special.logsumexp}[name]
    x = np.array([2, 1, 0, 1]).astype(dtype)
    if dtype == "bool" or (dtype == "uint8" and name != "logsumexp"):
        # Documented differences (README table): jax.nn rejects booleans, and it subtracts the
        # max in the unsigned type (uint8 wraps around). expnorm converts first, as for signed
        # integers, so the reference is the function of the float32 conversion.
        with jax.enable_x64(True):
            got, want = ours(x), theirs(x.astype(np.float32))
        assert got.dtype == np.float32
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6)
        return
    with jax.enable_x64(True):
        got, want = ours(x), theirs(x)
    assert got.dtype == want.dtype
    np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want, np.float64),
                               rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
def test_float_dtype_kept(name, dtype):
    f = {"softmax": expnorm.softmax, "log_softmax": expnorm.log_softmax,
         "logsumexp": expnorm.logsumexp}[name]
    with jax.enable_x64(True):
        x = jnp.asarray(X4, dtype=dtype)
        assert f(x).dtype == x.dtype


@pytest.mark.parametrize("da,db", [("float32", "float64"), ("float64", "float32"),
                                   ("float16", "float32"), ("int32", "float32"),
                                   ("float32", "int32")])
def test_logsumexp_b_dtype_promotion(da, db):
    """With b, jax and scipy return the promoted dtype of a and b."""
    a = np.array([2.0, 1.0]).astype(da)
    b = np.array([1.0, -1.0]).astype(db)
    with jax.enable_x64(True):
        got = expnorm.logsumexp(a, b=b)
        want = jax.scipy.special.logsumexp(a, b=b)
    assert got.dtype == want.dtype
    np.testing.assert_allclose(float(got), np.log(np.e**2 - np.e), rtol=1e-3)


# --------------------------------------------------------------------------- debug flags

def test_logsumexp_debug_infs_ones():
    # jax issue 7390: ones(4) must not trip debug_infs, jitted or not
    x = np.ones(4, np.float32)
    with jax.debug_infs(True):
        got = expnorm.logsumexp(x)
        got_jit = jax.jit(expnorm.logsumexp)(x)
    ref = 1.0 + np.log(4.0)
    np.testing.assert_allclose([float(got), float(got_jit)], [ref, ref], rtol=1e-6)


def test_logsumexp_debug_nans_eager():
    # jax issue 7634, under disable_jit: every primitive is checked
    with jax.debug_nans(True), jax.disable_jit():
        assert float(expnorm.logsumexp(1.0)) == 1.0
        assert float(expnorm.logsumexp(1.0, b=1.0)) == 1.0


def _debug_nans_calls():
    x = jnp.asarray(X4)
    y = jnp.asarray(scipy_softmax(X4), jnp.float32)
    return {
        "softmax": lambda: expnorm.softmax(x),
        "log_softmax": lambda: expnorm.log_softmax(x),
        "logsumexp": lambda: expnorm.logsumexp(x),
        "logsumexp_b": lambda: expnorm.logsumexp(x, b=jnp.ones(4)),
        "logsumexp_sign": lambda: expnorm.logsumexp(x, return_sign=True),
        "softmax_cross_entropy": lambda: expnorm.softmax_cross_entropy(x, y),
        "softmax_cross_entropy_with_integer_labels":
            lambda: expnorm.softmax_cross_entropy_with_integer_labels(x, jnp.array(1)),
        "grad_softmax": lambda: jax.grad(lambda x: expnorm.softmax(x)[0])(x),
        "grad_logsumexp": lambda: jax.grad(expnorm.logsumexp)(x),
    }


@pytest.mark.parametrize("jit", [False, True], ids=["disable_jit", "jit"])
@pytest.mark.parametrize("name", list(_debug_nans_calls()))
def test_debug_nans_and_infs_on_finite_input(name, jit):
    """A user debugging NaNs with jax's flags must be able to keep expnorm in the model: on
    finite input nothing inside may produce a NaN or an inf."""
    call = _debug_nans_calls()[name]
    with jax.debug_nans(True), jax.debug_infs(True):
        if jit:
            out = call()
        else:
            with jax.disable_jit():
                out = call()
    assert all(np.isfinite(np.asarray(o)).all() for o in jax.tree.leaves(out))


# --------------------------------------------------------------------------- jit, vmap, grad

@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
def test_jit_vmap_agree(name):
    f = {"softmax": expnorm.softmax, "log_softmax": expnorm.log_softmax,
         "logsumexp": lambda x: expnorm.logsumexp(x, axis=-1)}[name]
    x = _random((5, 7), "float32", 6)
    eager = np.asarray(f(x))
    np.testing.assert_array_equal(np.asarray(jax.jit(f)(x)), eager)
    np.testing.assert_allclose(np.asarray(jax.vmap(f)(x)), eager, rtol=1e-7)
    ref = {"softmax": scipy_softmax(x), "log_softmax": sps.log_softmax(x.astype(np.float64), -1),
           "logsumexp": sps.logsumexp(x.astype(np.float64), -1)}[name]
    np.testing.assert_allclose(eager, ref, rtol=2e-6, atol=1e-7)


def test_vmap_of_grad_of_logsumexp_is_softmax():
    x = _random((5, 7), "float32", 7)
    g = jax.vmap(jax.grad(expnorm.logsumexp))(x)
    np.testing.assert_allclose(np.asarray(g), scipy_softmax(x), rtol=2e-6, atol=1e-8)


# --------------------------------------------------------------------------- documented difference

@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
def test_complex_input_is_documented_type_error(name):
    """Documented difference ("Complex input"): jax and scipy accept complex input to
    logsumexp (and jax.nn.softmax computes something for it); expnorm raises TypeError."""
    f = {"softmax": expnorm.softmax, "log_softmax": expnorm.log_softmax,
         "logsumexp": expnorm.logsumexp}[name]
    with pytest.raises(TypeError, match="complex"):
        f(jnp.array([1 + 1j, 2 - 1j, -2 + 3j]))
