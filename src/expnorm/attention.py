"""Attention with the softmax computed tile by tile: FlashAttention's forward and backward passes.

Plain attention ``softmax(q k^T / sqrt(d)) v`` materializes the ``(Nq, Nk)`` score matrix.
Dao et al. (2022) read the keys and values in blocks and keep, for every query, the online
normalizer state of :mod:`expnorm.online` together with an output accumulator; the form used
here, with an *unnormalized* accumulator divided by ``ell`` once at the end, is
FlashAttention-2's (Dao, 2023):

.. math::

    m' = \\max(m, \\max_j s_j), \\quad
    \\ell' = e^{m - m'} \\ell + \\sum_j e^{s_j - m'}, \\quad
    o' = e^{m - m'} o + \\sum_j e^{s_j - m'} v_j .

Only a ``(Nq, block)`` tile of scores exists at any time, so memory grows like
``Nq * block``, linearly in the sequence length, not quadratically (measured in
benchmarks/bench.py for the forward pass and benchmarks/attention_train_memory.py for
``value_and_grad``).

**Backward pass.** :func:`tiled_attention` has a custom VJP. The forward pass saves only
``q``, ``k``, ``v``, the output ``O`` and the per-row log-sum-exp ``L_i = m_i + log(ell_i)``
(O(N d) numbers); the backward pass walks over the key blocks again and *recomputes* each
tile of probabilities from the scores and ``L`` (FlashAttention's backward, Dao et al. 2022,
Algorithm 4, which saves ``m`` and ``ell``; Dao 2023, Algorithm 2, which saves their
combination ``L`` as here). With ``S = scale * q k^T``, ``P = softmax(S)`` and the
output cotangent ``dO``:

.. math::

    D_i = \\sum_c dO_{ic} O_{ic}, \\quad P_{ij} = e^{S_{ij} - L_i}, \\quad
    dV = P^T dO, \\quad dP = dO\\, V^T, \\quad dS = P \\circ (dP - D), \\quad
    dQ = \\text{scale}\\cdot dS\\, K, \\quad dK = \\text{scale}\\cdot dS^T Q .

``D_i = rowsum(dO o O) = sum_j P_ij dP_ij`` is the softmax Jacobian's correction term,
computed once from the saved output instead of from a stored ``P``. Autodiff through the
scan of the forward pass would instead keep every tile, i.e. O(Nq * Nk) memory.

**Masks and empty rows.** Scores outside ``mask`` (and above the diagonal when
``causal``) are ``-inf`` and get probability 0. A query row with no visible key (fully
masked) has no softmax; it is *defined* to output zeros, ``L_i = -inf``, and its gradients
are zero: the output of that row does not depend on ``q``, ``k`` or ``v``, so its ``dq`` row
is 0 and it contributes nothing to ``dk`` or ``dv``. Nothing in the forward or backward pass
produces NaN there (plain ``jax.nn.softmax`` of an all ``-inf`` row is NaN in both passes).

References:
  T. Dao, D. Y. Fu, S. Ermon, A. Rudra, C. Re (2022), FlashAttention: Fast and memory-efficient
  exact attention with IO-awareness, NeurIPS.
  T. Dao (2023), FlashAttention-2: Faster attention with better parallelism and work
  partitioning, arXiv:2307.08691 (ICLR 2024).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax


def _scale(d, scale):
    return (1.0 / jnp.sqrt(d)) if scale is None else scale


def _full_mask(mask, nq, nk):
    """The boolean mask broadcast to at least ``(nq, nk)`` in its last two axes."""
    mask = jnp.asarray(mask, bool)
    if mask.ndim < 2:
        mask = jnp.broadcast_to(mask, (nq, nk))
    return jnp.broadcast_to(mask, mask.shape[:-2] + (nq, nk))


def attention(q, k, v, *, scale=None, causal: bool = False, mask=None) -> jax.Array:
    """Plain attention ``softmax(q k^T * scale) v`` (the reference; O(Nq * Nk) memory).

    Args:
      q: queries ``(..., Nq, d)``; k: keys ``(..., Nk, d)``; v: values ``(..., Nk, dv)``.
      scale: multiplier of the scores, default ``1 / sqrt(d)``.
      causal: query ``i`` sees keys ``j <= i + (Nk - Nq)`` only.
      mask: optional boolean array broadcastable to ``(..., Nq, Nk)``; ``True`` = the query
        sees the key. Combined with ``causal`` by "and".

    A query row that sees no key returns zeros, with zero gradient (as :func:`tiled_attention`).
    """
    s = jnp.einsum("...qd,...kd->...qk", q, k) * jnp.asarray(_scale(q.shape[-1], scale), q.dtype)
    nq, nk = q.shape[-2], k.shape[-2]
    allowed = None
    if causal:
        allowed = jnp.arange(nk)[None, :] <= jnp.arange(nq)[:, None] + (nk - nq)
    if mask is not None:
        m = _full_mask(mask, nq, nk)
        allowed = m if allowed is None else (allowed & m)
    if allowed is None:
        p = jax.nn.softmax(s, axis=-1)
    else:
        s = jnp.where(allowed, s, -jnp.inf)
        # an empty row: softmax of zeros (finite, any value), then zeroed, so no NaN in
        # either pass; rows that see a key are untouched
        seen = jnp.any(allowed, axis=-1, keepdims=True)
        p = jnp.where(seen, jax.nn.softmax(jnp.where(seen, s, 0.0), axis=-1), 0.0)
    return jnp.einsum("...qk,...kd->...qd", p, v)


# ------------------------------------------------------------------------ tiled attention


def _blocks(x, batch, n_blocks, block):
    """``(..., n_blocks * block, c) -> (n_blocks, ..., block, c)`` for the scan."""
    return jnp.moveaxis(x.reshape(batch + (n_blocks, block, x.shape[-1])), -3, 0)


def _mask_blocks(mask, n_blocks, block, pad):
    """``(..., Nq, Nk) -> (n_blocks, ..., Nq, block)``; padded keys are masked out."""
    if pad:
        mask = jnp.pad(mask, [(0, 0)] * (mask.ndim - 1) + [(0, pad)])
    mask = mask.reshape(mask.shape[:-1] + (n_blocks, block))
    return jnp.moveaxis(mask, -2, 0)


def _visible(j, block, nq, nk, causal, mask_j):
    """Boolean ``(..., Nq, block)`` (or broadcastable): which keys of block j each query sees."""
    k_pos = j * block + jnp.arange(block)[None, :]
    valid = k_pos < nk
    if causal:
        valid = valid & (k_pos <= jnp.arange(nq)[:, None] + (nk - nq))
    if mask_j is not None:
        valid = valid & mask_j
    return valid


def _forward(qs, k, v, mask, block, causal):
    """The tiled forward pass on pre-scaled queries: (output in acc dtype, LSE per row)."""
    nq = qs.shape[-2]
    nk, dv = k.shape[-2], v.shape[-1]
    batch = qs.shape[:-2]
    n_blocks = -(-nk // block)
    pad = n_blocks * block - nk
    if pad:
        widths = [(0, 0)] * (k.ndim - 2) + [(0, pad), (0, 0)]
        k = jnp.pad(k, widths)
        v = jnp.pad(v, widths)
    acc = jnp.promote_types(qs.dtype, jnp.float32)
    kb, vb = _blocks(k, batch, n_blocks, block), _blocks(v, batch, n_blocks, block)
    mb = None if mask is None else _mask_blocks(mask, n_blocks, block, pad)

    def step(carry, inputs):
        m, l, o = carry
        j, k_j, v_j, mask_j = inputs
        s = jnp.einsum("...qd,...kd->...qk", qs, k_j).astype(acc)
        s = jnp.where(_visible(j, block, nq, nk, causal, mask_j), s, -jnp.inf)
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
    (m, l, o), _ = lax.scan(step, init, (jnp.arange(n_blocks), kb, vb, mb))
    seen = l > 0
    out = jnp.where(seen[..., None], o / jnp.where(seen, l, 1.0)[..., None], 0.0)
    lse = jnp.where(seen, m + jnp.log(jnp.where(seen, l, 1.0)), -jnp.inf)
    return out, lse


@partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _flash(qs, k, v, mask, block, causal):
    out, _ = _forward(qs, k, v, mask, block, causal)
    return out.astype(jnp.result_type(qs.dtype, v.dtype))


def _flash_fwd(qs, k, v, mask, block, causal):
    out, lse = _forward(qs, k, v, mask, block, causal)
    out = out.astype(jnp.result_type(qs.dtype, v.dtype))
    return out, (qs, k, v, mask, out, lse)


def _flash_bwd(block, causal, res, d_out):
    qs, k, v, mask, out, lse = res
    nq, d = qs.shape[-2], qs.shape[-1]
    nk, dv = k.shape[-2], v.shape[-1]
    batch = qs.shape[:-2]
    n_blocks = -(-nk // block)
    pad = n_blocks * block - nk
    acc = jnp.promote_types(jnp.result_type(qs.dtype, k.dtype, v.dtype), jnp.float32)
    kp, vp = k, v
    if pad:
        widths = [(0, 0)] * (k.ndim - 2) + [(0, pad), (0, 0)]
        kp = jnp.pad(k, widths)
        vp = jnp.pad(v, widths)
    kb, vb = _blocks(kp, batch, n_blocks, block), _blocks(vp, batch, n_blocks, block)
    mb = None if mask is None else _mask_blocks(mask, n_blocks, block, pad)
    do = d_out.astype(acc)
    qa = qs.astype(acc)
    big_d = jnp.sum(do * out.astype(acc), axis=-1)  # D_i = rowsum(dO o O)
    seen = lse > -jnp.inf
    lse0 = jnp.where(seen, lse, 0.0)  # empty rows: any finite shift, their P is set to 0

    def step(dq, inputs):
        j, k_j, v_j, mask_j = inputs
        s = jnp.einsum("...qd,...kd->...qk", qs, k_j).astype(acc)  # as in the forward pass
        k_j, v_j = k_j.astype(acc), v_j.astype(acc)
        vis = _visible(j, block, nq, nk, causal, mask_j) & seen[..., None]
        p = jnp.where(vis, jnp.exp(jnp.where(vis, s, 0.0) - lse0[..., None]), 0.0)
        dv_j = jnp.einsum("...qk,...qc->...kc", p, do)
        dp = jnp.einsum("...qc,...kc->...qk", do, v_j)
        ds = p * (dp - big_d[..., None])
        dq = dq + jnp.einsum("...qk,...kd->...qd", ds, k_j)
        dk_j = jnp.einsum("...qk,...qd->...kd", ds, qa)
        return dq, (dk_j, dv_j)

    dq0 = jnp.zeros(batch + (nq, d), acc)
    dq, (dkb, dvb) = lax.scan(step, dq0, (jnp.arange(n_blocks), kb, vb, mb))
    # (n_blocks, ..., block, c) -> (..., Nk, c)
    dk = jnp.moveaxis(dkb, 0, -3).reshape(batch + (n_blocks * block, d))[..., :nk, :]
    dvv = jnp.moveaxis(dvb, 0, -3).reshape(batch + (n_blocks * block, dv))[..., :nk, :]
    return dq.astype(qs.dtype), dk.astype(k.dtype), dvv.astype(v.dtype), None


_flash.defvjp(_flash_fwd, _flash_bwd)


@partial(jax.jit, static_argnames=("block_size", "causal"))
def tiled_attention(q, k, v, *, block_size: int = 512, scale=None, causal: bool = False,
                    mask=None) -> jax.Array:
    """Attention computed over blocks of ``block_size`` keys, forward and backward.

    Same arguments and result as :func:`attention` (equal within floating-point rounding),
    but the score matrix never exists in full, in the forward pass nor in the gradient:
    working memory is ``O(Nq * block_size)``, and autodiff keeps only ``q``, ``k``, ``v``,
    the output and one log-sum-exp per query row for the backward pass (a custom VJP that
    recomputes each tile of probabilities, FlashAttention's backward; see the module
    docstring for the formulas).

    Args:
      q, k, v: ``(..., Nq, d)``, ``(..., Nk, d)``, ``(..., Nk, dv)`` with equal leading axes.
      block_size: keys per tile (``Nk`` need not be a multiple; the last tile is padded).
      scale: multiplier of the scores, default ``1 / sqrt(d)``; differentiable like ``q``.
      causal: query ``i`` sees keys ``j <= i + (Nk - Nq)`` only.
      mask: optional boolean array broadcastable to ``(..., Nq, Nk)``, ``True`` = visible;
        combined with ``causal`` by "and". Not differentiated. (The mask is an
        ``Nq x Nk`` input of one byte per entry; ``causal`` needs no array.)

    Edge cases: a query row with no visible key (fully masked, or ``causal`` with
    ``Nq > Nk``) returns zeros and has zero gradients (no NaN), where
    ``jax.nn.softmax`` would give NaN. Computes in the input dtype's precision with the
    running max, sum and accumulators in at least float32 (as attention kernels do); the
    backward pass works in at least float32 and rounds the gradients to the input dtypes.

    Differentiation: reverse mode (``jax.grad``, ``jax.vjp``), also under ``jit`` and
    ``vmap``. Forward mode (``jax.jvp``, ``jax.jacfwd``) is not available: JAX cannot apply
    forward-mode autodiff to a ``custom_vjp`` function (it raises ``TypeError``); use
    :func:`attention` for it.
    """
    d = q.shape[-1]
    block = min(block_size, k.shape[-2])
    qs = q * jnp.asarray(_scale(d, scale), q.dtype)
    if mask is not None:
        mask = _full_mask(mask, q.shape[-2], k.shape[-2])
    return _flash(qs, k, v, mask, block, causal)


__all__ = ["attention", "tiled_attention"]
