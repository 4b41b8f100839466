"""Accuracy of expnorm against an independent mpmath reference (expnorm.numerics).

Target (the project issue): on every input whose exact result is a finite normal number of
the output dtype, float16, bfloat16 and float32 results are within 1 ulp of the exact value
and float64 results within 4 ulp. That covers softmax, log_softmax, logsumexp and both
cross-entropies, including the confident case where the loss is tiny.

Every expected value is computed here, in mpmath, from the very inputs given to expnorm;
nothing is copied from the library's output. Outputs whose exact value is zero, subnormal or
beyond the dtype's range are not held to the ulp target (zeros and infinities must still be
exact); each check asserts that it measured something, so no test passes vacuously.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import ml_dtypes
import mpmath
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import expnorm
from expnorm import numerics as N

BF16 = np.dtype(ml_dtypes.bfloat16)
DTYPES = [np.dtype(np.float16), BF16, np.dtype(np.float32), np.dtype(np.float64)]
IDS = ["float16", "bfloat16", "float32", "float64"]
TOL = {np.dtype(np.float16): 1.0, BF16: 1.0, np.dtype(np.float32): 1.0, np.dtype(np.float64): 4.0}
by_dtype = pytest.mark.parametrize("dtype", DTYPES, ids=IDS)


# --------------------------------------------------------------------------------------------
# helpers


def run(fn, *arrays):
    """Evaluate ``fn`` on NumPy inputs, with x64 on (only inside) when any input is float64."""
    wide = any(np.asarray(a).dtype == np.float64 for a in arrays)
    with jax.enable_x64(wide):
        out = fn(*[jnp.asarray(a) for a in arrays])
        return np.asarray(out)


def cast(values, dtype) -> np.ndarray:
    """Round float64 values to ``dtype`` (the rounded numbers are then the exact inputs)."""
    return np.asarray(values, np.float64).astype(dtype)


def check(got, refs, dtype, what: str, min_checked: int = 1) -> int:
    """Assert the ulp target on normal exact values, and exactness on zeros and infinities.

    Returns the number of entries held to the ulp target (asserted >= ``min_checked``).
    """
    got = np.asarray(got).astype(np.float64).ravel()
    refs = list(refs)
    assert len(got) == len(refs), what
    worst, where, n = 0.0, None, 0
    for i, (g, r) in enumerate(zip(got.tolist(), refs)):
        if N.is_normal(r, dtype):
            e = N.ulp_error(g, r, dtype)
            n += 1
            if e > worst:
                worst, where = e, i
        elif r == 0 or mpmath.isinf(r):
            assert g == float(r), f"{what}: entry {i} is {g}, expected exactly {r}"
        elif mpmath.isnan(r):
            assert np.isnan(g), f"{what}: entry {i} is {g}, expected NaN"
    assert n >= min_checked, f"{what}: only {n} entries checked (vacuous test?)"
    assert worst <= TOL[np.dtype(dtype)], (
        f"{what} ({np.dtype(dtype).name}): error {worst:.3g} ulp at entry {where}: "
        f"got {got[where]!r}, exact {mpmath.nstr(refs[where], 25)}")
    return n


def check_row_functions(x: np.ndarray, what: str, *, labels=True) -> int:
    """softmax, log_softmax, logsumexp and the label cross-entropy of each row of 2-D ``x``."""
    dtype = x.dtype
    x = np.atleast_2d(x)
    sm = run(expnorm.softmax, x)
    ls = run(expnorm.log_softmax, x)
    lse = run(lambda a: expnorm.logsumexp(a, axis=-1), x)
    ref_sm, ref_ls, ref_lse = [], [], []
    for row in x:
        ref_sm += N.ref_softmax(row)
        ref_ls += N.ref_log_softmax(row)
        ref_lse.append(N.ref_logsumexp(row))
    n = check(sm, ref_sm, dtype, f"softmax {what}", 0)
    n += check(ls, ref_ls, dtype, f"log_softmax {what}", 0)
    n += check(lse, ref_lse, dtype, f"logsumexp {what}", 0)
    if labels:
        # The label loss -log softmax(x)_k for every k: the same exact values as -log_softmax.
        k = x.shape[1]
        xs = np.repeat(x, k, axis=0)
        lab = np.tile(np.arange(k), x.shape[0])
        ce = run(expnorm.softmax_cross_entropy_with_integer_labels, xs, lab)
        n += check(ce, [-r for r in ref_ls], dtype, f"cross-entropy (labels) {what}", 0)
    assert n >= 1, f"{what}: nothing was checked"
    return n


def offsets_for(dtype) -> list[float]:
    top = float(ml_dtypes.finfo(dtype).max)
    if dtype == np.float16:
        return [1e4, 3e4, 6e4, 65504.0]
    base = [1e4, 1e6, 1e10, 1e20, 1e30, 1e38, 3e38]
    if dtype == np.float64:
        base += [1e100, 1e300, 1e308]
    return [o for o in base if o <= top]


# --------------------------------------------------------------------------------------------
# the measuring code itself


def test_ulp_definition():
    assert N.ulp(1.0, np.float32) == mpmath.mpf(2) ** -23
    assert N.ulp(1.0, np.float64) == mpmath.mpf(2) ** -52
    assert N.ulp(1.0, np.float16) == mpmath.mpf(2) ** -10
    assert N.ulp(1.0, BF16) == mpmath.mpf(2) ** -7
    assert N.ulp(mpmath.mpf("0.999"), np.float32) == mpmath.mpf(2) ** -24
    assert N.ulp(-3.0, np.float32) == mpmath.mpf(2) ** -22
    # subnormal and zero values get the subnormal spacing
    assert N.ulp(0, np.float32) == mpmath.mpf(2) ** -149
    assert N.ulp(mpmath.mpf(2) ** -140, np.float32) == mpmath.mpf(2) ** -149
    assert N.ulp(0, np.float16) == mpmath.mpf(2) ** -24
    for dtype in DTYPES:
        fi = ml_dtypes.finfo(dtype)
        one = np.asarray(1.0, dtype)
        nxt = (one.astype(np.float64) + float(fi.eps)).astype(dtype)
        assert N.ulp_error(nxt, 1, dtype) == 1.0
        assert N.ulp_error(one, 1, dtype) == 0.0
        assert N.is_normal(float(fi.smallest_normal), dtype)
        assert not N.is_normal(float(fi.smallest_normal) / 2, dtype)
        assert not N.is_normal(0, dtype)
    assert N.ulp_error(float("inf"), 1, np.float32) == float("inf")
    assert N.ulp_error(float("nan"), 1, np.float32) == float("inf")
    assert N.ulp_error(float("-inf"), mpmath.mpf("-inf"), np.float32) == 0.0


@mpmath.workdps(60)
def test_reference_values():
    # log_softmax([0, -20])_0 = -log1p(e^-20) = -2.0611536203143808e-9
    r = N.ref_log_softmax(np.array([0.0, -20.0]))
    assert abs(r[0] + mpmath.log1p(mpmath.exp(-20))) < mpmath.mpf(10) ** -60
    # one dominant entry far beyond the working precision: log1p keeps the relative accuracy
    r = N.ref_log_softmax(np.array([0.0, -3000.0]))
    assert mpmath.almosteq(r[0], -mpmath.exp(-3000), 1e-50)
    # LSE of log-probabilities cancels to ~1e-17: recomputed with more digits
    lp = np.log(np.array([0.25, 0.75]))
    with mpmath.workdps(120):
        exact = mpmath.log(mpmath.fsum(mpmath.exp(mpmath.mpf(float(v))) for v in lp))
    assert mpmath.almosteq(N.ref_logsumexp(lp), exact, 1e-40)
    assert mpmath.almosteq(N.ref_logsumexp(np.array([0.0, 0.0])), mpmath.log(2), 1e-50)
    assert N.ref_logsumexp(np.array([-np.inf, 3.0])) == 3
    assert N.ref_softmax(np.array([-np.inf, 3.0])) == [0, 1]
    assert N.ref_logsumexp(np.array([-np.inf, -np.inf])) == mpmath.mpf("-inf")
    assert N.ref_softmax(np.array([np.inf, 1.0, np.inf])) == [0.5, 0, 0.5]
    assert mpmath.isnan(N.ref_logsumexp(np.array([np.nan, 1.0])))
    # weights: log(2 e^1 + 3 e^2)
    w = N.ref_logsumexp(np.array([1.0, 2.0]), b=np.array([2.0, 3.0]))
    assert mpmath.almosteq(w, mpmath.log(2 * mpmath.e + 3 * mpmath.e**2), 1e-50)
    # bfloat16 and float16 entries are taken exactly
    x = np.array([1.0 / 3.0], BF16)
    assert N.ref_logsumexp(x) == mpmath.mpf(float(x[0]))
    assert mpmath.almosteq(N.ref_cross_entropy_probs(np.array([1.0, 2.0]), np.array([0.5, 0.5])),
                           -(N.ref_log_softmax(np.array([1.0, 2.0]))[0]
                             + N.ref_log_softmax(np.array([1.0, 2.0]))[1]) / 2, 1e-50)


def test_measurement_detects_known_jax_errors():
    """jax.nn.log_softmax and jax.scipy's logsumexp lose all relative accuracy on a dominant
    entry in float32: the measuring code must see errors far above 1 ulp."""
    x = np.array([0.0, -20.0], np.float32)
    got = run(jax.nn.log_softmax, x)
    ref = N.ref_log_softmax(x)
    assert N.ulp_error(got[0], ref[0], np.float32) > 1e3  # -0.0 against -2.06e-9
    y = np.array([0.0, -30.0, -30.0], np.float32)
    got = run(jax.scipy.special.logsumexp, y)
    assert N.ulp_error(got, N.ref_logsumexp(y), np.float32) > 1e3  # 0.0 against 1.87e-13
    # and the test helper rejects it
    with pytest.raises(AssertionError):
        check(run(jax.nn.log_softmax, x), ref, np.float32, "jax.nn.log_softmax")
    # while expnorm passes on the same inputs
    check(run(expnorm.log_softmax, x), ref, np.float32, "expnorm.log_softmax", 2)
    check([run(expnorm.logsumexp, y)], [N.ref_logsumexp(y)], np.float32, "expnorm.logsumexp", 1)


# --------------------------------------------------------------------------------------------
# adversarial inputs, every dtype


@by_dtype
def test_large_offsets(dtype):
    """Rows far from 0, up to the largest finite numbers: offset minus a few multiples of the
    local spacing (moderate differences, so the exponentials matter), plus exact ties."""
    rng = np.random.default_rng(1)
    rows = []
    for off in offsets_for(dtype):
        base = cast([off], dtype).astype(np.float64)[0]
        sp = float(N.ulp(base, dtype))
        width = 8
        # differences of up to ~25 in steps of the spacing (or a few spacings when it is huge)
        steps = np.unique(np.round(rng.uniform(0, 25, width) / sp)) if sp < 1 else np.arange(width)
        steps = np.resize(np.concatenate([[0], steps]), width)
        rows.append(cast(base - steps * sp, dtype))
        rows.append(cast([base] * width, dtype))  # ties: LSE = base + log 8
        rows.append(cast(base - np.arange(width) * sp, dtype))
    n = check_row_functions(np.stack(rows), "large offsets")
    assert n >= 10


@by_dtype
def test_largest_finite_does_not_overflow(dtype):
    top = float(ml_dtypes.finfo(dtype).max)
    x = cast([top, top, top - float(N.ulp(top, dtype))], dtype)
    check_row_functions(x[None], "at the largest finite value")
    assert np.all(np.isfinite(run(expnorm.logsumexp, x)))


@by_dtype
def test_one_dominant_entry(dtype):
    """[0, -30, -30, ...] and [0, -d]: the max's log-probability and LSE are tiny."""
    rows = [cast([0.0] + [-30.0] * k, dtype) for k in (1, 2, 3, 10)]
    n = sum(check_row_functions(r[None], f"[0, -30 x {len(r) - 1}]") for r in rows)
    ds = np.concatenate([np.linspace(0.01, 5, 40), np.linspace(5, 120, 60), [17, 20, 30, 50, 80]])
    pairs = np.stack([np.zeros_like(ds), -ds], axis=1)
    n += check_row_functions(cast(pairs, dtype), "[0, -d]")
    assert n >= 100


