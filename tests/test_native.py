"""The compiled float32 kernels (src/expnorm/_native/kernels.cc).

They must be in use here (a silent fall-back to the slower XLA path would make the benchmark
and the book wrong), they must be what the public functions call for float32 rows, and every
code path of the kernel (short rows in parallel, long rows computed twice, a few long rows
split over threads, special rows in each) must give correctly rounded results.

References are independent of the kernel: float64 NumPy exponentials summed with math.fsum
(error about 1e-16 relative, a billionth of a float32 ulp) and, for a sample, mpmath.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import expnorm
from expnorm import _native
from expnorm import numerics as N

F32_MIN_NORMAL = float(np.finfo(np.float32).tiny)
# Shapes that reach each branch of kernels.cc (for_rows / softmax_row):
SHAPES = {
    "small, one thread": (3, 50),
    "many rows in parallel, cached exp": (300, 1000),
    "batch dims": (2, 3, 4000),
    "one long row, cached": (1, 100_003),
    "rows longer than the cache, one thread each": (4, 2**18 + 7),
    "few long rows split over threads": (2, 2**18 + 3),
}


def exact_ulp32(ref: np.ndarray) -> np.ndarray:
    """ulp of the float32 number nearest each (float64) exact value."""
    exponent = np.floor(np.log2(np.abs(ref)))
    return np.exp2(exponent - 23)


def ulp_errors(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Errors in float32 ulps, over the entries whose exact value is a normal float32."""
    got, ref = np.asarray(got, np.float64).ravel(), np.asarray(ref, np.float64).ravel()
    keep = np.abs(ref) >= F32_MIN_NORMAL
    assert keep.sum() > 0, "nothing to compare"
    return np.abs(got[keep] - ref[keep]) / exact_ulp32(ref[keep])


def reference_rows(x: np.ndarray):
    """Per row: softmax, log_softmax, logsumexp in float64 with exactly summed exponentials."""
    rows = x.reshape(-1, x.shape[-1]).astype(np.float64)
    sm, ls, lse = [], [], []
    for r in rows:
        m = r.max()
        d = r - m
        e = np.exp(d)
        i = int(np.argmax(r))
        t = math.fsum(np.delete(e, i))  # the others; log1p keeps a tiny t exact
        l = math.log1p(t)
        sm.append(e / (1.0 + t))
        ls.append(d - l)
        lse.append(m + l)
    shape = x.shape
    return (np.array(sm).reshape(shape), np.array(ls).reshape(shape),
            np.array(lse).reshape(shape[:-1]))


def test_kernels_are_loaded():
    assert _native.available(), f"native kernels not in use: {_native.status()}"


@pytest.mark.parametrize(
    "fn, target",
    [(expnorm.softmax, "expnorm_softmax_f32"),
     (expnorm.log_softmax, "expnorm_log_softmax_f32"),
     (lambda x: expnorm.logsumexp(x, axis=-1), "expnorm_row_stats_f32"),
     (lambda x: expnorm.softmax_cross_entropy_with_integer_labels(
         x, jnp.zeros(x.shape[:-1], jnp.int32)), "expnorm_row_stats_f32")],
    ids=["softmax", "log_softmax", "logsumexp", "cross_entropy"])
def test_float32_rows_call_the_kernel(fn, target):
    x = jnp.zeros((4, 8), jnp.float32)
    hlo = jax.jit(fn).lower(x).compile().as_text()
    assert target in hlo


@pytest.mark.parametrize("call", [
    lambda x: expnorm.softmax(x.astype(jnp.float16)),
    lambda x: expnorm.softmax(x, axis=0),
    lambda x: expnorm.softmax(x, where=x > 0),
    lambda x: expnorm.softmax(x, temperature=2.0),
], ids=["float16", "axis 0", "mask", "temperature"])
def test_other_cases_use_xla(call):
    x = jnp.zeros((4, 8), jnp.float32)
    assert "expnorm_" not in jax.jit(call).lower(x).compile().as_text()


