"""Vocabulary-parallel softmax and cross-entropy: the class axis split across devices.

When the vocabulary is split over ``P`` devices (as in Megatron-LM's vocabulary-parallel
output layer), each device holds logits ``(N, V / P)``. The online normalizer of
:mod:`expnorm.online` needs two collectives on scalars per row, never the logits themselves:

1. ``m = pmax(m_local)``: the global max;
2. ``t = psum(contribution)``: each device adds ``(1 + t_local) e^{m_local - m}``, except the
   one device chosen to hold the max (the first with ``m_local == m``), which adds ``t_local``.
   So ``t`` still excludes exactly one copy of the max and ``LSE = m + log1p(t)`` stays accurate
   when one entry dominates.

The cross-entropy needs the label's logit, which lives on one device: a third ``psum`` of a
zero-or-logit per row. Everything is computed in float64 and rounded once, as in
:func:`expnorm.softmax`, so the result equals the single-device one to within 1 ulp in
float32. These functions are forward only (no custom derivative rule).

They run under :func:`jax.shard_map` over a mesh axis that splits the last axis of the logits.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ._wide import WIDE, wide_context
from .online import online_state


def _global_state(x, axis_name):
    """(m, t) of the full rows from a local shard ``x`` (…, V / P), inside shard_map."""
    m_loc, t_loc = online_state(x, axis=-1)
    m = lax.pmax(m_loc, axis_name)
    me = lax.axis_index(axis_name)
    holds = (m_loc == m) | jnp.isnan(m)
    big = jnp.iinfo(jnp.int32).max
    owner = lax.pmin(jnp.where(holds, me, big), axis_name)
    d = jnp.where(m_loc == m, 0.0, m_loc - m)
    scaled = jnp.where(m_loc == -jnp.inf, 0.0, (1.0 + t_loc) * jnp.exp(d))
    contribution = jnp.where(me == owner, t_loc, scaled)
    t = lax.psum(jnp.where(jnp.isfinite(m), contribution, 0.0), axis_name)
    return m, t


def _local_softmax(x, axis_name):
    with wide_context():
        m, t = _global_state(x, axis_name)
        xw = x.astype(WIDE)
        mk, tk = m[..., None], t[..., None]
        fin = jnp.isfinite(mk)
        e = jnp.exp(jnp.where(fin, xw - jnp.where(fin, mk, 0.0), -jnp.inf))
        # +inf rows: the +inf entries share the mass; count them across devices
        n_inf = lax.psum(jnp.sum(xw == jnp.inf, axis=-1), axis_name)[..., None]
        e = jnp.where(mk == jnp.inf, jnp.where(xw == jnp.inf, 1.0 / n_inf, 0.0), e / (1.0 + tk))
        p = jnp.where(mk == -jnp.inf, 0.0, e)
        return jnp.where(jnp.isnan(mk), jnp.nan, p).astype(x.dtype)


def _local_ce(x, labels, axis_name):
    with wide_context():
        m, t = _global_state(x, axis_name)
        lse = jnp.where(jnp.isfinite(m), m + jnp.log1p(t), m)
        v_loc = x.shape[-1]
        start = lax.axis_index(axis_name) * v_loc
        inside = (labels >= start) & (labels < start + v_loc)
        idx = jnp.clip(labels - start, 0, v_loc - 1)
        picked = jnp.take_along_axis(x, idx[..., None], axis=-1)[..., 0].astype(WIDE)
        zl = lax.psum(jnp.where(inside, picked, 0.0), axis_name)
        n_total = lax.psum(v_loc, axis_name)
        valid = (labels >= 0) & (labels < n_total)
        # (m - z_label) + log1p(t): m - z_label is exact, so a tiny loss keeps its digits
        fin = jnp.isfinite(m)
        loss = jnp.where(fin, (jnp.where(fin, m, 0.0) - zl) + jnp.log1p(t), lse - zl)
        loss = jnp.where(zl == -jnp.inf, jnp.inf, loss)  # label at -inf: probability 0
        # +inf row with the label at a +inf entry: probability 1 / (number of +inf entries)
        n_inf = lax.psum(jnp.sum(x == jnp.inf, axis=-1), axis_name).astype(WIDE)
        loss = jnp.where((m == jnp.inf) & (zl == jnp.inf), jnp.log(n_inf), loss)
        loss = jnp.where(valid & ~jnp.isnan(m), loss, jnp.nan)
        return loss.astype(x.dtype)


def _shard(x, mesh, spec):
    """Place ``x`` with the given sharding (a no-op when it already has it)."""
    return jax.device_put(jnp.asarray(x), NamedSharding(mesh, spec))


def vocab_parallel_softmax(logits, mesh, axis_name: str = "vocab") -> jax.Array:
    """Softmax over the last axis of ``logits`` (N, V), sharded over ``axis_name`` of ``mesh``.

    ``V`` must be divisible by the size of the mesh axis. The result is sharded like the input
    and equals :func:`expnorm.softmax` (within 1 ulp in float32).
    """
    spec = P(*([None] * (logits.ndim - 1)), axis_name)
    f = jax.shard_map(partial(_local_softmax, axis_name=axis_name), mesh=mesh,
                      in_specs=(spec,), out_specs=spec)
    with wide_context():
        return jax.jit(f)(_shard(logits, mesh, spec))


def vocab_parallel_cross_entropy(logits, labels, mesh, axis_name: str = "vocab") -> jax.Array:
    """Integer-label cross-entropy with the class (last) axis sharded over ``axis_name``.

    Three collectives on ``N`` numbers each (a max, a min for the max's owner, and two sums),
    whatever ``V``. Equals :func:`expnorm.softmax_cross_entropy_with_integer_labels`
    (within 1 ulp in float32); an out-of-range label gives NaN.
    """
    spec = P(*([None] * (logits.ndim - 1)), axis_name)
    rep = P(*([None] * labels.ndim))
    f = jax.shard_map(partial(_local_ce, axis_name=axis_name), mesh=mesh,
                      in_specs=(spec, rep), out_specs=rep)
    with wide_context():
        return jax.jit(f)(_shard(logits, mesh, spec), _shard(labels, mesh, rep))


__all__ = ["vocab_parallel_cross_entropy", "vocab_parallel_softmax"]
