"""Log-sum-exp, accurate to the last bit (a drop-in for ``jax.scipy.special.logsumexp``)."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from . import _native
from ._checks import (Axis, as_float_array, broadcast_mask, canonical_axes, check_temperature,
                      inexact_dtype)
from ._rows import (fast_logsumexp, fast_stats, logsumexp_from, masked_tangent, row_logsumexp,
                    row_softmax, row_stats)
from ._special import is_neginf, is_posinf, nan_where, neginf_where, posinf_where
from ._wide import WIDE, dd_sum, log_dd_accurate, tangent_dtype, two_prod, two_sum, wide_context


def _squeeze(y, axes, keepdims):
    return y if keepdims else jnp.squeeze(y, axis=axes)


@partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _lse(x, kept, axes, out_dtype):
    with wide_context():
        if jnp.dtype(out_dtype) != jnp.float64:
            return _lse_fast(x, kept, axes, out_dtype)
        # accurate=True: m + log1p(t) cancels when m < 0 (see _wide.exp_dd_accurate)
        return row_logsumexp(row_stats(x.astype(WIDE), axes, kept, accurate=True)).astype(out_dtype)


# The float64 error of m + log1p(t) is about 2**-52 (|m| + 1) absolute. Rows whose result is
# below 2**-20 (|m| + 1) could lose a float32 ulp to it (the cancellation of m < 0 with
# log1p(t)): only for those rows is the accurate (dd) computation needed.
_CANCEL = 2.0 ** -20


def _lse_fast(x, kept, axes, out_dtype):
    if _native.usable(x, axes, kept, out_dtype):
        m, t = _native.row_stats_f32(x)  # the same float64 computation, compiled (kernels.cc)
        m = m[..., None].astype(WIDE)
        lse = logsumexp_from(m, t[..., None])
    else:
        s = fast_stats(x, axes, kept)
        m, lse = s.m, fast_logsumexp(s, axes)
    need = jnp.isfinite(lse) & (jnp.abs(lse) < _CANCEL * (jnp.abs(m) + 1.0))

    def accurate():
        acc = row_logsumexp(row_stats(x.astype(WIDE), axes, kept, accurate=True))
        return jnp.where(need, acc, lse)

    lse = jax.lax.cond(jnp.any(need), accurate, lambda: lse)
    return lse.astype(out_dtype)


@_lse.defjvp
def _lse_jvp(axes, out_dtype, primals, tangents):
    x, kept = primals
    tx, _ = tangents
    with wide_context():
        s = row_stats(x.astype(WIDE), axes, kept)
        lse = row_logsumexp(s).astype(out_dtype)
        dt = tangent_dtype(out_dtype)
        p = row_softmax(s).astype(dt)
        # d LSE = <p, dx>. The only residual is p: masked and -inf entries have p = 0 and drop
        # out of the sum for any finite tangent, with no mask of their own.
        return lse, jnp.sum(p * tx.astype(dt), axis=axes, keepdims=True).astype(out_dtype)


@partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def _lse_weighted(x, b, kept, axes, out_dtype):
    """``(log|sum b e^x|, sign)`` over kept entries; entries with ``b == 0`` are dropped."""
    with wide_context():
        xw, bw = x.astype(WIDE), b.astype(WIDE)
        nonzero = bw != 0
        kept_b = nonzero if kept is None else (kept & nonzero)
        # accurate=True, an exact product b * e and a dd log: m + log(S) may cancel
        # (see _wide.exp_dd_accurate), so S must be right to ~1e-30, not 1e-16.
        s = row_stats(xw, axes, kept_b, accurate=True)
        p_hi, p_err = two_prod(bw, s.e_hi)
        prod_hi = jnp.where(s.e_hi > 0, p_hi, 0.0)
        prod_lo = jnp.where(s.e_hi > 0, p_err + bw * s.e_lo, 0.0)
        sum_hi, sum_lo = dd_sum(prod_hi, prod_lo, axes, keepdims=True)
        sign = jnp.sign(sum_hi)
        log_hi, log_lo = log_dd_accurate(jnp.where(sum_hi == 0, 1.0, jnp.abs(sum_hi)), sign * sum_lo)
        m0 = jnp.where(jnp.isfinite(s.m), s.m, 0.0)
        hi, err = two_sum(m0, log_hi)
        lse = hi + (err + log_lo)
        lse = neginf_where(sum_hi == 0, lse)
        lse = posinf_where(s.inf_row & (sum_hi != 0), lse)
        lse = nan_where(s.nan_row | jnp.any(jnp.isnan(bw), axis=axes, keepdims=True), lse)
        return lse.astype(out_dtype), sign.astype(out_dtype)


@_lse_weighted.defjvp
def _lse_weighted_jvp(axes, out_dtype, primals, tangents):
    x, b, kept = primals
    tx, tb, _ = tangents
    lse, sign = _lse_weighted(x, b, kept, axes, out_dtype)
    dt = tangent_dtype(out_dtype)
    # d log|S| = dS / S with S = sum b e^x: weights w_i = e^(x_i - lse) * sign.
    w = jnp.where(jnp.isfinite(lse), jnp.exp(x.astype(dt) - lse.astype(dt)) * sign.astype(dt), 0.0)
    w = jnp.where(jnp.isfinite(w), w, 0.0)
    tx = masked_tangent(tx.astype(dt), kept)
    tb = masked_tangent(tb.astype(dt), kept)
    dlse = jnp.sum(w * (b.astype(dt) * tx + tb), axis=axes, keepdims=True)
    return (lse, sign), (dlse.astype(out_dtype), jnp.zeros_like(sign))


# One compiled kernel per shape and dtype, also when called eagerly (inlined under an outer jit).
_lse_jit = jax.jit(_lse, static_argnums=(2, 3))
_lse_weighted_jit = jax.jit(_lse_weighted, static_argnums=(3, 4))


def logsumexp(a, axis: Axis = None, b=None, keepdims: bool = False, return_sign: bool = False,
              where=None, *, temperature=None):
    r"""Log-sum-exp, accurate to within 1 ulp (float64: 4 ulp), even for one dominant entry.

    .. math::

        \operatorname{LSE}(a) = \log \sum_i b_i e^{a_i}
        = m + \operatorname{log1p}\Big(\sum_{i \ne i^*} e^{a_i - m}\Big)
        \quad (b = 1,\ m = a_{i^*} = \max_i a_i).

    A drop-in for :func:`jax.scipy.special.logsumexp` with the same signature (plus
    ``temperature``, which returns ``T * LSE(a / T)``, the smooth maximum at temperature ``T``).
    ``jax.scipy.special.logsumexp([0, -30, -30])`` in float32 returns 0; the true value is
    ``1.87e-13``, which this function returns to within an ulp (Blanchard, Higham & Higham 2021).

    Args:
      a: real array (integers and booleans are converted to the default float dtype).
      axis: axis or axes to reduce; ``None`` (the default, as in SciPy) reduces all.
      b: optional weights, broadcast together with ``a`` (as in jax and SciPy: ``axis`` then
        refers to the broadcast shape, and the result has the promoted dtype of ``a`` and
        ``b``); entries with ``b == 0`` are left out (so a huge
        ``a_i`` with weight 0 cannot underflow the rest). With negative weights the sum may
        cancel: accuracy is then relative to ``sum |b| e^a``, as for any summation.
      keepdims: keep the reduced axes with size 1.
      return_sign: also return the sign of the sum (``-1``, ``0`` or ``1``); without it a
        negative sum returns NaN (the real logarithm of a negative number), as in SciPy.
      where: optional boolean mask of the entries to include.
      temperature: optional positive scalar ``T``.

    Returns:
      The log-sum-exp (and the sign, if ``return_sign``), in the dtype of ``a`` (with ``b``:
      the promoted dtype of ``a`` and ``b``).

    Special values:
      * an empty sum (all ``-inf``, fully masked, or all weights 0) gives ``-inf`` (sign 0),
        with gradient 0, not NaN;
      * a ``+inf`` entry gives ``+inf``; a NaN among the kept entries gives NaN.

    Raises:
      TypeError: complex input, or a non-boolean ``where``.
      ValueError: ``axis`` out of range or repeated; ``b`` not broadcastable with ``a``, or
        ``where`` not broadcastable to their shape;
        a concrete ``temperature`` that is not positive and finite.
    """
    if b is not None:
        # As jax: a and b broadcast together (axis refers to the broadcast shape), and the
        # result has the floating dtype of their promoted dtype, promoted before any conversion
        # (int64 a with float32 b gives float32; a Python scalar b is weakly typed).
        a_in = jnp.asarray(np.asarray(a) if isinstance(a, (list, tuple)) else a)
        b_arr = b if isinstance(b, (int, float)) else jnp.asarray(
            np.asarray(b) if isinstance(b, (list, tuple)) else b)
        as_float_array(a_in, "a"), as_float_array(b_arr, "b")  # the dtype checks (complex...)
        out_dtype = inexact_dtype(jnp.result_type(a_in, b_arr))
        a = a_in.astype(out_dtype)
        try:
            shape = jnp.broadcast_shapes(a.shape, jnp.shape(b_arr))
        except ValueError as err:
            raise ValueError(f"b of shape {jnp.shape(b_arr)} does not broadcast with a's shape "
                             f"{a.shape}") from err
        a = jnp.broadcast_to(a.astype(out_dtype), shape)
        b = jnp.broadcast_to(jnp.asarray(b_arr, out_dtype), shape)
    else:
        a = as_float_array(a, "a")
    axes = canonical_axes(axis, a.ndim)
    kept = broadcast_mask(where, a.shape)
    check_temperature(temperature)
    out_dtype = jnp.dtype(a.dtype)
    with wide_context():
        return _logsumexp_wide(a, axes, b, keepdims, return_sign, kept, temperature, out_dtype)


def _logsumexp_wide(a, axes, b, keepdims, return_sign, kept, temperature, out_dtype):
    x, inner_dtype = a, out_dtype
    if temperature is not None:
        # Scale in, and back out, in wide precision so that T * LSE(a / T) rounds only once.
        inner_dtype = jnp.dtype(WIDE)
        x = a.astype(WIDE) / jnp.asarray(temperature, WIDE)

    if b is None:
        lse = _lse_jit(x, kept, axes, inner_dtype)
        # the NaN of a NaN row is lse's own: no NaN constant (debug_nans, see _special)
        one = jnp.where(is_neginf(lse), jnp.zeros((), lse.dtype), jnp.ones((), lse.dtype))
        sign = jnp.where(jnp.isnan(lse), lse, one).astype(inner_dtype)
    else:
        lse, sign = _lse_weighted_jit(x, b, kept, axes, inner_dtype)
        if not return_sign:
            lse = nan_where(sign < 0, lse)

    if temperature is not None:
        lse = (lse * jnp.asarray(temperature, WIDE)).astype(out_dtype)
        sign = sign.astype(out_dtype)
    lse, sign = _squeeze(lse, axes, keepdims), _squeeze(sign, axes, keepdims)
    return (lse, sign) if return_sign else lse
