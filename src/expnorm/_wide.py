"""Wide arithmetic: the reason expnorm is accurate.

Softmax-like functions are memory-bound, so extra arithmetic per element is nearly free. Every
expnorm function computes in float64, whatever the input dtype, and rounds once at the end:

* float16, bfloat16 and float32 results are then within 1 ulp (the float64 error is some
  1e-15 relative, far below half an ulp of the output);
* float64 results get double-double ("dd") arithmetic at the few places where a float64
  rounding would otherwise be amplified: the shift ``x - max`` (its rounding error is
  multiplied by ``|x - max|`` after ``exp``), the long sums, and ``max + log1p(t)``.

A dd number is an unevaluated sum ``hi + lo`` with ``|lo| <= ulp(hi) / 2`` (Dekker 1971,
Knuth's TwoSum). ``jax.enable_x64`` is used as a context manager, so this works whether or
not the user enabled x64; it needs a backend with float64 (CPU and GPU; not TPU).
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
from jax import lax

WIDE = jnp.float64


def wide_context():
    """Context in which float64 arrays exist, even when the user runs JAX without x64."""
    if jax.config.jax_enable_x64:
        return contextlib.nullcontext()
    return jax.enable_x64(True)


def tangent_dtype(dtype):
    """Dtype for derivative computations: float32 for 16-bit inputs, else the input dtype."""
    return jnp.float32 if jnp.finfo(dtype).bits < 32 else dtype


def opaque(x):
    """Hide ``x`` from XLA's algebraic simplifier.

    XLA rewrites ``(a + c) - c`` to ``a`` when ``c`` is a compile-time constant (seen with
    jaxlib 0.10.2 on CPU), which silently zeroes the error term of :func:`two_sum`. Every
    constant that enters an error-free transformation, and every input of the row
    computations, goes through this barrier so that no such rewrite can apply.
    """
    return lax.optimization_barrier(x)


def const(value, like):
    """The scalar ``value`` in the dtype of ``like``, opaque to the simplifier."""
    return opaque(jnp.asarray(value, like.dtype))


def two_sum(a, b):
    """Knuth's TwoSum: ``s + e == a + b`` exactly, with ``s = fl(a + b)``."""
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


def dd_normalize(hi, lo):
    """Renormalize ``hi + lo`` so that ``|lo| <= ulp(hi) / 2`` (Fast2Sum; needs |hi| >= |lo|)."""
    s = hi + lo
    return s, lo - (s - hi)


def _dd_add_pairs(x, y):
    s, e = two_sum(x[0], y[0])
    return dd_normalize(s, e + x[1] + y[1])


def dd_sum(hi, lo, axes: tuple[int, ...], keepdims: bool = False):
    """Sum the dd array ``hi + lo`` over ``axes``; error about 2 ulp whatever the length.

    A variadic ``lax.reduce`` whose combine step adds two dd numbers; the combine is accurate
    in any order, so XLA is free to reorder and vectorize the reduction.
    """
    zero = jnp.zeros((), hi.dtype)
    s_hi, s_lo = lax.reduce((hi, lo), (zero, zero), _dd_add_pairs, axes)
    if keepdims:
        s_hi = jnp.expand_dims(s_hi, axes)
        s_lo = jnp.expand_dims(s_lo, axes)
    return s_hi, s_lo


def exp_dd(hi, lo):
    """``exp(hi + lo)`` as a dd pair, using ``exp(hi + lo) = exp(hi) * (1 + lo + ...)``."""
    e = jnp.exp(hi)
    return e, e * lo


def log1p_dd(hi, lo):
    """``log1p(hi + lo)`` for ``hi + lo >= 0`` as a dd pair (derivative 1 / (1 + hi))."""
    l = jnp.log1p(hi)
    return l, lo / (1.0 + hi)


def log_dd(hi, lo):
    """``log(hi + lo)`` for ``hi > 0`` as a dd pair."""
    return jnp.log(hi), lo / hi


