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
