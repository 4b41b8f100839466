"""Softmax and log-softmax, accurate to the last bit (drop-ins for ``jax.nn``)."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from . import _native
from ._checks import Axis, as_float_array, broadcast_mask, canonical_axes, check_temperature
from ._rows import (fast_log_softmax, fast_softmax, fast_stats, row_log_softmax,
                    row_softmax, row_stats)
from ._wide import WIDE, tangent_dtype, wide_context


def _prepare(x, axis, where, temperature):
    """Validate, and scale by the temperature in wide precision; returns the impl's arguments."""
    x = as_float_array(x)
    axes = canonical_axes(axis, x.ndim)
    kept = broadcast_mask(where, x.shape)
    check_temperature(temperature)
    out_dtype = x.dtype
    if temperature is not None:
        with wide_context():
            x = x.astype(WIDE) / jnp.asarray(temperature, WIDE)
    return x, kept, axes, jnp.dtype(out_dtype)


@partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def _softmax(x, kept, axes, out_dtype, overwrite_input=False):
    with wide_context():
        if _native.usable(x, axes, kept, out_dtype):
            # the same float64 computation, compiled (kernels.cc)
            return _native.softmax_f32(x, inplace=overwrite_input)
        if jnp.dtype(out_dtype) != jnp.float64:
            # float16/bfloat16/float32 results: plain float64 is accurate enough (_rows.fast_stats)
            return fast_softmax(fast_stats(x, axes, kept), axes).astype(out_dtype)
        p = row_softmax(row_stats(x.astype(WIDE), axes, kept))
        return p.astype(out_dtype)


@_softmax.defjvp
def _softmax_jvp(axes, out_dtype, overwrite_input, primals, tangents):
    x, kept = primals
    tx, _ = tangents
    p = _softmax(x, kept, axes, out_dtype, overwrite_input)
    with wide_context():
        dt = tangent_dtype(out_dtype)
        # The only residual is p (as jax.nn.softmax with jax_softmax_custom_jvp): masked and
        # -inf entries have p = 0, so p * (...) is exactly 0 there for any finite tangent, and
        # they drop out of <p, dx> without a mask of their own.
        pt, tt = p.astype(dt), tx.astype(dt)
        dp = pt * (tt - jnp.sum(pt * tt, axis=axes, keepdims=True))
        return p, dp.astype(out_dtype)


@partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def _log_softmax(x, kept, axes, out_dtype, overwrite_input=False):
    with wide_context():
        if _native.usable(x, axes, kept, out_dtype):
            return _native.log_softmax_f32(x, inplace=overwrite_input)
        if jnp.dtype(out_dtype) != jnp.float64:
            return fast_log_softmax(fast_stats(x, axes, kept), axes).astype(out_dtype)
        return row_log_softmax(row_stats(x.astype(WIDE), axes, kept)).astype(out_dtype)


@_log_softmax.defjvp
def _log_softmax_jvp(axes, out_dtype, overwrite_input, primals, tangents):
    x, kept = primals
    tx, _ = tangents
    ls = _log_softmax(x, kept, axes, out_dtype, overwrite_input)
    p = _softmax(x, kept, axes, out_dtype)
    with wide_context():
        dt = tangent_dtype(out_dtype)
        # residuals: p and where the output is finite (masked entries are -inf outputs and have
        # p = 0, so they need no mask of their own)
        pt, tt = p.astype(dt), tx.astype(dt)
        # no mask on p here: an entry whose probability underflows still has d ls_i = dx_i - <p, dx>
        dls = tt - jnp.sum(pt * tt, axis=axes, keepdims=True)
        # -inf outputs are constant. The zero is made from the tangent (0 * dls): a 0.0 constant
        # broadcast on the primal side would be one more residual (finite tangents assumed there)
        dls = jnp.where(jnp.isfinite(ls), dls, 0 * dls)
        return ls, dls.astype(out_dtype)


# One compiled kernel per shape and dtype, also when called eagerly (inlined under an outer jit).
_softmax_jit = jax.jit(_softmax, static_argnums=(2, 3, 4))
_log_softmax_jit = jax.jit(_log_softmax, static_argnums=(2, 3, 4))