# --------------------------------------------------------------------------------------------
# Accurate (double-double) exp and logarithms, for logsumexp only.
#
# Added after tests/test_accuracy.py found logsumexp off by up to 1e15 ulp in float64 (27 ulp on
# the plain row [-0.7, -0.7]): when the max m is negative, m + log1p(t) cancels, and the float64
# roundings of exp and log1p above (relative 1e-16 of log1p(t), not of the result) are no
# longer below an ulp of the result. These versions are accurate to about 1e-30 relative, so
# the cancellation can take 14 more digits before an ulp is lost. They cost some 30 dd
# operations per entry, which is why softmax, log_softmax and the cross-entropies (where
# nothing cancels) keep the cheap exp_dd / log1p_dd above.

_SPLIT = 134217729.0  # 2**27 + 1, Dekker's splitter for float64


def two_prod(a, b):
    """Dekker's TwoProduct: ``p + e == a * b`` exactly, with ``p = fl(a * b)`` (no FMA needed)."""
    p = a * b
    split = const(_SPLIT, a)
    t = split * a
    ah = t - (t - a)
    al = a - ah
    t = split * b
    bh = t - (t - b)
    bl = b - bh
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, e


def dd_add(ah, al, bh, bl):
    s, e = two_sum(ah, bh)
    return dd_normalize(s, e + (al + bl))


def dd_mul(ah, al, bh, bl):
    p, e = two_prod(ah, bh)
    return dd_normalize(p, e + (ah * bl + al * bh))


def _dd_const(fraction):
    """A rational constant as a dd pair of Python floats (exact to 2**-106 relative)."""
    from fractions import Fraction

    hi = float(fraction)
    return hi, float(Fraction(fraction) - Fraction(hi))


def _inv_factorials(n):
    from fractions import Fraction
    from math import factorial

    return [_dd_const(Fraction(1, factorial(k))) for k in range(n + 1)]


_INV_FACT = _inv_factorials(10)
# ln 2 to 159 bits, as three float64 parts.
_LN2 = (0.6931471805599453, 2.3190468138462996e-17, 5.707708438416212e-34)
_SQUARINGS = 10


def expm1_dd_accurate(hi, lo):
    """``(k, expm1(r))`` as ``(int array, dd pair)`` with ``exp(hi + lo) = 2**k * (1 + expm1(r))``.

    Range reduction ``hi + lo = k ln2 + r`` (|r| <= 0.35) in dd, then ``r / 2**10``, a degree-10
    Taylor series of expm1 in dd, and ten doublings ``expm1(2y) = expm1(y) * (expm1(y) + 2)``
    (the expm1 form keeps the relative accuracy of small results). Needs finite ``hi``.
    """
    k = jnp.round(hi / _LN2[0])
    p1, e1 = two_prod(k, const(_LN2[0], hi))
    r_hi, r_err = two_sum(hi, -p1)
    r_lo = r_err - e1 - k * const(_LN2[1], hi) - k * const(_LN2[2], hi) + lo
    r_hi, r_lo = dd_normalize(r_hi, r_lo)
    scale = 2.0 ** -_SQUARINGS
    s_hi, s_lo = r_hi * scale, r_lo * scale
    # Horner: expm1(s) = s * (1 + s * (1/2 + s * (1/6 + ...)))
    c_hi, c_lo = _INV_FACT[-1]
    acc_hi = jnp.broadcast_to(const(c_hi, hi), hi.shape)
    acc_lo = jnp.broadcast_to(const(c_lo, hi), hi.shape)
    for c_hi, c_lo in reversed(_INV_FACT[1:-1]):
        acc_hi, acc_lo = dd_mul(acc_hi, acc_lo, s_hi, s_lo)
        acc_hi, acc_lo = dd_add(acc_hi, acc_lo, const(c_hi, hi), const(c_lo, hi))
    m_hi, m_lo = dd_mul(acc_hi, acc_lo, s_hi, s_lo)
    for _ in range(_SQUARINGS):
        two_hi, two_lo = dd_add(m_hi, m_lo, const(2.0, hi), const(0.0, hi))
        m_hi, m_lo = dd_mul(m_hi, m_lo, two_hi, two_lo)
    return k, m_hi, m_lo


