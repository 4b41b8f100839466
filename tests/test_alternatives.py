"""Tests of expnorm.alternatives: sparsemax, 1.5-entmax, spherical and Taylor softmax, FY losses.

Every reference here is independent of the library's algorithm: thresholds are found by
bisection in float64 NumPy (not by sorting), projections and conjugates by scipy's SLSQP,
Jacobians from their closed forms and from finite differences of the NumPy references.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so
from hypothesis import given, settings
from hypothesis import strategies as st

import expnorm
from expnorm import (
    entmax15,
    entmax15_loss,
    sparsemax,
    sparsemax_loss,
    spherical_softmax,
    taylor_softmax,
)

SEED = 20240611
MAPS = [sparsemax, entmax15, spherical_softmax, taylor_softmax]
PROPS = settings(max_examples=50, deadline=None, derandomize=True)


# ------------------------------------------------------------------------------------------
# Independent float64 NumPy references
# ------------------------------------------------------------------------------------------


def _bisect(f, lo, hi, iters=200):
    """Root of a decreasing function f on [lo, hi] with f(lo) >= 0 >= f(hi)."""
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if f(mid) > 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def ref_sparsemax_tau(z):
    z = np.asarray(z, np.float64)
    m = z.max()
    return _bisect(lambda t: np.maximum(z - t, 0).sum() - 1.0, m - 1.0, m)


def ref_sparsemax(z):
    z = np.asarray(z, np.float64)
    return np.maximum(z - ref_sparsemax_tau(z), 0.0)


def ref_entmax15_tau(z):
    h = np.asarray(z, np.float64) / 2.0
    m = h.max()
    return _bisect(lambda t: (np.maximum(h - t, 0) ** 2).sum() - 1.0, m - 1.0, m)


def ref_entmax15(z):
    h = np.asarray(z, np.float64) / 2.0
    return np.maximum(h - ref_entmax15_tau(z), 0.0) ** 2


def slsqp_simplex_max(objective, n):
    """max_p objective(p) over the simplex, by SLSQP from the uniform point."""
    res = so.minimize(
        lambda p: -objective(p),
        np.full(n, 1.0 / n),
        method="SLSQP",
        bounds=[(0.0, 1.0)] * n,
        constraints=[{"type": "eq", "fun": lambda p: p.sum() - 1.0}],
        options={"ftol": 1e-14, "maxiter": 500},
    )
    assert res.success, res.message
    return res.x, -res.fun


def fd_jacobian(f, z, h=1e-6):
    z = np.asarray(z, np.float64)
    cols = []
    for j in range(z.size):
        e = np.zeros_like(z)
        e[j] = h
        cols.append((f(z + e) - f(z - e)) / (2 * h))
    return np.stack(cols, axis=1)


def random_rows(rng, n_rows, n, scale=2.0):
    return rng.normal(scale=scale, size=(n_rows, n))


def far_from_boundary(z, tau, margin=1e-3):
    return np.min(np.abs(z - tau)) > margin


def x64(fn, *args, **kw):
    with jax.enable_x64(True):
        return np.asarray(fn(*[jnp.asarray(a, jnp.float64) for a in args], **kw))


# ------------------------------------------------------------------------------------------
# All maps: simplex, shapes, dtypes, axes, jit/vmap
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", MAPS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("wide", [False, True], ids=["float32", "float64"])
def test_outputs_lie_in_the_simplex_and_keep_dtype(fn, wide):
    x = random_rows(np.random.default_rng(SEED), 6, 7)
    with jax.enable_x64(wide):
        dt = jnp.float64 if wide else jnp.float32
        p = fn(jnp.asarray(x, dt))
        assert p.dtype == dt and p.shape == x.shape
        p = np.asarray(p, np.float64)
    tol = 1e-12 if wide else 1e-6
    assert np.all(p >= 0)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=0, atol=tol)


@pytest.mark.parametrize("fn", MAPS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("axis", [0, 1, -3])
def test_axis_argument_equals_moving_the_axis(fn, axis):
    x = jnp.asarray(np.random.default_rng(SEED + 1).normal(size=(3, 4, 5)), jnp.float32)
    got = fn(x, axis=axis)
    want = jnp.moveaxis(fn(jnp.moveaxis(x, axis, -1)), -1, axis)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert np.allclose(np.asarray(got).sum(axis=axis), 1.0, atol=1e-6)


@pytest.mark.parametrize("fn", MAPS, ids=lambda f: f.__name__)
def test_jit_and_vmap_agree_with_eager_row_by_row(fn):
    x = jnp.asarray(random_rows(np.random.default_rng(SEED + 2), 5, 6), jnp.float32)
    rows = np.stack([np.asarray(fn(r)) for r in x])
    np.testing.assert_allclose(np.asarray(jax.jit(fn)(x)), rows, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(jax.vmap(fn)(x)), rows, rtol=1e-6, atol=1e-7)
    jit0 = jax.jit(fn, static_argnames="axis")
    np.testing.assert_allclose(np.asarray(jit0(x.T, axis=0)).T, rows, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("fn", MAPS, ids=lambda f: f.__name__)
def test_integer_and_list_inputs_become_default_float(fn):
    p = fn([[3, 1, 0, -2]])
    assert p.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(p), np.asarray(fn(jnp.asarray([[3.0, 1.0, 0.0, -2.0]]))))


# ------------------------------------------------------------------------------------------
# Sparsemax
# ------------------------------------------------------------------------------------------


def test_sparsemax_matches_bisection_in_float64():
    rng = np.random.default_rng(SEED + 3)
    for scale in (0.1, 1.0, 10.0):
        for z in random_rows(rng, 20, 5, scale):
            np.testing.assert_allclose(x64(sparsemax, z), ref_sparsemax(z), rtol=0, atol=1e-12)


def test_sparsemax_matches_slsqp_projection():
    rng = np.random.default_rng(SEED + 4)
    for z in random_rows(rng, 4, 5, 0.7):
        proj, _ = slsqp_simplex_max(lambda p, z=z: -np.sum((p - z) ** 2), z.size)
        np.testing.assert_allclose(x64(sparsemax, z), proj, atol=1e-6)


def test_sparsemax_float32_matches_reference():
    z = random_rows(np.random.default_rng(SEED + 5), 20, 5)
    got = np.asarray(sparsemax(jnp.asarray(z, jnp.float32)), np.float64)
    want = np.stack([ref_sparsemax(r) for r in z.astype(np.float32)])
    np.testing.assert_allclose(got, want, atol=2e-6)


def test_sparsemax_has_exact_zeros_below_the_threshold():
    z = np.array([2.0, 1.5, 0.1, -1.0, 1.2])
    ref = ref_sparsemax(z)
    assert np.sum(ref == 0) >= 2  # the example has a nontrivial zero set
    for wide in (False, True):
        with jax.enable_x64(wide):
            p = np.asarray(sparsemax(jnp.asarray(z, jnp.float64 if wide else jnp.float32)))
        assert np.all(p[ref == 0] == 0.0)  # exact zeros, not merely small
        assert np.all(p[ref > 0] > 0.0)


def test_sparsemax_of_well_separated_scores_is_one_hot():
    rng = np.random.default_rng(SEED + 6)
    for _ in range(10):
        z = rng.normal(size=6)
        k = rng.integers(6)
        z[k] = np.delete(z, k).max() + 1.0 + rng.uniform(0.01, 3.0)
        p = np.asarray(sparsemax(jnp.asarray(z, jnp.float32)))
        np.testing.assert_array_equal(p, np.eye(6, dtype=np.float32)[k])
    # A gap just under 1 leaves the runner-up a positive probability.
    p = np.asarray(sparsemax(jnp.asarray([0.0, 0.9, -3.0])))
    assert 0 < p[0] < p[1] < 1


def test_sparsemax_jacobian_matches_closed_form_and_finite_differences():
    rng = np.random.default_rng(SEED + 7)
    checked = 0
    for z in random_rows(rng, 12, 5, 1.0):
        if not far_from_boundary(z, ref_sparsemax_tau(z)):
            continue
        s = (ref_sparsemax(z) > 0).astype(np.float64)
        closed = np.diag(s) - np.outer(s, s) / s.sum()
        with jax.enable_x64(True):
            jac = np.asarray(jax.jacobian(sparsemax)(jnp.asarray(z)))
        np.testing.assert_allclose(jac, closed, atol=1e-12)
        np.testing.assert_allclose(jac, fd_jacobian(ref_sparsemax, z), atol=1e-6)
        checked += 1
    assert checked >= 8


# ------------------------------------------------------------------------------------------
# 1.5-entmax
# ------------------------------------------------------------------------------------------


def test_entmax15_matches_bisection_in_float64():
    rng = np.random.default_rng(SEED + 8)
    for scale in (0.1, 1.0, 10.0):
        for z in random_rows(rng, 20, 5, scale):
            np.testing.assert_allclose(x64(entmax15, z), ref_entmax15(z), rtol=0, atol=1e-11)


def test_entmax15_float32_matches_reference():
    z = random_rows(np.random.default_rng(SEED + 9), 20, 5)
    got = np.asarray(entmax15(jnp.asarray(z, jnp.float32)), np.float64)
    want = np.stack([ref_entmax15(r) for r in z.astype(np.float32)])
    np.testing.assert_allclose(got, want, atol=5e-6)


def test_entmax15_convention_is_half_score_minus_tau_squared():
    # p_i = [(z_i / 2 - tau)_+]^2: sqrt(p_i) - z_i/2 is the same (-tau) on the support, and
    # every score off the support has z_j/2 <= tau. A [(z - tau)_+]^2 convention fails this.
    z = np.array([1.3, 0.4, -0.2, 0.9, -2.5])
    p = x64(entmax15, z)
    s = p > 0
    assert 1 < s.sum() < z.size
    minus_tau = np.sqrt(p[s]) - z[s] / 2
    np.testing.assert_allclose(minus_tau, minus_tau[0], atol=1e-12)
    assert np.all(z[~s] / 2 <= -minus_tau[0] + 1e-12)
    # The Peters et al. form with alpha = 1.5: [(alpha - 1) z - tau]_+^(1 / (alpha - 1)).
    alpha = 1.5
    tau = ref_entmax15_tau(z)
    np.testing.assert_allclose(p, np.maximum((alpha - 1) * z - tau, 0) ** (1 / (alpha - 1)), atol=1e-12)


def test_entmax15_one_hot_exactly_when_the_gap_reaches_two():
    p = np.asarray(entmax15(jnp.asarray([2.05, 0.0, -1.0])))
    np.testing.assert_array_equal(p, [1.0, 0.0, 0.0])
    p = np.asarray(entmax15(jnp.asarray([1.9, 0.0, -1.0])))
    assert 0 < p[1] < p[0] < 1 and p[2] == 0.0


def test_entmax15_lies_between_softmax_and_sparsemax_in_sparsity():
    z = np.array([1.0, 0.8, 0.1, -0.4, -1.5, 0.5])
    n_sparse = np.sum(np.asarray(sparsemax(jnp.asarray(z))) > 0)
    n_ent = np.sum(np.asarray(entmax15(jnp.asarray(z))) > 0)
    n_soft = np.sum(np.asarray(expnorm.softmax(jnp.asarray(z))) > 0)
    assert n_sparse <= n_ent <= n_soft and n_sparse < n_soft


def test_entmax15_jacobian_matches_closed_form_and_finite_differences():
    rng = np.random.default_rng(SEED + 10)
    checked = 0
    for z in random_rows(rng, 12, 5, 2.0):
        if not far_from_boundary(z / 2, ref_entmax15_tau(z)):
            continue
        w = np.sqrt(ref_entmax15(z))
        closed = np.diag(w) - np.outer(w, w) / w.sum()
        with jax.enable_x64(True):
            jac = np.asarray(jax.jacobian(entmax15)(jnp.asarray(z)))
        np.testing.assert_allclose(jac, closed, atol=1e-10)
        np.testing.assert_allclose(jac, fd_jacobian(ref_entmax15, z), atol=1e-6)
        checked += 1
    assert checked >= 8


# ------------------------------------------------------------------------------------------
# Spherical and Taylor softmax
# ------------------------------------------------------------------------------------------


def test_spherical_softmax_formula_and_invariances():
    z = random_rows(np.random.default_rng(SEED + 11), 4, 5)
    got = x64(spherical_softmax, z)
    np.testing.assert_allclose(got, z**2 / np.sum(z**2, axis=-1, keepdims=True), rtol=1e-14)
    np.testing.assert_allclose(x64(spherical_softmax, -3.5 * z), got, rtol=1e-14)
    signs = np.where(np.arange(5) % 2 == 0, 1.0, -1.0)
    np.testing.assert_allclose(x64(spherical_softmax, z * signs), got, rtol=1e-14)


def test_spherical_softmax_eps():
    z = np.array([[1.0, 2.0, 2.0], [0.0, 0.0, 0.0]])
    got = x64(spherical_softmax, z, eps=1.0)
    np.testing.assert_allclose(got[0], np.array([1.0, 4.0, 4.0]) / 10.0, rtol=1e-14)
    np.testing.assert_array_equal(got[1], 0.0)
    assert np.all(np.isnan(x64(spherical_softmax, z)[1]))  # eps = 0: 0 / 0
    assert np.asarray(spherical_softmax(jnp.asarray([0.0, 3.0]))).tolist() == [0.0, 1.0]


def test_taylor_softmax_formula_positivity_and_non_monotonicity():
    z = np.concatenate([random_rows(np.random.default_rng(SEED + 12), 3, 6, 5.0), [[-1.0] * 6]])
    got = x64(taylor_softmax, z)
    q = 1 + z + z**2 / 2
    np.testing.assert_allclose(got, q / q.sum(axis=-1, keepdims=True), rtol=1e-14)
    assert np.all(got > 0)
    p = np.asarray(taylor_softmax(jnp.asarray([-1.0, 0.0, -5.0])))
    assert p[0] < p[1] < p[2]  # weight is smallest at -1 and grows again below it


@pytest.mark.parametrize("fn", [spherical_softmax, taylor_softmax], ids=lambda f: f.__name__)
def test_polynomial_maps_gradients_match_finite_differences(fn):
    z = np.array([0.7, -1.3, 0.2, 2.1])
    ref = {
        spherical_softmax: lambda v: v**2 / np.sum(v**2),
        taylor_softmax: lambda v: (1 + v + v**2 / 2) / np.sum(1 + v + v**2 / 2),
    }[fn]
    with jax.enable_x64(True):
        jac = np.asarray(jax.jacobian(fn)(jnp.asarray(z)))
    np.testing.assert_allclose(jac, fd_jacobian(ref, z), atol=1e-7)


# ------------------------------------------------------------------------------------------
# Fenchel-Young losses
# ------------------------------------------------------------------------------------------

LOSSES = [(sparsemax_loss, sparsemax), (entmax15_loss, entmax15)]
LOSS_IDS = ["sparsemax_loss", "entmax15_loss"]


def omega_sparsemax(p):
    return 0.5 * np.sum(p**2)


def omega_entmax15(p):
    return (np.sum(p**1.5) - 1.0) / 0.75  # negative Tsallis 1.5-entropy on the simplex


@pytest.mark.parametrize(("loss", "pred"), LOSSES, ids=LOSS_IDS)
def test_fy_loss_gradient_is_prediction_minus_target(loss, pred):
    rng = np.random.default_rng(SEED + 13)
    z = random_rows(rng, 6, 5, 1.5)
    y = np.concatenate([rng.dirichlet(np.ones(5), size=3), np.eye(5)[rng.integers(5, size=3)]])
    with jax.enable_x64(True):
        g = np.asarray(jax.grad(lambda a: loss(a, jnp.asarray(y)).sum())(jnp.asarray(z)))
    want = np.stack([{sparsemax: ref_sparsemax, entmax15: ref_entmax15}[pred](r) for r in z]) - y
    np.testing.assert_allclose(g, want, atol=1e-10)


def test_sparsemax_loss_matches_martins_one_hot_formula():
    rng = np.random.default_rng(SEED + 14)
    for z in random_rows(rng, 10, 5, 1.5):
        k = int(rng.integers(5))
        tau = ref_sparsemax_tau(z)
        s = z > tau
        want = -z[k] + 0.5 * np.sum(z[s] ** 2 - tau**2) + 0.5
        got = float(x64(sparsemax_loss, z, np.eye(5)[k]))
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize(
    ("loss", "omega"), [(sparsemax_loss, omega_sparsemax), (entmax15_loss, omega_entmax15)], ids=LOSS_IDS
)
def test_fy_loss_equals_conjugate_plus_regularizer_minus_inner_product(loss, omega):
    rng = np.random.default_rng(SEED + 15)
    for _ in range(3):
        z = rng.normal(size=5)
        y = rng.dirichlet(np.ones(5))
        _, conj = slsqp_simplex_max(lambda p, z=z: p @ z - omega(np.maximum(p, 0)), 5)
        want = conj + omega(y) - z @ y
        np.testing.assert_allclose(float(x64(loss, z, y)), want, atol=1e-6)


@pytest.mark.parametrize(("loss", "pred"), LOSSES, ids=LOSS_IDS)
def test_fy_loss_is_nonnegative_and_zero_at_the_prediction(loss, pred):
    rng = np.random.default_rng(SEED + 16)
    z = random_rows(rng, 20, 5, 2.0)
    y = rng.dirichlet(np.ones(5), size=20)
    with jax.enable_x64(True):
        zz = jnp.asarray(z)
        vals = np.asarray(loss(zz, jnp.asarray(y)))
        at_pred = np.asarray(loss(zz, pred(zz)))
    assert np.all(vals > 0)  # Dirichlet targets are never exactly the prediction
    np.testing.assert_allclose(at_pred, 0.0, atol=1e-13)
    # Well-separated scores: the prediction is one-hot, and so is the target -> loss exactly 0.
    z1 = np.array([[5.0, 0.0, -1.0, 0.5]])
    one_hot = np.array([[1.0, 0.0, 0.0, 0.0]])
    assert float(loss(jnp.asarray(z1, jnp.float32), jnp.asarray(one_hot, jnp.float32))[0]) == 0.0
    assert float(loss(jnp.asarray(z1, jnp.float32), jnp.asarray(one_hot[:, ::-1].copy()))[0]) > 0


@pytest.mark.parametrize(("loss", "pred"), LOSSES, ids=LOSS_IDS)
def test_fy_loss_axis_shape_and_neg_inf_logit(loss, pred):
    rng = np.random.default_rng(SEED + 17)
    z = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
    y = jnp.asarray(rng.dirichlet(np.ones(5), size=3).T, jnp.float32)
    out = loss(z, y, axis=0)
    assert out.shape == (3,) and out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), np.asarray(loss(z.T, y.T)), rtol=1e-6)
    # -inf logit with target 0: ignored (finite loss, finite gradient); with target > 0: +inf.
    zi = jnp.asarray([1.0, 0.2, -jnp.inf])
    l0 = loss(zi, jnp.asarray([1.0, 0.0, 0.0]))
    assert np.isfinite(float(l0))
    np.testing.assert_allclose(float(l0), float(loss(zi[:2], jnp.asarray([1.0, 0.0]))), rtol=1e-6)
    g = np.asarray(jax.grad(loss)(zi, jnp.asarray([1.0, 0.0, 0.0])))
    np.testing.assert_allclose(g, np.asarray(pred(zi)) - [1.0, 0.0, 0.0], atol=1e-6)
    assert float(loss(zi, jnp.asarray([0.5, 0.0, 0.5]))) == np.inf


# ------------------------------------------------------------------------------------------
# Special values and errors
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [sparsemax, entmax15], ids=lambda f: f.__name__)
def test_sparse_maps_special_values(fn):
    x = jnp.asarray(
        [
            [1.0, -jnp.inf, 0.5],
            [jnp.nan, 0.0, 1.0],
            [jnp.inf, 0.0, 1.0],
            [-jnp.inf, -jnp.inf, -jnp.inf],
            [0.3, 0.1, 0.2],
        ]
    )
    p = np.asarray(fn(x))
    assert p[0, 1] == 0.0
    np.testing.assert_allclose(p[0], np.asarray(fn(jnp.asarray([1.0, -1e30, 0.5]))), atol=1e-7)
    assert np.all(np.isnan(p[1:4]))
    np.testing.assert_allclose(p[4], np.asarray(fn(x[4])), rtol=1e-7)  # other rows unaffected
    assert np.all(np.isfinite(np.asarray(jax.jacobian(fn)(x[0]))))


@pytest.mark.parametrize("fn", MAPS, ids=lambda f: f.__name__)
def test_bad_inputs_raise_clear_errors(fn):
    with pytest.raises(TypeError, match="complex"):
        fn(jnp.asarray([1 + 1j, 2.0]))
    with pytest.raises(TypeError, match="single int"):
        fn(jnp.ones((2, 3)), axis=(0, 1))
    with pytest.raises(TypeError, match="single int"):
        fn(jnp.ones((2, 3)), axis=None)
    with pytest.raises(ValueError, match="out of range"):
        fn(jnp.ones((2, 3)), axis=2)
    with pytest.raises(ValueError, match="scalar"):
        fn(jnp.asarray(1.0))
    with pytest.raises(ValueError, match="size 0"):
        fn(jnp.ones((2, 0)))
    with pytest.raises(TypeError, match="single int"):  # also under jit: a trace-time check
        jax.jit(lambda a: fn(a, axis=(0,)))(jnp.ones((2, 3)))


def test_loss_and_eps_errors():
    for loss in (sparsemax_loss, entmax15_loss):
        with pytest.raises(ValueError, match="shape"):
            loss(jnp.ones((2, 3)), jnp.ones((2, 4)) / 4)
        with pytest.raises(TypeError, match="complex"):
            loss(jnp.ones(3), jnp.asarray([1j, 0, 0]))
    for bad in (-1.0, np.inf, np.nan):
        with pytest.raises(ValueError, match="eps"):
            spherical_softmax(jnp.ones(3), eps=bad)
    with pytest.raises(ValueError, match="eps"):
        spherical_softmax(jnp.ones(3), eps=jnp.ones(2))


@pytest.mark.parametrize("fn", MAPS, ids=lambda f: f.__name__)
def test_single_class_gets_probability_one(fn):
    np.testing.assert_array_equal(np.asarray(fn(jnp.asarray([[-3.0], [0.5], [7.0]]))), 1.0)


def test_public_names_are_exported():
    for name in (
        "sparsemax",
        "entmax15",
        "spherical_softmax",
        "taylor_softmax",
        "sparsemax_loss",
        "entmax15_loss",
    ):
        assert name in expnorm.__all__ and callable(getattr(expnorm, name))
    for name in ("softmax", "logsumexp", "linear_normalize"):  # earlier entries kept
        assert name in expnorm.__all__


# ------------------------------------------------------------------------------------------
# Property tests
# ------------------------------------------------------------------------------------------

# Two lengths only: every new shape costs a compilation, and 2 and 5 cover the cases (a pair,
# and rows long enough for supports of every size in between); length 1 is a unit test.
_scores = st.floats(min_value=-20, max_value=20, allow_nan=False, allow_subnormal=False)
rows = st.sampled_from([2, 5]).flatmap(
    lambda n: st.lists(_scores, min_size=n, max_size=n).map(lambda v: np.asarray(v, np.float64))
)

_jit64 = {f: jax.jit(f) for f in MAPS}
_vg64 = {f: jax.jit(jax.value_and_grad(f)) for f in (sparsemax_loss, entmax15_loss)}


def run64(fn, z):
    with jax.enable_x64(True):
        return np.asarray(_jit64[fn](jnp.asarray(z)))


@PROPS
@given(rows)
def test_property_sparse_maps_match_references(z):
    np.testing.assert_allclose(run64(sparsemax, z), ref_sparsemax(z), atol=1e-10)
    np.testing.assert_allclose(run64(entmax15, z), ref_entmax15(z), atol=1e-9)


@PROPS
@given(rows)
def test_property_all_maps_in_simplex(z):
    for fn in MAPS:
        if fn is spherical_softmax and not np.any(z != 0):
            continue  # 0 / 0 by definition
        p = run64(fn, z)
        assert np.all(p >= 0), fn.__name__
        np.testing.assert_allclose(p.sum(), 1.0, atol=1e-12, err_msg=fn.__name__)


@PROPS
@given(rows, st.floats(min_value=-50, max_value=50), st.randoms(use_true_random=False))
def test_property_shift_invariance_and_permutation_equivariance(z, c, rnd):
    perm = np.arange(z.size)
    rnd.shuffle(perm)
    for fn, ref in ((sparsemax, ref_sparsemax), (entmax15, ref_entmax15)):
        p = run64(fn, z)
        np.testing.assert_allclose(run64(fn, z + c), ref(z), atol=1e-9)
        np.testing.assert_allclose(run64(fn, z[perm]), p[perm], atol=1e-12)


@PROPS
@given(rows, st.integers(min_value=0, max_value=5))
def test_property_fy_gradient_is_prediction_minus_one_hot(z, k):
    k = k % z.size
    y = np.eye(z.size)[k]
    for loss, ref in ((sparsemax_loss, ref_sparsemax), (entmax15_loss, ref_entmax15)):
        with jax.enable_x64(True):
            val, g = _vg64[loss](jnp.asarray(z), jnp.asarray(y))
        assert float(val) >= -1e-12
        np.testing.assert_allclose(np.asarray(g), ref(z) - y, atol=1e-9)