@by_dtype
def test_tiny_differences(dtype):
    """Entries a few ulps apart: softmax close to uniform, LSE = base + log n."""
    top = 6e4 if dtype == np.float16 else 1e5
    rows = []
    for base in (1.0, 0.3, -7.5, 100.0, -1000.0, top, 1.0 / 1024):
        b = cast([base], dtype).astype(np.float64)[0]
        sp = float(N.ulp(b, dtype))
        rows.append(cast(b + sp * np.array([0, 1, 2, 3, -1, -2, 5, 0]), dtype))
    check_row_functions(np.stack(rows), "entries a few ulps apart")


@by_dtype
def test_minus_inf_entries(dtype):
    inf = np.inf
    rows = [
        [0.0, -inf, -1.0, -inf, 2.0, -inf],
        [-inf, 5.0, -inf, -inf, -inf, -inf],
        [-inf, -inf, -inf, -inf, -inf, 3.0],
        [-inf, -20.0, 0.0, -inf, -30.0, -inf],
        [1.5, 1.5, -inf, 1.5, -inf, -0.25],
    ]
    check_row_functions(cast(rows, dtype), "mixed -inf entries")
    # an all -inf row: LSE -inf, softmax 0, log_softmax -inf (exact values)
    empty = cast([[-inf, -inf, -inf]], dtype)
    assert run(lambda a: expnorm.logsumexp(a, axis=-1), empty)[0] == -inf
    assert np.all(run(expnorm.softmax, empty) == 0)
    assert np.all(run(expnorm.log_softmax, empty) == -inf)


