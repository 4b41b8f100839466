"""Attention with the softmax computed tile by tile: the forward rescaling of FlashAttention.

Plain attention ``softmax(q k^T / sqrt(d)) v`` materializes the ``(Nq, Nk)`` score matrix.
Dao et al. (2022) read the keys and values in blocks and keep, for every query, the online
normalizer state of :mod:`expnorm.online` together with an unnormalized output accumulator:

.. math::

    m' = \\max(m, \\max_j s_j), \\quad
    \\ell' = e^{m - m'} \\ell + \\sum_j e^{s_j - m'}, \\quad
    o' = e^{m - m'} o + \\sum_j e^{s_j - m'} v_j ,

and divide by ``ell`` once at the end. Only a ``(Nq, block)`` tile of scores exists at any
time, so memory grows like ``Nq * block``, linearly in the sequence length, not quadratically
(measured in benchmarks/bench.py as the peak resident memory of one process per size).

This is the algorithm in plain JAX (``lax.scan`` over key blocks), not a fused kernel: XLA
still writes each tile to memory. It computes in the input dtype (as attention kernels do);
gradients flow through the scan by ordinary autodiff, which stores every tile (the
FlashAttention backward pass, which recomputes them, is not implemented here).

References:
  T. Dao, D. Y. Fu, S. Ermon, A. Rudra, C. Re (2022), FlashAttention: Fast and memory-efficient
  exact attention with IO-awareness, NeurIPS.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax


def _scale(d, scale):
    return (1.0 / jnp.sqrt(d)) if scale is None else scale


def attention(q, k, v, *, scale=None, causal: bool = False) -> jax.Array:
    """Plain attention ``softmax(q k^T * scale) v`` (the reference; O(Nq * Nk) memory).

    Args:
      q: queries ``(..., Nq, d)``; k: keys ``(..., Nk, d)``; v: values ``(..., Nk, dv)``.
      scale: multiplier of the scores, default ``1 / sqrt(d)``.
      causal: query ``i`` sees keys ``j <= i + (Nk - Nq)`` only.
    """
    s = jnp.einsum("...qd,...kd->...qk", q, k) * jnp.asarray(_scale(q.shape[-1], scale), q.dtype)
    if causal:
        nq, nk = q.shape[-2], k.shape[-2]
        allowed = jnp.arange(nk)[None, :] <= jnp.arange(nq)[:, None] + (nk - nq)
        s = jnp.where(allowed, s, -jnp.inf)
    p = jax.nn.softmax(s, axis=-1)
    return jnp.einsum("...qk,...kd->...qd", p, v)


@partial(jax.jit, static_argnames=("block_size", "causal"))
def tiled_attention(q, k, v, *, block_size: int = 512, scale=None, causal: bool = False) -> jax.Array:
    """Attention computed over blocks of ``block_size`` keys with a running max and sum.

    Same arguments and result as :func:`attention` (equal within floating-point rounding),
    but the score matrix never exists in full: memory is ``O(Nq * block_size)``.
    A query row with no visible key returns zeros.
    """
    nq, d = q.shape[-2], q.shape[-1]
    nk, dv = k.shape[-2], v.shape[-1]
    batch = q.shape[:-2]
    block = min(block_size, nk)
    n_blocks = -(-nk // block)
    pad = n_blocks * block - nk
    if pad:
        widths = [(0, 0)] * (k.ndim - 2) + [(0, pad), (0, 0)]
        k = jnp.pad(k, widths)
        v = jnp.pad(v, widths)
    acc = jnp.promote_types(q.dtype, jnp.float32)
    qs = q * jnp.asarray(_scale(d, scale), q.dtype)
    # blocks first, for the scan: (n_blocks, ..., block, d)
    kb = jnp.moveaxis(k.reshape(batch + (n_blocks, block, d)), -3, 0)
    vb = jnp.moveaxis(v.reshape(batch + (n_blocks, block, dv)), -3, 0)
    q_pos = jnp.arange(nq)[:, None] + (nk - nq)

    def step(carry, inputs):
        m, l, o = carry
        j, k_j, v_j = inputs
        s = jnp.einsum("...qd,...kd->...qk", qs, k_j).astype(acc)
        k_pos = j * block + jnp.arange(block)[None, :]
        valid = k_pos < nk
        if causal:
            valid = valid & (k_pos <= q_pos)
        s = jnp.where(valid, s, -jnp.inf)
        m_new = jnp.maximum(m, jnp.max(s, axis=-1))
        # rows that have seen no key yet keep m = -inf; shift by 0 there (every p is 0)
        shift = jnp.where(m_new == -jnp.inf, 0.0, m_new)
        alpha = jnp.exp(m - shift)  # exp(-inf) = 0 on the first visible block
        p = jnp.exp(s - shift[..., None])
        l = alpha * l + jnp.sum(p, axis=-1)
        o = alpha[..., None] * o + jnp.einsum("...qk,...kd->...qd", p.astype(v.dtype), v_j).astype(acc)
        return (m_new, l, o), None

    init = (jnp.full(batch + (nq,), -jnp.inf, acc), jnp.zeros(batch + (nq,), acc),
            jnp.zeros(batch + (nq, dv), acc))
    (m, l, o), _ = lax.scan(step, init, (jnp.arange(n_blocks), kb, vb))
    out = jnp.where(l[..., None] > 0, o / jnp.where(l > 0, l, 1.0)[..., None], 0.0)
    return out.astype(jnp.result_type(q.dtype, v.dtype))


__all__ = ["attention", "tiled_attention"]
