"""The shared first pass of every function: per-row max, shifted exponentials, and their sum.

For a row ``x`` (the entries over the reduced axes that ``where`` keeps) with maximum ``m``,

.. math::

    t = \\sum_{i \\ne i^*} e^{x_i - m}, \\qquad \\operatorname{LSE}(x) = m + \\operatorname{log1p}(t),

where ``i*`` is *one* position of the maximum (ties count in ``t``). This is the form of
Blanchard, Higham & Higham (2021): ``log1p(t)`` keeps full relative accuracy when ``t`` is tiny
(one dominant entry), where ``log(1 + t)`` returns 0.

Special rows (documented in every public docstring):

* a NaN among the kept entries makes the whole row NaN;
* no kept finite-or-infinite entry above ``-inf`` (all ``-inf``, or all masked): "empty";
* ``+inf`` entries: the limit of the row as those entries grow together, so the ``+inf``
  entries share the mass equally and every finite entry gets probability 0.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._special import is_neginf, is_posinf, nan_where, neginf_where
from ._wide import WIDE as WIDE_DTYPE
from ._wide import (const, dd_normalize, dd_sum, exp_dd, exp_dd_accurate, log1p_dd,
                    log1p_dd_accurate, opaque, two_sum)


class RowStats(NamedTuple):
    kept: jax.Array | None  # the where mask broadcast to x, or None
    m: jax.Array  # row max over kept entries (keepdims)
    nan_row: jax.Array  # a kept entry is NaN
    empty_row: jax.Array  # no kept entry above -inf
    inf_row: jax.Array  # a kept entry is +inf
    d_hi: jax.Array  # x - m as dd (finite m; -inf where masked); 0 / +inf on an inf_row
    d_lo: jax.Array
    e_hi: jax.Array  # exp(x - m) as dd; on an inf_row, 1 at +inf entries and 0 elsewhere
    e_lo: jax.Array
    e_rel: jax.Array  # e_lo / e_hi, kept separately: e_lo itself is flushed to 0 when e is tiny
    t_hi: jax.Array  # sum of e over the row, less one copy of the max (keepdims)
    t_lo: jax.Array
    l_hi: jax.Array  # log1p(t) as dd (keepdims)
    l_lo: jax.Array


def row_max(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    """Max over ``axes`` (keepdims); ``-inf`` for an empty reduction. The ``-inf`` initial value
    is used only when a reduced axis has length 0: as a constant it would trip debug_infs."""
    if any(x.shape[a] == 0 for a in axes):
        return jnp.max(x, axis=axes, keepdims=True, initial=-jnp.inf)
    return jnp.max(x, axis=axes, keepdims=True)


def row_stats(x: jax.Array, axes: tuple[int, ...], kept: jax.Array | None,
              accurate: bool = False) -> RowStats:
    """Compute :class:`RowStats` for a wide (float64) ``x`` reduced over ``axes``.

    ``accurate=True`` (logsumexp) computes ``e`` and ``log1p(t)`` to about 1e-30 relative
    with the dd ``exp_dd_accurate`` / ``log1p_dd_accurate``: ``m + log1p(t)`` may cancel.
    """
    exp_, log1p_ = (exp_dd_accurate, log1p_dd_accurate) if accurate else (exp_dd, log1p_dd)
    x = opaque(x)  # a constant input (e.g. closed over under jit) must not be folded through
    xk = x if kept is None else neginf_where(~kept, x)
    nan_row = jnp.any(jnp.isnan(xk), axis=axes, keepdims=True)
    m = row_max(neginf_where(jnp.isnan(xk), xk), axes)
    empty_row = is_neginf(m)
    inf_row = is_posinf(m)
    m0 = jnp.where(jnp.isfinite(m), m, 0.0)

    # x - m exactly, as hi + lo: its rounding error would be multiplied by |x - m| in exp.
    # -inf entries skip TwoSum (inf - inf would make a NaN that debug_nans reports).
    neg = is_neginf(xk)
    d_hi, d_lo = two_sum(jnp.where(neg, m0, xk), -m0)
    d_hi = neginf_where(neg, d_hi)
    d_lo = jnp.where(jnp.isfinite(d_hi), d_lo, 0.0)
    e_hi, e_lo = exp_(d_hi, d_lo)
    at_max = xk == m
    e_hi = jnp.where(inf_row, jnp.where(at_max, 1.0, 0.0), e_hi)
    e_lo = jnp.where(inf_row, 0.0, e_lo)
    if accurate:
        e_rel = jnp.where(e_hi > 0, e_lo / jnp.where(e_hi > 0, e_hi, 1.0), 0.0)
    else:
        e_rel = jnp.where((e_hi > 0) & ~inf_row, d_lo, 0.0)  # exp_dd: e_lo = e_hi * d_lo

    # t excludes one copy of the max exactly: drop all copies, then add back (copies - 1).
    others_hi = jnp.where(at_max, 0.0, e_hi)
    others_lo = jnp.where(at_max, 0.0, e_lo)
    t_hi, t_lo = dd_sum(others_hi, others_lo, axes, keepdims=True)
    ties = jnp.sum(at_max, axis=axes, keepdims=True).astype(x.dtype) - 1.0
    ties = jnp.maximum(ties, 0.0)
    s, err = two_sum(t_hi, ties)
    t_hi, t_lo = dd_normalize(s, err + t_lo)
    l_hi, l_lo = log1p_(t_hi, t_lo)
    return RowStats(kept, m, nan_row, empty_row, inf_row, d_hi, d_lo, e_hi, e_lo, e_rel,
                    t_hi, t_lo, l_hi, l_lo)


def row_softmax(s: RowStats) -> jax.Array:
    """``exp(x - m) / (1 + t)`` in wide precision, with the special rows applied."""
    den_hi, den_err = two_sum(const(1.0, s.t_hi), s.t_hi)
    den_hi, den_lo = dd_normalize(den_hi, den_err + s.t_lo)
    q = s.e_hi / den_hi
    # p = q (1 + c): c, the relative correction of e and of the denominator, is applied to a
    # scaled q. For a normal but tiny q (below ~1e-292) the product q * c is subnormal, and XLA
    # on CPU flushes subnormal results to zero: the correction would be lost (~500 ulp). The
    # scaling by 2**600 and back is exact whenever the final result is normal.
    c = s.e_rel - den_lo / den_hi
    small = q < const(2.0 ** -500, q)
    up = jnp.where(small, const(2.0 ** 600, q), 1.0)
    down = jnp.where(small, const(2.0 ** -600, q), 1.0)
    qs = q * up
    p = (qs + qs * c) * down
    p = jnp.where(s.empty_row, 0.0, p)
    return nan_where(s.nan_row, p)


def row_log_softmax(s: RowStats) -> jax.Array:
    """``(x - m) - log1p(t)`` in wide precision, with the special rows applied."""
    neg = is_neginf(s.d_hi)
    # -inf entries skip TwoSum (inf - inf is a NaN that debug_nans would report), and stay -inf
    hi, err = two_sum(jnp.where(neg, 0.0, s.d_hi), -s.l_hi)
    ls = hi + (err + (s.d_lo - s.l_lo))
    ls = neginf_where(neg, ls)
    at_inf = s.e_hi > 0.0  # on an inf_row: the +inf entries
    ls = jnp.where(s.inf_row & at_inf, -(s.l_hi + s.l_lo), ls)
    ls = neginf_where((s.inf_row & ~at_inf) | s.empty_row, ls)
    return nan_where(s.nan_row, ls)


def row_logsumexp(s: RowStats) -> jax.Array:
    """``m + log1p(t)`` in wide precision (keepdims), with the special rows applied."""
    hi, err = two_sum(jnp.where(jnp.isfinite(s.m), s.m, 0.0), s.l_hi)
    lse = hi + (err + s.l_lo)
    lse = jnp.where(jnp.isfinite(s.m), lse, s.m)  # -inf for empty rows, +inf for inf rows
    return nan_where(s.nan_row, lse)


def masked_tangent(t: jax.Array, kept: jax.Array | None) -> jax.Array:
    """Zero the tangent at masked entries: they do not take part in the function."""
    if kept is None:
        return t
    return jnp.where(kept, t, jnp.zeros_like(t))


# --------------------------------------------------------------------------------------------
# Fast path for float16, bfloat16 and float32 results.
#
# Plain float64 arithmetic is some 1e-16 relative, far below half an ulp of a float32 result,
# so these inputs need none of the double-double corrections above. (x - m is exact in float64
# for float32 x and m unless their exponents differ by more than 29, and then its rounding is
# 1e-16 relative.) The one exception, logsumexp near cancellation, is handled in logsumexp.py.


class FastStats(NamedTuple):
    xw: jax.Array  # x in float64, -inf where masked
    m: jax.Array  # row max (keepdims, float64; NaN on a NaN row)
    e: jax.Array  # exp(x - m); on an inf_row 1 at +inf entries and 0 elsewhere
    empty_row: jax.Array
    inf_row: jax.Array
    nan_row: jax.Array


def fast_stats(x: jax.Array, axes: tuple[int, ...], kept: jax.Array | None) -> FastStats:
    """Max (in the input dtype: exact) and float64 shifted exponentials, no dd corrections."""
    xk = x if kept is None else neginf_where(~kept, x)
    m_in = row_max(xk, axes)  # NaN propagates
    m = m_in.astype(WIDE_DTYPE)
    xw = xk.astype(WIDE_DTYPE)
    nan_row = jnp.isnan(m)
    empty_row = is_neginf(m)
    inf_row = is_posinf(m)
    m0 = jnp.where(jnp.isfinite(m), m, 0.0)
    e = jnp.exp(xw - m0)
    e = jnp.where(inf_row, jnp.where(is_posinf(xw), 1.0, 0.0), e)
    return FastStats(xw, m, e, empty_row, inf_row, nan_row)


def fast_t(s: FastStats, axes: tuple[int, ...]) -> jax.Array:
    """Sum of ``e`` less one copy of the max (keepdims), so that ``log1p(t)`` is accurate."""
    at_max = s.xw == s.m
    t = jnp.sum(jnp.where(at_max, 0.0, s.e), axis=axes, keepdims=True)
    ties = jnp.sum(at_max, axis=axes, keepdims=True).astype(t.dtype) - 1.0
    return t + jnp.maximum(ties, 0.0)


def fast_softmax(s: FastStats, axes: tuple[int, ...]) -> jax.Array:
    """``e / sum(e)`` in float64 (the max's own 1 included: nothing cancels)."""
    den = jnp.sum(s.e, axis=axes, keepdims=True)
    p = s.e / jnp.where(den > 0, den, 1.0)
    return nan_where(s.nan_row, p)


def fast_log_softmax(s: FastStats, axes: tuple[int, ...]) -> jax.Array:
    """``(x - m) - log1p(t)`` in float64, with the special rows of :func:`row_log_softmax`."""
    l = jnp.log1p(fast_t(s, axes))
    fin = jnp.isfinite(s.m)
    ls = (s.xw - jnp.where(fin, s.m, 0.0)) - l
    pos = is_posinf(s.xw)
    ls = jnp.where(s.inf_row & pos, -l, ls)
    ls = neginf_where((s.inf_row & ~pos) | s.empty_row | is_neginf(s.xw), ls)
    return nan_where(s.nan_row, ls)


def logsumexp_from(m: jax.Array, t: jax.Array) -> jax.Array:
    """``m + log1p(t)`` in float64; ``m`` itself where it is not finite (-inf for empty rows,
    +inf for +inf rows, NaN for NaN rows). May lose digits when it cancels (m < 0)."""
    return jnp.where(jnp.isfinite(m), m + jnp.log1p(t), m)


def fast_logsumexp(s: FastStats, axes: tuple[int, ...]) -> jax.Array:
    """``m + log1p(t)`` in float64 (keepdims), from :func:`fast_stats`."""
    return logsumexp_from(s.m, fast_t(s, axes))