def _pow2(k):
    """``2.0**k`` exactly for integer-valued float64 ``k`` in [-1022, 1023], from the bits."""
    bits = (k.astype(jnp.int64) + 1023) << 52
    return lax.bitcast_convert_type(bits, jnp.float64)


@jax.jit  # one fused kernel: some 500 flops per entry, too many ops to dispatch eagerly
def exp_dd_accurate(hi, lo):
    """``exp(hi + lo)`` as a dd pair, relative error about 1e-30; ``exp(-inf) = 0``."""
    fin = jnp.isfinite(hi)
    h = jnp.where(fin, jnp.clip(hi, -800.0, 800.0), 0.0)
    # beyond +-800 the result is 0 or inf anyway; drop lo there (it may be huge)
    k, m_hi, m_lo = expm1_dd_accurate(h, jnp.where(fin & (h == hi), lo, 0.0))
    e_hi, e_lo = dd_add(const(1.0, h), const(0.0, h), m_hi, m_lo)
    # times 2**k exactly (jnp.exp2 is not exact at integers), in two steps so that neither
    # power under- or overflows on its own
    k1 = jnp.floor(k / 2)
    f1, f2 = _pow2(k1), _pow2(k - k1)
    e_hi, e_lo = e_hi * f1 * f2, e_lo * f1 * f2
    e_hi = jnp.where(fin, e_hi, 0.0)
    z = jnp.where(~fin & (hi > 0), 0.0, 1.0)  # +inf only where hi = +inf (debug_infs)
    e_hi = jnp.where(~fin & (hi > 0), 1 / z, e_hi)
    return e_hi, jnp.where(fin & jnp.isfinite(e_hi), e_lo, 0.0)


def _expm1_dd_accurate(hi):
    """``expm1(hi)`` as a dd pair for finite float64 ``hi`` (used by the Newton steps below)."""
    k, m_hi, m_lo = expm1_dd_accurate(hi, jnp.zeros_like(hi))
    # k != 0: 2**k (1 + m) - 1 = (2**k - 1) + 2**k m, with 2**k - 1 exact for |k| <= 52
    p = _pow2(k)
    a_hi, a_lo = dd_add(p - const(1.0, hi), const(0.0, hi), m_hi * p, m_lo * p)
    return jnp.where(k == 0, m_hi, a_hi), jnp.where(k == 0, m_lo, a_lo)


@jax.jit
def log1p_dd_accurate(hi, lo):
    """``log1p(hi + lo)`` for ``hi + lo >= 0`` as a dd pair, relative error about 1e-30.

    One Newton step on ``expm1(l) = t`` from the float64 ``l0 = log1p(hi)``:
    ``l = l0 + (t - expm1(l0)) / (1 + t)`` doubles the 16 correct digits.
    """
    fin = jnp.isfinite(hi)
    t = jnp.where(fin, hi, 0.0)
    l0 = jnp.log1p(t)
    em_hi, em_lo = _expm1_dd_accurate(l0)
    d_hi, d_lo = dd_add(t, jnp.where(fin, lo, 0.0), -em_hi, -em_lo)
    corr = (d_hi + d_lo) / (1.0 + t)
    l_hi, l_lo = dd_normalize(l0, corr)
    return jnp.where(fin, l_hi, hi), jnp.where(fin, l_lo, 0.0)


def log_dd_accurate(hi, lo):
    """``log(hi + lo)`` for ``hi > 0`` as a dd pair: ``log1p`` of ``(hi - 1) + lo``."""
    s_hi, s_lo = dd_add(hi, lo, const(-1.0, hi), const(0.0, hi))
    # hi - 1 is exact for hi in [0.5, 2] (Sterbenz), where accuracy matters; elsewhere
    # log(hi) has no cancellation and the rounding of hi - 1 is harmless.
    ok = hi >= 0.5
    l_hi, l_lo = log1p_dd_accurate(jnp.where(ok, s_hi, 0.0), jnp.where(ok, s_lo, 0.0))
    return jnp.where(ok, l_hi, jnp.log(hi)), jnp.where(ok, l_lo, lo / hi)