@by_dtype
def test_random_rows(dtype):
    rng = np.random.default_rng(2)
    for scale in (0.1, 1.0, 10.0, 100.0):
        x = cast(rng.standard_normal((6, 7)) * scale, dtype)
        check_row_functions(x, f"random rows, scale {scale}")


@by_dtype
def test_logsumexp_near_zero(dtype):
    """LSE of log-probabilities: max < 0 and m + log1p(t) cancels to a small result."""
    rng = np.random.default_rng(3)
    plain = [[-0.7, -0.7], [-1.0, -1.0], [-0.25, -2.0, -3.0]]
    logprobs = [[-0.69, -0.7]]
    for n in (2, 3, 5, 10, 50):
        z = rng.standard_normal(n)
        logprobs.append(list(z - float(N.ref_logsumexp(z))))  # float64 log-probabilities

    def measure(rows, what):
        got, refs = [], []
        for r in rows:
            x = cast(r, dtype)
            got.append(run(expnorm.logsumexp, x))
            refs.append(N.ref_logsumexp(x))
        check(got, refs, dtype, what, 1)

    measure(plain, "logsumexp near 0")
    measure(logprobs, "logsumexp of log-probabilities")


@by_dtype
def test_logsumexp_axes_and_keepdims(dtype):
    rng = np.random.default_rng(4)
    x = cast(rng.standard_normal((3, 4, 5)) * 3, dtype)
    for axis in [(0, 2), (1,), (0, 1, 2), None, (2, 1)]:
        axes = tuple(range(3)) if axis is None else tuple(a % 3 for a in axis)
        for keepdims in (False, True):
            got = run(lambda a: expnorm.logsumexp(a, axis=axis, keepdims=keepdims), x)
            kept = [a for a in range(3) if a not in axes]
            moved = np.transpose(x, kept + sorted(axes)).reshape(
                int(np.prod([x.shape[a] for a in kept])), -1)
            refs = [N.ref_logsumexp(row) for row in moved]
            expected_shape = tuple(1 if a in axes else x.shape[a] for a in range(3)) if keepdims \
                else tuple(x.shape[a] for a in kept)
            assert got.shape == expected_shape
            check(got, refs, dtype, f"logsumexp axis={axis} keepdims={keepdims}", 1)


