"""Tests of expnorm.teaching's chapter-5 algorithms: do they really compute in their dtype?

References are independent of JAX: step-by-step NumPy arithmetic on float16 / ml_dtypes
bfloat16 scalars (each IEEE operation rounds to the dtype), closed forms, and mpmath.
"""

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from expnorm import numerics, teaching

BF16 = ml_dtypes.bfloat16
DTYPES = [np.float16, BF16, np.float32, np.float64]


def numpy_recursive_sum(row, dtype):
    """Left-to-right sum, every partial sum rounded to ``dtype`` (NumPy scalar arithmetic)."""
    s = dtype(0)
    for v in np.asarray(row, dtype):
        s = dtype(s + v)
    return s


@pytest.mark.parametrize("dtype, expected", [(BF16, 256.0), (np.float16, 2048.0)])
def test_recursive_sum_of_ones_stalls(dtype, expected):
    # Closed form: once s = 2^p, s + 1 is a tie between s and s + 2 and rounds to the even s.
    got = teaching.recursive_sum(jnp.ones(4096, dtype))
    assert got.dtype == jnp.dtype(dtype)
    assert float(got) == expected


@pytest.mark.parametrize("dtype", DTYPES)
def test_recursive_sum_matches_numpy_step_by_step(dtype):
    rng = np.random.default_rng(1)
    x = rng.uniform(0.0, 3.0, size=(7, 300)).astype(dtype)
    with jax.enable_x64(dtype == np.float64):
        got = np.asarray(teaching.recursive_sum(jnp.asarray(x)))
    assert got.dtype == np.dtype(dtype)
    want = np.array([numpy_recursive_sum(r, dtype) for r in x], dtype)
    np.testing.assert_array_equal(got.astype(np.float64), want.astype(np.float64))


def test_recursive_sum_axis_and_keepdims():
    x = jnp.arange(12.0, dtype=jnp.float32).reshape(3, 4)
    np.testing.assert_array_equal(teaching.recursive_sum(x, axis=0), [12.0, 15.0, 18.0, 21.0])
    assert teaching.recursive_sum(x, axis=1, keepdims=True).shape == (3, 1)


def test_recursive_sum_keeps_rounding_under_jit():
    got = jax.jit(teaching.recursive_sum)(jnp.ones(4096, jnp.bfloat16))
    assert float(got) == 256.0


@pytest.mark.parametrize("dtype", [np.float16, BF16])
def test_xla_sum_of_16_bit_is_float32_accumulation(dtype):
    # The platform fact that the recursive option exists for: jnp.sum adds 16-bit numbers in
    # float32 (jax.numpy upcasts 16-bit sums when no dtype is given) and rounds once. 4096 is exact in both formats.
    assert float(jnp.sum(jnp.ones(4096, dtype))) == 4096.0
    assert float(teaching.softmax_shifted(jnp.ones(300, dtype), summation="xla")[0]) == float(
        dtype(1.0 / float(dtype(300.0))))


@pytest.mark.parametrize("dtype, n", [(BF16, 300), (np.float16, 3000)])
def test_softmax_of_equal_logits_sees_the_stalled_sum(dtype, n):
    # n equal logits: exact softmax 1/n; recursive summation in the dtype stalls at 2^p
    # (256 in bfloat16, 2048 in float16), so every probability is 2^-p.
    p = teaching.softmax_shifted(jnp.zeros(n, dtype))
    stall = 2.0 ** numerics.precision_bits(dtype)
    np.testing.assert_array_equal(np.asarray(p, np.float64), np.full(n, 1.0 / stall))
    assert float(jnp.sum(p.astype(jnp.float32))) == pytest.approx(n / stall)


@pytest.mark.parametrize("dtype", [np.float16, BF16])
def test_shifted_softmax_rounds_every_operation_to_the_dtype(dtype):
    rng = np.random.default_rng(2)
    x = rng.uniform(-6.0, 4.0, size=(5, 200)).astype(dtype)
    got = np.asarray(teaching.softmax_shifted(jnp.asarray(x))).astype(np.float64)
    for r, row in enumerate(x):
        d = (row - row.max()).astype(dtype)  # exact or rounded: NumPy rounds per operation
        e = np.asarray(jnp.exp(jnp.asarray(d)))  # the same exponentials (XLA's exp, rounded)
        s = numpy_recursive_sum(e, dtype)
        want = (e / s).astype(dtype).astype(np.float64)  # correctly rounded quotient
        # XLA's division by a broadcast divisor is not always correctly rounded (seen: up to
        # 1.4 ulp, as if it multiplied by the reciprocal), so the quotient gets 1.5 ulp; a sum accumulated in float32 instead would be off by more.
        spacing = np.array([float(numerics.ulp(v, dtype)) for v in want])
        assert np.all(np.abs(got[r] - want) <= 1.5 * spacing)
        np.testing.assert_array_equal(
            np.asarray(teaching.recursive_sum(jnp.asarray(e))).astype(np.float64), float(s))


@pytest.mark.parametrize("summation", ["recursive", "xla"])
def test_algorithms_agree_with_mpmath_in_float64(summation):
    # In float64 every algorithm is accurate to ~n u: a check of the formulas themselves.
    rng = np.random.default_rng(3)
    x = rng.normal(size=50) * 3
    with jax.enable_x64(True):
        xj = jnp.asarray(x, jnp.float64)
        p_ref = [float(v) for v in numerics.ref_softmax(x)]
        lp_ref = [float(v) for v in numerics.ref_log_softmax(x)]
        lse_ref = float(numerics.ref_logsumexp(x))
        for f in (teaching.softmax_unshifted, teaching.softmax_shifted,
                  teaching.softmax_division_free):
            np.testing.assert_allclose(f(xj, summation), p_ref, rtol=1e-13)
        for f in (teaching.log_softmax_shifted, teaching.log_softmax_log1p, teaching.log_of_softmax):
            np.testing.assert_allclose(f(xj, summation), lp_ref, rtol=1e-13)
        for f in (teaching.lse_unshifted, teaching.lse_shifted, teaching.lse_log1p):
            assert float(f(xj, summation)) == pytest.approx(lse_ref, rel=1e-13)


def test_log1p_form_keeps_the_dominant_entry():
    x = jnp.array([0.0, -20.0, -21.0, -22.0], jnp.float32)
    ref = numerics.ref_log_softmax(np.asarray(x))[0]
    assert numerics.ulp_error(teaching.log_softmax_log1p(x)[0], ref, np.float32) <= 4
    assert float(teaching.log_softmax_shifted(x)[0]) == 0.0  # fl(1 + t) = 1


def test_unknown_summation_raises():
    with pytest.raises(ValueError, match="summation"):
        teaching.softmax_shifted(jnp.ones(3), summation="pairwise")