def softmax(x, axis: Axis = -1, where=None, *, temperature=None,
            overwrite_input: bool = False) -> jax.Array:
    r"""Softmax, accurate to within 1 ulp (float64: 4 ulp).

    .. math::

        \operatorname{softmax}(x)_i = \frac{e^{x_i / T}}{\sum_j e^{x_j / T}}

    A drop-in for :func:`jax.nn.softmax`. Computed as ``exp(x - m) / (1 + t)`` with
    ``m = max(x)`` and ``t`` the sum of the other shifted exponentials, in float64 (with
    double-double corrections for float64 results only), then rounded once to ``x.dtype``.
    For float32 rows over the last axis with no mask, on the CPU, the work is done by a
    compiled kernel (:mod:`expnorm._native`, vectorized and multithreaded) with the same
    float64 arithmetic; ``expnorm._native.status()`` tells whether it is in use.

    Args:
      x: real array. Integer and boolean arrays are converted to JAX's default float dtype.
      axis: axis or axes over which the probabilities sum to 1; ``None`` for all axes.
      where: optional boolean mask, broadcast to ``x``; masked entries get probability 0 and
        take no part in the normalization.
      temperature: optional positive scalar ``T``; the result is ``softmax(x / T)``. ``T -> 0``
        approaches a one-hot argmax, ``T -> inf`` the uniform distribution.
      overwrite_input: for callers that donate ``x`` (``jax.jit(f, donate_argnums=0)``): the
        compiled kernel then writes the result into ``x``'s buffer and nothing is allocated.
        Only the kernel's path (float32 rows over the last axis, no mask, no temperature, on
        the CPU) uses it. Off by default: when ``x`` is not donated, XLA must copy ``x`` first
        so that the kernel can overwrite the copy, and that extra pass into fresh memory
        makes the call slower (measured in the CPU appendix of the book).
        The result is the same either way, and JAX arrays stay immutable: without donation
        the caller's ``x`` is never changed.

    Returns:
      An array of the shape and dtype of ``x`` whose rows sum to 1.

    Special values:
      * ``-inf`` entries get probability exactly 0;
      * a row that is all ``-inf`` or fully masked has no distribution: it returns all zeros
        (not NaN), and its gradient is 0;
      * ``+inf`` entries share the mass equally (the limit as they grow together); finite
        entries of that row get 0;
      * a NaN among the kept entries makes its whole row NaN;
      * probabilities below the smallest normal number of the dtype (about 1.2e-38 in
        float32) may come back as 0: XLA flushes subnormal results to zero on CPU. The
        accuracy target covers every result whose exact value is normal.

    Gradients: ``d softmax = p * (dx - <p, dx>)``, with exact zeros at entries of probability 0
    for finite tangents, so masks and ``-inf`` never produce NaN gradients. The backward pass
    keeps one residual, ``p`` (as ``jax.nn.softmax`` does with ``jax_softmax_custom_jvp``).

    Raises:
      TypeError: complex ``x``, or a non-boolean ``where``.
      ValueError: ``axis`` out of range or repeated; ``where`` not broadcastable; a concrete
        ``temperature`` that is not positive and finite (under ``jit`` it is not checked).

    References:
      J. S. Bridle (1990), probabilistic interpretation of feedforward network outputs.
      P. Blanchard, D. J. Higham, N. J. Higham (2021), Accurately computing the log-sum-exp
      and softmax functions, IMA J. Numer. Anal. 41(4).
    """
    x, kept, axes, out_dtype = _prepare(x, axis, where, temperature)
    with wide_context():
        return _softmax_jit(x, kept, axes, out_dtype, bool(overwrite_input))


def log_softmax(x, axis: Axis = -1, where=None, *, temperature=None,
                overwrite_input: bool = False) -> jax.Array:
    r"""Log-softmax, accurate to within 1 ulp (float64: 4 ulp), even for one dominant entry.

    .. math::

        \operatorname{log\_softmax}(x)_i = x_i - m - \operatorname{log1p}\Big(\sum_{j \ne j^*}
        e^{x_j - m}\Big), \qquad m = x_{j^*} = \max_j x_j .

    A drop-in for :func:`jax.nn.log_softmax`. Where ``jax.nn.log_softmax([0, -20])`` in float32
    returns ``-0.0`` for the first entry (the true value is ``-2.06e-9``), the ``log1p`` form
    keeps full relative accuracy (Blanchard, Higham & Higham 2021).

    Args:
      x: real array (integers and booleans are converted to the default float dtype).
      axis: axis or axes of the distribution; ``None`` for all.
      where: optional boolean mask; masked entries return ``-inf`` and take no part.
      temperature: optional positive scalar ``T``; the result is ``log_softmax(x / T)``.
      overwrite_input: as for :func:`softmax`.

    Special values:
      * ``-inf`` entries return ``-inf``; a row that is all ``-inf`` or fully masked returns
        all ``-inf`` (the log of probability 0), with gradient 0;
      * ``k`` entries equal to ``+inf`` return ``-log(k)``; the finite entries of their row
        return ``-inf``;
      * a NaN among the kept entries makes its whole row NaN.

    Gradients: ``dx - <softmax(x), dx>`` at finite outputs, exactly 0 at ``-inf`` outputs.

    Raises:
      TypeError, ValueError: as for :func:`softmax`.
    """
    x, kept, axes, out_dtype = _prepare(x, axis, where, temperature)
    with wide_context():
        return _log_softmax_jit(x, kept, axes, out_dtype, bool(overwrite_input))