@by_dtype
def test_logsumexp_with_weights(dtype):
    rng = np.random.default_rng(5)
    x = cast(rng.standard_normal((8, 6)) * 4, dtype)
    b = cast(rng.uniform(0.01, 3.0, (8, 6)), dtype)
    b[0, :3] = 0  # zero weights drop their entries
    b[1] = cast([1.0, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3], dtype)
    x[1] = cast([0.0, -30, -30, -30, -30, -30], dtype)
    got = run(lambda a, w: expnorm.logsumexp(a, axis=-1, b=w), x, b)
    refs = [N.ref_logsumexp(r, b=w) for r, w in zip(x, b)]
    check(got, refs, dtype, "logsumexp with weights", 4)
    # a scalar weight broadcast over the row
    got = run(lambda a: expnorm.logsumexp(a, axis=-1, b=2.5), x)
    refs = [N.ref_logsumexp(r, b=np.full(r.shape, 2.5)) for r in x]
    check(got, refs, dtype, "logsumexp with b=2.5", 4)


# --------------------------------------------------------------------------------------------
# cross-entropies


@by_dtype
def test_cross_entropy_confident(dtype):
    """logits [m, 0] with the correct label 0: loss log1p(e^-m), tiny for large margins
    (optax returns 0 in float32 from m ~ 17)."""
    margins = [1.0, 5.0, 10.0, 17.0, 20.0, 30.0, 50.0, 80.0, 85.0]
    logits = cast([[m, 0.0] for m in margins], dtype)
    refs = [N.ref_cross_entropy_label(r, 0) for r in logits]
    got = run(expnorm.softmax_cross_entropy_with_integer_labels, logits, np.zeros(len(margins), int))
    n = check(got, refs, dtype, "cross-entropy (labels), confident", 1)
    onehot = cast([[1.0, 0.0]] * len(margins), dtype)
    got = run(expnorm.softmax_cross_entropy, logits, onehot)
    check(got, [N.ref_cross_entropy_probs(r, t) for r, t in zip(logits, onehot)], dtype,
          "cross-entropy (probs), confident", n)
    if dtype == np.float32:
        assert n == len(margins)  # every margin up to 85 has a normal float32 loss