@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_correctly_rounded_on_every_path(shape):
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 6.0).astype(np.float32)
    flat = x.reshape(-1, shape[-1])
    flat[0, 5] = flat[0].max() + 40.0  # one dominant entry: tiny t, log-probability near 0
    flat[-1, :3] = flat[-1].max()  # a three-way tie at the max
    sm_ref, ls_ref, lse_ref = reference_rows(x)
    labels = rng.integers(0, shape[-1], shape[:-1])
    got_sm = np.asarray(expnorm.softmax(x))
    got_ls = np.asarray(expnorm.log_softmax(x))
    got_lse = np.asarray(expnorm.logsumexp(x, axis=-1))
    got_ce = np.asarray(expnorm.softmax_cross_entropy_with_integer_labels(x, labels))
    ce_ref = -np.take_along_axis(ls_ref, labels[..., None], -1)[..., 0]
    # error of the kernel's exp (2e-15) and of the reference (1e-16) are 3e-8 ulp at most
    for name, got, ref in [("softmax", got_sm, sm_ref), ("log_softmax", got_ls, ls_ref),
                           ("logsumexp", got_lse, lse_ref), ("cross-entropy", got_ce, ce_ref)]:
        err = ulp_errors(got, ref)
        assert err.max() <= 0.5001, f"{name} {shape}: {err.max():.4f} ulp"
    assert got_ls.reshape(-1, shape[-1])[0, 5] < 0  # the dominant entry kept its tiny value


@pytest.mark.parametrize("shape", [(8, 1000), (1, 100_003), (2, 2**18 + 3)],
                         ids=["rows in parallel", "one long row", "split over threads"])
def test_small_t_on_both_sides_of_the_exact_pass(shape):
    """t = sum of the others' exp(x - m): the kernel takes it as (sum of all) - 1 when
    t >= 1/64 and sums the others again below that (kExactBelow in kernels.cc). Rows with t
    from 1e-9 to 0.3, on every path; the log-probability of the max, -log1p(t), is the
    result that shows an inaccurate t."""
    rng = np.random.default_rng(7)
    rows, n = shape[0], shape[-1]
    x = (rng.standard_normal(shape) * 0.5).astype(np.float32)
    targets = np.geomspace(1e-9, 0.3, rows) if rows > 1 else np.array([0.02])
    for r, target in enumerate(targets):
        others = np.delete(np.exp(x[r].astype(np.float64)), 0).sum()
        x[r, 0] = np.float32(np.log(others / target))  # the max, so that t is about target
    sm_ref, ls_ref, lse_ref = reference_rows(x)
    for name, got, ref in [("log_softmax", expnorm.log_softmax(x), ls_ref),
                           ("softmax", expnorm.softmax(x), sm_ref),
                           ("logsumexp", expnorm.logsumexp(x, axis=-1), lse_ref)]:
        err = ulp_errors(np.asarray(got), ref)
        assert err.max() <= 0.5001, f"{name} {shape}: {err.max():.4f} ulp"
    if rows > 1:  # the max entries' log-probabilities, one per t
        lp = np.asarray(expnorm.log_softmax(x))[:, 0]
        assert ulp_errors(lp, ls_ref[:, 0]).max() <= 0.5001


def test_long_row_against_mpmath():
    """The split-over-threads path against the 50-digit mpmath reference, on a sample."""
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((2, 2**18 + 3)) * 3.0).astype(np.float32)
    got_sm, got_ls = np.asarray(expnorm.softmax(x)), np.asarray(expnorm.log_softmax(x))
    row = x[1]
    lse = N.ref_logsumexp(row, dps=40)
    idx = np.arange(0, row.size, 4099)
    import mpmath
    with mpmath.workdps(40):
        for i in idx:
            ls = mpmath.mpf(float(row[i])) - lse
            assert N.ulp_error(float(got_ls[1, i]), ls, np.float32) <= 0.5001
            assert N.ulp_error(float(got_sm[1, i]), mpmath.exp(ls), np.float32) <= 0.5001


