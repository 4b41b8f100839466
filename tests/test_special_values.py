"""Every special value documented in the docstrings, value and gradient.

Expected values are derived by hand (closed forms evaluated in float64 NumPy), e.g.
softmax([1, 2, -inf]) = [1/(1+e), e/(1+e), 0] and its Jacobian diag(p) - p p^T.
Gradients are checked through full Jacobians so that every entry (including the ones at
-inf, +inf, masked or NaN positions) is pinned down.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import expnorm

INF = np.inf
NAN = np.nan
E = np.e
RTOL = 4 * 2.0**-23  # a few float32 ulp
ATOL = 1e-7

# Compile once, call many times: eager dispatch recompiles every primitive per shape and XLA
# compiles of these functions take ~0.5 s, so every case below uses a (2, 4) array (one row
# for the special value, one ordinary row as a control) and goes through the same bundles.


def _bundle(x, where):
    sm = lambda z: expnorm.softmax(z, where=where)
    lsm = lambda z: expnorm.log_softmax(z, where=where)
    lse = lambda z: expnorm.logsumexp(z, axis=-1, where=where)
    lse_s, sign = expnorm.logsumexp(x, axis=-1, where=where, return_sign=True)
    return dict(p=sm(x), ls=lsm(x), lse=lse(x), lse_s=lse_s, sign=sign,
                jp=jax.jacobian(sm)(x), jl=jax.jacobian(lsm)(x), jlse=jax.jacobian(lse)(x))


_bundle_nomask = jax.jit(lambda x: _bundle(x, None))
_bundle_mask = jax.jit(_bundle)


def run(x, where=None):
    """All values and Jacobians for a (2, 4) float32 input; Jacobians are per row (4, 4)."""
    x = jnp.asarray(np.asarray(x, np.float32))
    assert x.shape == (2, 4)
    out = _bundle_nomask(x) if where is None else _bundle_mask(x, jnp.asarray(where))
    out = {k: np.asarray(v, np.float64) for k, v in out.items()}
    for k in ("jp", "jl"):  # (2, 4, 2, 4) -> rows; cross-row blocks must be 0
        full = out[k]
        out[k] = np.stack([full[r, :, r, :] for r in range(2)])
        out[k + "_cross"] = np.stack([full[r, :, 1 - r, :] for r in range(2)])
    full = out["jlse"]  # (2, 2, 4)
    out["jlse"] = np.stack([full[r, r] for r in range(2)])
    out["jlse_cross"] = np.stack([full[r, 1 - r] for r in range(2)])
    return out


def _ce_bundle(x, y, labels):
    return dict(lp=expnorm.softmax_cross_entropy(x, y),
                gp=jax.grad(lambda z: jnp.sum(expnorm.softmax_cross_entropy(z, y)))(x),
                ll=expnorm.softmax_cross_entropy_with_integer_labels(x, labels),
                gl=jax.grad(lambda z: jnp.sum(
                    expnorm.softmax_cross_entropy_with_integer_labels(z, labels)))(x))


_ce_jit = jax.jit(_ce_bundle)


def run_ce(x, y, labels):
    out = _ce_jit(jnp.asarray(np.asarray(x, np.float32)), jnp.asarray(np.asarray(y, np.float32)),
                  jnp.asarray(labels, jnp.int32))
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


def arr(*v):
    return jnp.array(v, jnp.float32)


def assert_close(got, want, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want, np.float64),
                               rtol=rtol, atol=atol)


def softmax_jacobian(p):
    """Closed form: d softmax_i / d x_j = p_i (delta_ij - p_j)."""
    p = np.asarray(p, np.float64)
    return np.diag(p) - np.outer(p, p)


def log_softmax_jacobian(p, finite_out):
    """d log_softmax_i / d x_j = delta_ij - p_j at finite outputs, 0 at -inf outputs."""
    p = np.asarray(p, np.float64)
    j = np.eye(len(p)) - p[None, :]
    return np.where(np.asarray(finite_out)[:, None], j, 0.0)


def probs(x):
    """Hand formula e^x / sum e^x in float64 for finite-or--inf rows."""
    e = np.exp(np.asarray(x, np.float64))
    return e / e.sum()


# An ordinary row next to every special one: it must come out exactly as if alone.
CTRL = np.array([1.0, 2.0, 0.5, -1.0])
P_CTRL = probs(CTRL)
LSE_CTRL = np.log(np.exp(CTRL).sum())


def check_control_row(out, r=1):
    assert_close(out["p"][r], P_CTRL)
    assert_close(out["ls"][r], CTRL - LSE_CTRL)
    assert_close(out["lse"][r], LSE_CTRL)
    assert out["sign"][r] == 1.0
    assert_close(out["jp"][r], softmax_jacobian(P_CTRL))
    assert_close(out["jl"][r], log_softmax_jacobian(P_CTRL, [True] * 4))
    assert_close(out["jlse"][r], P_CTRL)


def check_rows_independent(out):
    for k in ("jp_cross", "jl_cross", "jlse_cross"):
        np.testing.assert_array_equal(out[k], 0.0)


P12 = np.array([1 / (1 + E), E / (1 + E), 0.0, 0.0])  # softmax of [1, 2, -inf, -inf]
L12 = np.log1p(E)  # LSE([1, 2]) = 1 + log(1 + e)


# --------------------------------------------------------------------------- -inf entries


def test_softmax_of_zero_and_neg_inf_is_exactly_one_zero():
    out = run([[0.0, -INF, -INF, -INF], CTRL])
    np.testing.assert_array_equal(out["p"][0], [1.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(out["ls"][0], [0.0, -INF, -INF, -INF])
    assert out["lse"][0] == 0.0 and out["sign"][0] == 1.0
    # [0, -inf, ...] is locally constant for softmax / log_softmax: Jacobians exactly 0.
    np.testing.assert_array_equal(out["jp"][0], 0.0)
    np.testing.assert_array_equal(out["jl"][0], 0.0)
    np.testing.assert_array_equal(out["jlse"][0], [1.0, 0.0, 0.0, 0.0])
    check_control_row(out)
    check_rows_independent(out)


def test_neg_inf_entry_values():
    out = run([[1.0, 2.0, -INF, -INF], [-INF, 3.0, -INF, 3.0]])
    assert_close(out["p"][0], P12)
    np.testing.assert_array_equal(out["p"][0, 2:], 0.0)  # exactly
    np.testing.assert_array_equal(out["p"][1], [0.0, 0.5, 0.0, 0.5])
    assert_close(out["ls"][0, :2], [-L12, 1.0 - L12])
    np.testing.assert_array_equal(out["ls"][0, 2:], -INF)
    assert_close(out["ls"][1, [1, 3]], [-np.log(2.0)] * 2)
    assert_close(out["lse"], [1.0 + L12, 3.0 + np.log(2.0)])


def test_neg_inf_entry_gradients():
    out = run([[1.0, 2.0, -INF, -INF], CTRL])
    assert np.all(np.isfinite(out["jp"])) and np.all(np.isfinite(out["jl"]))
    assert_close(out["jp"][0], softmax_jacobian(P12))
    np.testing.assert_array_equal(out["jp"][0][2:], 0.0)
    np.testing.assert_array_equal(out["jp"][0][:, 2:], 0.0)
    assert_close(out["jl"][0], log_softmax_jacobian(P12, [True, True, False, False]))
    assert_close(out["jlse"][0], P12)
    np.testing.assert_array_equal(out["jlse"][0, 2:], 0.0)
    check_control_row(out)
    check_rows_independent(out)


# --------------------------------------------------------------------------- empty rows


def test_all_neg_inf_row():
    out = run([[-INF] * 4, CTRL])
    np.testing.assert_array_equal(out["p"][0], 0.0)  # zeros, not NaN
    np.testing.assert_array_equal(out["ls"][0], -INF)
    assert out["lse"][0] == -INF and out["lse_s"][0] == -INF
    assert out["sign"][0] == 0.0
    for k in ("jp", "jl", "jlse"):  # gradient 0, not NaN
        np.testing.assert_array_equal(out[k][0], 0.0)
    check_control_row(out)
    check_rows_independent(out)


X_FIN = np.array([[1.0, 2.0, 3.0, 4.0], CTRL])


def test_fully_masked_row():
    mask = np.array([[False] * 4, [True] * 4])
    out = run(X_FIN, mask)
    np.testing.assert_array_equal(out["p"][0], 0.0)
    np.testing.assert_array_equal(out["ls"][0], -INF)
    assert out["lse"][0] == -INF and out["sign"][0] == 0.0
    for k in ("jp", "jl", "jlse"):
        assert not np.any(np.isnan(out[k]))
        np.testing.assert_array_equal(out[k][0], 0.0)
    check_control_row(out)
    check_rows_independent(out)


def test_partially_masked_row_values_and_gradients():
    mask = np.array([[True, False, True, False], [True] * 4])
    out = run(X_FIN, mask)
    p = np.array([1 / (1 + E**2), 0.0, E**2 / (1 + E**2), 0.0])  # softmax of [1, _, 3, _]
    assert_close(out["p"][0], p)
    np.testing.assert_array_equal(out["p"][0, [1, 3]], 0.0)
    np.testing.assert_array_equal(out["ls"][0, [1, 3]], -INF)
    assert_close(out["ls"][0, [0, 2]], [-2.0 - np.log1p(E**-2), -np.log1p(E**-2)])
    assert_close(out["lse"][0], 3.0 + np.log1p(E**-2))
    assert_close(out["jp"][0], softmax_jacobian(p))
    np.testing.assert_array_equal(out["jp"][0][:, [1, 3]], 0.0)  # masked entries do not move
    assert_close(out["jl"][0], log_softmax_jacobian(p, [True, False, True, False]))
    assert_close(out["jlse"][0], p)
    check_control_row(out)


def test_masked_entries_may_hold_nan_or_inf():
    # Masked entries take no part: their values (even NaN or +inf) are ignored.
    mask = np.array([[False, True, True, False], [True] * 4])
    out = run([[NAN, 1.0, 2.0, INF], CTRL], mask)
    p = np.array([0.0, 1 / (1 + E), E / (1 + E), 0.0])
    assert_close(out["p"][0], p)
    assert_close(out["lse"][0], 1.0 + L12)
    assert np.all(np.isfinite(out["jp"])) and np.all(np.isfinite(out["jlse"]))
    assert_close(out["jp"][0], softmax_jacobian(p))
    assert_close(out["jlse"][0], p)
    check_control_row(out)


def test_masked_attention_loss_gradient_is_finite():
    # The classic NaN trap: a fully masked query row in attention, reduced to a scalar loss.
    scores = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)), jnp.float32)
    mask = np.array([[True, True, False, True], [False] * 4, [True, False, False, False]])
    v = jnp.asarray(np.random.default_rng(1).normal(size=(4, 2)), jnp.float32)

    def loss(s):
        out = expnorm.softmax(s, where=mask) @ v
        lse = expnorm.logsumexp(s, axis=-1, where=mask)
        ls = expnorm.log_softmax(s, where=mask)
        return (jnp.sum(out**2) + jnp.sum(jnp.where(jnp.isfinite(lse), lse, 0.0))
                + jnp.sum(jnp.where(mask, ls, 0.0)))

    g = np.asarray(jax.jit(jax.grad(loss))(scores))
    assert np.all(np.isfinite(g))
    np.testing.assert_array_equal(g[1], 0.0)  # the fully masked row
    np.testing.assert_array_equal(g[~mask], 0.0)  # masked entries
    # row 2 has a single kept entry: softmax is exactly [1, 0, 0, 0], locally constant, so
    # only lse (gradient 1 at the kept entry) and log_softmax (constant 0) contribute.
    assert_close(g[2], [1.0, 0.0, 0.0, 0.0])


def test_all_weights_zero_is_an_empty_sum():
    x = jnp.asarray(X_FIN, jnp.float32)
    b = jnp.asarray([[0.0] * 4, [1.0] * 4])

    def f(a):
        lse, sign = expnorm.logsumexp(a, axis=-1, b=b, return_sign=True)
        j = jax.jacobian(lambda a: expnorm.logsumexp(a, axis=-1, b=b))(a)
        return lse, sign, j

    lse, sign, j = (np.asarray(v) for v in jax.jit(f)(x))
    assert lse[0] == -INF and sign[0] == 0.0
    assert_close(lse[1], LSE_CTRL)
    np.testing.assert_array_equal(j[0], 0.0)
    assert_close(j[1, 1], P_CTRL)


# --------------------------------------------------------------------------- +inf entries


def test_single_pos_inf_entry():
    out = run([[1.0, INF, 2.0, -INF], [INF, -INF, 0.0, 3.0]])
    np.testing.assert_array_equal(out["p"], [[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(out["ls"][0], [-INF, 0.0, -INF, -INF])  # -log(1) = 0
    np.testing.assert_array_equal(out["lse"], [INF, INF])
    np.testing.assert_array_equal(out["sign"], [1.0, 1.0])
    # one-hot p: locally constant, so the limit Jacobians are 0; d lse = p
    for k in ("jp", "jl"):
        assert np.all(np.isfinite(out[k]))
        np.testing.assert_array_equal(out[k], 0.0)
    np.testing.assert_array_equal(out["jlse"], out["p"])


def test_two_pos_inf_entries_share_the_mass():
    out = run([[INF, 1.0, INF, -INF], [INF] * 4])
    p = np.array([0.5, 0.0, 0.5, 0.0])
    np.testing.assert_array_equal(out["p"][0], p)
    np.testing.assert_array_equal(out["p"][1], 0.25)
    assert_close(out["ls"][0, [0, 2]], [-np.log(2.0)] * 2)
    np.testing.assert_array_equal(out["ls"][0, [1, 3]], -INF)
    assert_close(out["ls"][1], [-np.log(4.0)] * 4)
    np.testing.assert_array_equal(out["lse"], [INF, INF])


def test_pos_inf_gradients_are_the_limit():
    # The value is the limit as the +inf entries grow together; so is the derivative,
    # d softmax = p * (dx - <p, dx>), with p the limit distribution.
    out = run([[INF, 1.0, INF, -INF], [INF] * 4])
    p = np.array([0.5, 0.0, 0.5, 0.0])
    for k in ("jp", "jl", "jlse"):
        assert np.all(np.isfinite(out[k]))
    assert_close(out["jp"][0], softmax_jacobian(p))
    assert_close(out["jp"][1], softmax_jacobian(np.full(4, 0.25)))
    assert_close(out["jl"][0], log_softmax_jacobian(p, [True, False, True, False]))
    assert_close(out["jl"][1], log_softmax_jacobian(np.full(4, 0.25), [True] * 4))
    assert_close(out["jlse"][0], p)
    check_rows_independent(out)


# --------------------------------------------------------------------------- NaN entries


@pytest.mark.parametrize("row", [[1.0, NAN, 2.0, 3.0], [NAN, -INF, -INF, -INF],
                                 [INF, NAN, 0.0, 0.0], [NAN] * 4])
def test_nan_entry_makes_the_row_nan(row):
    out = run([row, CTRL])
    assert np.all(np.isnan(out["p"][0]))
    assert np.all(np.isnan(out["ls"][0]))
    assert np.isnan(out["lse"][0]) and np.isnan(out["lse_s"][0])
    assert np.isnan(out["sign"][0])
    # The NaN row's derivative is NaN (as in jax.nn): NaN propagates, it is not hidden.
    assert np.all(np.isnan(out["jp"][0]))
    assert np.all(np.isnan(out["jlse"][0]))
    # The other row is untouched (cross-row Jacobian blocks are not pinned: like jax.nn,
    # reverse mode multiplies the NaN row's values by zero cotangents there).
    check_control_row(out)


# --------------------------------------------------------------------------- cross-entropy

Z = np.array([0.0, -INF, 1.0, -INF])
PZ = np.array([1 / (1 + E), 0.0, E / (1 + E), 0.0])  # softmax(Z)
Y_CTRL = np.array([0.1, 0.2, 0.3, 0.4])


def test_ce_neg_inf_logit_with_zero_target_is_finite():
    y = np.array([0.5, 0.0, 0.5, 0.0])
    out = run_ce([Z, CTRL], [y, Y_CTRL], [2, 3])
    # -(0.5 (0 - L) + 0.5 (1 - L)) with L = log(1 + e)
    assert np.all(np.isfinite(out["lp"]))
    assert_close(out["lp"][0], L12 - 0.5)
    assert_close(out["lp"][1], -np.sum(Y_CTRL * (CTRL - LSE_CTRL)))
    assert np.all(np.isfinite(out["gp"]))
    assert_close(out["gp"][0], 1.0 * PZ - y)  # sum(y) softmax - y
    assert_close(out["gp"][1], 1.0 * P_CTRL - Y_CTRL)
    # labels: class 2 (finite logit) next to -inf logits
    assert_close(out["ll"][0], L12 - 1.0)
    assert_close(out["ll"][1], LSE_CTRL - CTRL[3])
    assert np.all(np.isfinite(out["gl"]))
    assert_close(out["gl"][0], PZ - np.eye(4)[2])
    assert_close(out["gl"][1], P_CTRL - np.eye(4)[3])


def test_optax_gives_nan_for_neg_inf_logit_with_zero_target():
    # optax issue 896: 0 * log(0) evaluates to 0 * -inf = NaN in optax; expnorm returns L - 1/2.
    z = jnp.asarray(Z, jnp.float32)
    y = jnp.array([0.5, 0.0, 0.5, 0.0])
    assert np.isnan(float(optax.softmax_cross_entropy(z, y)))
    assert_close(run_ce([Z, CTRL], [y, Y_CTRL], [0, 0])["lp"][0], L12 - 0.5)


def test_ce_labels_neg_inf_logit_at_label_gives_inf():
    out = run_ce([Z, CTRL], [Y_CTRL, Y_CTRL], [1, 0])
    assert out["ll"][0] == INF
    assert_close(out["ll"][1], LSE_CTRL - CTRL[0])


def test_ce_labels_neg_inf_logit_at_label_gradient_is_finite():
    out = run_ce([Z, CTRL], [Y_CTRL, Y_CTRL], [1, 0])
    assert np.all(np.isfinite(out["gl"]))
    assert_close(out["gl"][1], P_CTRL - np.eye(4)[0])


def test_ce_labels_neg_inf_logit_at_label_gradient_is_softmax_minus_onehot():
    # Documented: "Gradient with respect to the logits: softmax(z) - onehot(k)".
    # softmax(Z) - onehot(1) = [1/(1+e), -1, e/(1+e), 0].
    out = run_ce([Z, CTRL], [Y_CTRL, Y_CTRL], [1, 0])
    assert_close(out["gl"][0], PZ - np.eye(4)[1])


def test_ce_probs_neg_inf_logit_with_positive_target_gives_inf():
    # Documented: "a class with target > 0 and logit -inf gives a loss of +inf".
    out = run_ce([Z, Z], [[0.0, 1.0, 0.0, 0.0], [0.25, 0.5, 0.25, 0.0]], [0, 0])
    np.testing.assert_array_equal(out["lp"], [INF, INF])


def test_ce_probs_neg_inf_logit_with_positive_target_gradient_is_finite():
    out = run_ce([Z, Z], [[0.0, 1.0, 0.0, 0.0], [0.25, 0.5, 0.25, 0.0]], [0, 0])
    assert np.all(np.isfinite(out["gp"]))


def test_ce_probs_neg_inf_logit_with_positive_target_gradient_formula():
    # Documented: "sum(y) * softmax(z) - y (finite at -inf logits)".
    y = np.array([[0.0, 1.0, 0.0, 0.0], [0.25, 0.5, 0.25, 0.0]])
    out = run_ce([Z, Z], y, [0, 0])
    assert_close(out["gp"], 1.0 * PZ - y)


def test_ce_nan_logit_gives_nan_loss_only_in_its_row():
    out = run_ce([[0.0, NAN, 1.0, 2.0], CTRL], [[0.5, 0.0, 0.5, 0.0], Y_CTRL], [2, 1])
    assert np.isnan(out["lp"][0]) and np.isnan(out["ll"][0])
    assert_close(out["lp"][1], -np.sum(Y_CTRL * (CTRL - LSE_CTRL)))
    assert_close(out["ll"][1], LSE_CTRL - CTRL[1])
    # NaN at a class with target 0 still poisons the row: the normalizer is NaN. The
    # gradient must not hide it either (softmax, log_softmax and logsumexp propagate NaN
    # into their gradients on purpose; a zero gradient would silently skip the example).
    assert np.isnan(out["gp"][0]).all()
    assert np.isnan(out["gl"][0]).all()


def test_ce_gradient_finite_when_training_with_padded_classes():
    # Padding classes with -inf logits and target 0 must not produce NaN gradients.
    x = np.array([[2.0, -1.0, -INF, -INF], [0.5, 0.5, 0.0, -INF]])
    y = np.array([[0.7, 0.3, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    out = run_ce(x, y, [0, 1])
    p0, p1 = probs(x[0]), probs(x[1])
    for k in ("lp", "gp", "ll", "gl"):
        assert np.all(np.isfinite(out[k]))
    assert_close(out["gp"], [p0 - y[0], p1 - y[1]])
    assert_close(out["gl"], [p0 - np.eye(4)[0], p1 - np.eye(4)[1]])
    assert_close(out["lp"], [-np.sum(y[0, :2] * np.log(p0[:2])), -np.log(p1[1])])