@by_dtype
def test_cross_entropy_probs(dtype):
    rng = np.random.default_rng(6)
    logits = cast(rng.standard_normal((20, 5)) * 5, dtype)
    p = rng.dirichlet(np.ones(5), 20)
    p[:5] = np.eye(5)  # one-hot rows
    p[5, :] = [0.0, 0.0, 0.5, 0.5, 0.0]
    targets = cast(p, dtype)
    logits[7] = cast([0.0, -30, -30, -30, -30], dtype)
    targets[7] = cast([1.0, 0, 0, 0, 0], dtype)
    logits[8] = cast([1e4, 1e4 - 3, 1e4 - 1, 1e4, 1e4 - 8], dtype)
    got = run(expnorm.softmax_cross_entropy, logits, targets)
    refs = [N.ref_cross_entropy_probs(x, t) for x, t in zip(logits, targets)]
    check(got, refs, dtype, "cross-entropy (probs)", 15)
    # a -inf logit with target 0 costs nothing
    x = cast([[0.0, -np.inf, 1.0]], dtype)
    t = cast([[0.5, 0.0, 0.5]], dtype)
    check(run(expnorm.softmax_cross_entropy, x, t), [N.ref_cross_entropy_probs(x[0], t[0])],
          dtype, "cross-entropy (probs), -inf logit", 1)


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_short_rows_hypothesis(data):
    """Hypothesis-chosen short rows (every dtype): the 1 ulp / 4 ulp target on each output."""
    i = data.draw(st.integers(0, 3), label="dtype")
    dtype = DTYPES[i]
    width = {0: 16, 1: 32, 2: 32, 3: 64}[i]
    lim = 65504.0 if dtype == np.float16 else 2.0**100
    row = data.draw(st.lists(st.floats(-lim, lim, width=width), min_size=1, max_size=6), label="row")
    spread = data.draw(st.sampled_from([None, 1.0, 30.0]), label="spread")
    x = cast(row, dtype)
    if spread is not None:  # pull the entries together so more than one exponential counts
        x = cast(x.astype(np.float64) % spread - spread / 2 + float(x[0]), dtype)
    check_row_functions(x[None], f"hypothesis row {x!r}", labels=False)