@pytest.mark.parametrize("n", [700, 5000, 100_003, 2**18 + 5])
@pytest.mark.parametrize("rows", [1, 16])
def test_the_running_max_across_blocks(n, rows):
    """Rows whose max rises from block to block (every rescaling of the online pass), rows
    that open with a run of -inf, and a late +inf or NaN, against the fsum reference."""
    ramp = np.linspace(-30.0, 30.0, n).astype(np.float32)  # a new max in every block
    late_start = np.full(n, -np.inf, np.float32)
    late_start[600:] = np.random.default_rng(n).standard_normal(n - 600).astype(np.float32)
    x = np.stack([ramp, ramp[::-1].copy(), late_start] * rows)
    sm_ref, ls_ref, lse_ref = reference_rows(np.where(np.isinf(x), -1e30, x))
    sm, ls = np.asarray(expnorm.softmax(x)), np.asarray(expnorm.log_softmax(x))
    lse = np.asarray(expnorm.logsumexp(x, axis=-1))
    assert ulp_errors(sm, sm_ref).max() <= 0.5001
    assert ulp_errors(lse, lse_ref).max() <= 0.5001
    finite = np.isfinite(x)
    assert ulp_errors(ls[finite], ls_ref[finite]).max() <= 0.5001
    assert (sm[~finite] == 0).all() and (ls[~finite] == -np.inf).all()
    late_inf, late_nan = x[:2].copy(), x[:2].copy()
    late_inf[:, -1], late_nan[:, -1] = np.inf, np.nan
    p = np.asarray(expnorm.softmax(late_inf))
    assert (p[:, -1] == 1).all() and (p[:, :-1] == 0).all()
    assert np.isnan(np.asarray(expnorm.softmax(late_nan))).all()
    assert np.isnan(np.asarray(expnorm.logsumexp(late_nan, axis=-1))).all()


@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_special_rows_on_every_path(shape):
    inf, nan = np.inf, np.nan
    n = shape[-1]
    rows = np.zeros((5, n), np.float32)
    rows[0, 1] = nan  # a NaN row
    rows[1, :] = -inf  # no distribution
    rows[2, :2] = inf  # two +inf entries share the mass
    rows[3, 1:] = -inf  # one finite entry, the rest -inf
    rows[4, :] = np.arange(n, dtype=np.float32) % 7  # an ordinary row
    batch = np.resize(rows, (math.prod(shape[:-1]) * 5, n)) if len(shape) > 1 else rows
    sm = np.asarray(expnorm.softmax(batch))
    ls = np.asarray(expnorm.log_softmax(batch))
    lse = np.asarray(expnorm.logsumexp(batch, axis=-1))
    for k in range(0, batch.shape[0], 5):
        assert np.isnan(sm[k]).all() and np.isnan(ls[k]).all() and np.isnan(lse[k])
        assert (sm[k + 1] == 0).all() and (ls[k + 1] == -inf).all() and lse[k + 1] == -inf
        assert (sm[k + 2, :2] == 0.5).all() and (sm[k + 2, 2:] == 0).all()
        assert (ls[k + 2, :2] == np.float32(-math.log(2))).all() and (ls[k + 2, 2:] == -inf).all()
        assert lse[k + 2] == inf
        assert sm[k + 3, 0] == 1 and (sm[k + 3, 1:] == 0).all()
        assert ls[k + 3, 0] == 0 and (ls[k + 3, 1:] == -inf).all() and lse[k + 3] == 0
        assert abs(sm[k + 4].sum(dtype=np.float64) - 1) < 1e-5


def test_vmap_jit_and_grad_agree_with_the_xla_path():
    from expnorm._rows import fast_softmax, fast_stats
    from expnorm._wide import wide_context

    x = (np.random.default_rng(3).standard_normal((6, 5, 300)) * 4).astype(np.float32)
    direct = np.asarray(expnorm.softmax(x))
    assert np.array_equal(np.asarray(jax.vmap(expnorm.softmax)(x)), direct)
    assert np.array_equal(np.asarray(jax.jit(expnorm.softmax)(x)), direct)
    with wide_context():
        xla = np.asarray(fast_softmax(fast_stats(jnp.asarray(x), (2,), None), (2,))
                         .astype(jnp.float32))
    assert np.abs(direct.astype(np.float64) - xla).max() <= np.spacing(np.float32(1))
    g = jax.grad(lambda a: jnp.sum(expnorm.log_softmax(a)[..., 0]))(jnp.asarray(x))
    assert np.isfinite(np.asarray(g)).all()
    # d/dx_j of log_softmax(x)_0 summed over rows = onehot_0 - p: its row sums vanish
    assert np.abs(np.asarray(g).sum(-1)).max() < 1e-5