# --------------------------------------------------------------------------------------------
# long rows (1e5 entries)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.dtype(np.float32), np.dtype(np.float64)],
                         ids=["float32", "float64"])
def test_long_rows(dtype):
    rng = np.random.default_rng(7)
    n = 100_000
    x = cast(rng.standard_normal(n) * 4.0, dtype)
    x[123] = x.max() + 3  # a moderately dominant entry
    lse_ref = N.ref_logsumexp(x, dps=50)
    ls_ref = N.ref_log_softmax(x, dps=50)
    # softmax from the same exact log-probabilities (exp at 50 digits)
    with mpmath.workdps(50):
        sm_ref = [mpmath.exp(v) for v in ls_ref]
    got_lse = run(expnorm.logsumexp, x)
    got_ls = run(expnorm.log_softmax, x)
    got_sm = run(expnorm.softmax, x)
    check([got_lse], [lse_ref], dtype, "logsumexp, 1e5 entries", 1)
    idx = np.concatenate([np.arange(0, n, 7), [123]])  # a subsample keeps the test fast
    check(got_ls[idx], [ls_ref[i] for i in idx], dtype, "log_softmax, 1e5 entries", len(idx))
    check(got_sm[idx], [sm_ref[i] for i in idx], dtype, "softmax, 1e5 entries", len(idx) // 2)
    labels = np.array([123, 0, 99_999])
    got_ce = run(lambda a, k: expnorm.softmax_cross_entropy_with_integer_labels(
        jnp.broadcast_to(a, (3, n)), k), x, labels)
    check(got_ce, [-ls_ref[k] for k in labels], dtype, "cross-entropy (labels), 1e5 classes", 3)


# --------------------------------------------------------------------------------------------
# float64 rows spread over about +-1000: results that are normal but tiny (issue 15)


def test_float64_wide_spread_rows_tiny_normal_results():
    """float64 softmax, log_softmax and both cross-entropies of rows of 300 * N(0, 1).

    Some probabilities are about 1e-296: normal, but the double-double correction of the
    shift, ``e * lo``, is subnormal there, and XLA on CPU flushes subnormal results to zero.
    The correction must be applied where the magnitudes are not tiny.
    """
    rng = np.random.default_rng(15)
    x = (300.0 * rng.standard_normal((3, 1000))).astype(np.float64)
    sm = run(expnorm.softmax, x)
    ls = run(expnorm.log_softmax, x)
    ref_sm, ref_ls = [], []
    for row in x:
        ref_sm += N.ref_softmax(row)
        ref_ls += N.ref_log_softmax(row)
    tiny = [r for r in ref_sm if N.is_normal(r, np.float64) and r < mpmath.mpf("1e-280")]
    assert len(tiny) >= 10, "the test set must contain normal probabilities below 1e-280"
    check(sm, ref_sm, np.float64, "float64 softmax, wide rows", 500)
    check(ls, ref_ls, np.float64, "float64 log_softmax, wide rows", 1000)
    k = x.shape[1]
    labels = np.array([0, 17, 999])
    ce = run(expnorm.softmax_cross_entropy_with_integer_labels, x, labels)
    check(ce, [-ref_ls[i * k + int(j)] for i, j in enumerate(labels)], np.float64,
          "float64 cross-entropy (labels), wide rows", 3)
    y = np.zeros_like(x)
    y[np.arange(3), labels] = 0.75
    y[np.arange(3), (labels + 1) % k] = 0.25
    cep = run(expnorm.softmax_cross_entropy, x, y)
    check(cep, [N.ref_cross_entropy_probs(row, t) for row, t in zip(x, y)], np.float64,
          "float64 cross-entropy (probabilities), wide rows", 3)
