"""The online normalizer: log-sum-exp and softmax in one streaming pass over a row.

Milakov & Gimelshein (2018) observed that the pair (running max ``m``, sum of exponentials
scaled by that max) can be updated one chunk at a time, so that the normalizer of a row is
known after a *single* read of it. Two partial pairs combine with

.. math::

    (m_1, s_1) \\oplus (m_2, s_2) = \\big(m,\\ s_1 e^{m_1 - m} + s_2 e^{m_2 - m}\\big),
    \\qquad m = \\max(m_1, m_2),

an associative and commutative operation with identity ``(-inf, 0)``: it can be folded left
to right over chunks (:func:`logsumexp_stream`, :func:`streaming_logsumexp`), or in a tree
(:func:`jax.lax.associative_scan`, :func:`cumulative_logsumexp`).

expnorm stores ``t = s - 1`` instead of ``s`` (:class:`OnlineLSE`): the row's exponentials
*except one copy of the max*. Then ``LSE = m + log1p(t)`` keeps full relative accuracy when one
entry dominates (``t`` tiny), as in the rest of the library (Blanchard, Higham & Higham 2021).
In that form the combine reads, for ``m_1 >= m_2``,

.. math::

    (m_1, t_1) \\oplus (m_2, t_2) = \\big(m_1,\\ t_1 + (1 + t_2)\\, e^{m_2 - m_1}\\big).

Accuracy (tested in tests/test_online.py): the state is accumulated in float64 for float16,
bfloat16 and float32 inputs (and float64 for float64), so results are within 1 ulp of the
exact value for those dtypes, except when ``m + log1p(t)`` cancels (``m < 0`` and a result far
smaller than ``|m|``): there the absolute error is about ``2**-52 * |m|``. In float64 the
relative error grows with the number of chunks, as for any summation: about ``(chunks + 2)``
ulp. (:func:`expnorm.logsumexp` is the accurate single-pass-in-memory function; this module is
for rows that do not fit in memory or arrive in pieces.)

References:
  M. Milakov, N. Gimelshein (2018), Online normalizer calculation for softmax, arXiv:1805.02867.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ._checks import as_float_array
from ._wide import WIDE, tangent_dtype, wide_context


class OnlineLSE(NamedTuple):
    """Partial log-sum-exp state of a set of rows: ``LSE = m + log1p(t)``.

    Attributes:
      m: the running max (``-inf`` for an empty row, NaN if a NaN was seen).
      t: ``sum(exp(x - m))`` over the entries seen, less one copy of the max (``>= 0``).
    """

    m: jax.Array
    t: jax.Array


def _acc_dtype(dtype):
    return jnp.dtype(WIDE) if jnp.finfo(dtype).bits <= 64 else jnp.dtype(dtype)


def online_identity(shape=(), dtype=WIDE) -> OnlineLSE:
    """The empty state ``(-inf, 0)``: the identity of :func:`online_combine`."""
    with wide_context():
        return OnlineLSE(jnp.full(shape, -jnp.inf, dtype), jnp.zeros(shape, dtype))


def online_combine(a: OnlineLSE, b: OnlineLSE) -> OnlineLSE:
    """The associative combine of two states (elementwise over rows; broadcasts).

    ``(m1, t1) (+) (m2, t2) = (m, t_big + (1 + t_small) * exp(m_small - m))`` where ``big`` is the
    state holding the larger max. Ties give ``t1 + t2 + 1``. Empty states (``m = -inf``) are
    neutral; ``+inf`` maxima give ``+inf`` rows; NaN propagates. Usable as the ``fn`` of
    :func:`jax.lax.associative_scan`.
    """
    with wide_context():
        m1, t1 = a
        m2, t2 = b
        first = (m1 >= m2) | jnp.isnan(m2)
        big_m, big_t = jnp.where(first, m1, m2), jnp.where(first, t1, t2)
        small_m, small_t = jnp.where(first, m2, m1), jnp.where(first, t2, t1)
        # exp(small - big): 0 for an empty small state, 1 for equal maxima (also inf == inf)
        d = jnp.where(small_m == big_m, 0.0, small_m - big_m)
        scale = jnp.where(small_m == -jnp.inf, 0.0, jnp.exp(d))
        m = jnp.where(jnp.isnan(m1) | jnp.isnan(m2), jnp.nan, big_m)
        return OnlineLSE(m, big_t + (1.0 + small_t) * scale)


def online_state(x, axis: int = -1) -> OnlineLSE:
    """The state of ``x`` reduced over ``axis`` (one chunk of each row), in the accumulator dtype.

    Accumulates in float64 (for inputs of up to 64 bits), whatever the input dtype.
    """
    x = as_float_array(x)
    with wide_context():
        xw = x.astype(_acc_dtype(x.dtype))
        neg_inf = jnp.array(-jnp.inf, xw.dtype)
        nan_row = jnp.any(jnp.isnan(xw), axis=axis)
        m = jnp.max(jnp.where(jnp.isnan(xw), neg_inf, xw), axis=axis, initial=-jnp.inf)
        mk = jnp.expand_dims(m, axis)
        finite_m = jnp.isfinite(mk)
        e = jnp.exp(jnp.where(finite_m, xw - jnp.where(finite_m, mk, 0.0), 0.0))
        at_max = xw == mk
        # on an inf row only the +inf entries count (each as 1); the others are 0
        e = jnp.where(mk == jnp.inf, jnp.where(at_max, 1.0, 0.0), e)
        e = jnp.where(mk == -jnp.inf, 0.0, e)
        t = jnp.sum(jnp.where(at_max, 0.0, e), axis=axis)
        ties = jnp.maximum(jnp.sum(at_max, axis=axis).astype(xw.dtype) - 1.0, 0.0)
        t = jnp.where(m == -jnp.inf, 0.0, t + ties)
        return OnlineLSE(jnp.where(nan_row, jnp.nan, m), t)


def online_update(state: OnlineLSE, chunk, axis: int = -1) -> OnlineLSE:
    """Fold one more chunk of every row into ``state``: ``state (+) online_state(chunk)``."""
    return online_combine(state, online_state(chunk, axis))


def online_logsumexp(state: OnlineLSE, dtype=None) -> jax.Array:
    """``m + log1p(t)``, rounded to ``dtype`` (default: the state's dtype)."""
    with wide_context():
        m, t = state
        lse = jnp.where(jnp.isfinite(m), m + jnp.log1p(t), m)
        return lse if dtype is None else lse.astype(dtype)


def online_softmax(state: OnlineLSE, chunk, axis: int = -1) -> jax.Array:
    """Softmax of one ``chunk`` of the rows whose complete state is ``state``.

    ``exp(x - m) / (1 + t)``, computed in the accumulator dtype and rounded to ``chunk``'s
    dtype: the second pass of a streaming softmax (each chunk is read once more and written
    once). Rows with no entry above ``-inf`` give zeros; ``+inf`` entries share the mass.
    """
    chunk = as_float_array(chunk)
    with wide_context():
        m = jnp.expand_dims(state.m, axis)
        t = jnp.expand_dims(state.t, axis)
        x = chunk.astype(m.dtype)
        fin = jnp.isfinite(m)
        e = jnp.exp(jnp.where(fin, x - jnp.where(fin, m, 0.0), -jnp.inf))
        e = jnp.where(m == jnp.inf, jnp.where(x == jnp.inf, 1.0, 0.0), e)
        p = jnp.where(m == -jnp.inf, 0.0, e / (1.0 + t))
        p = jnp.where(jnp.isnan(m), jnp.nan, p)
        return p.astype(chunk.dtype)


def logsumexp_stream(chunks: Iterable, axis: int = -1, dtype=None) -> jax.Array:
    """Log-sum-exp of rows that arrive as an iterable of chunks (concatenated along ``axis``).

    Each chunk is read once; only the state of size ``rows`` is kept, so the row may be longer
    than memory (chunks from a file or a generator). ``dtype`` defaults to the first chunk's.
    """
    state = None
    for chunk in chunks:
        chunk = as_float_array(chunk)
        dtype = chunk.dtype if dtype is None else dtype
        s = _update_jit(chunk, axis) if state is None else _fold_jit(state, chunk, axis)
        state = s
    if state is None:
        raise ValueError("logsumexp_stream needs at least one chunk")
    return online_logsumexp(state, dtype)


_update_jit = jax.jit(online_state, static_argnums=1)
_fold_jit = jax.jit(online_update, static_argnums=2)


def _chunked_rows(x, chunk_size):
    """``x`` (rows, n) as (chunks, rows, chunk_size), padded with -inf."""
    n = x.shape[-1]
    n_chunks = -(-n // chunk_size)
    pad = n_chunks * chunk_size - n
    if pad:
        x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, pad)], constant_values=-jnp.inf)
    x = x.reshape(x.shape[:-1] + (n_chunks, chunk_size))
    return jnp.moveaxis(x, -2, 0)


def _scan_state(x, chunk_size):
    acc = _acc_dtype(x.dtype)
    chunks = _chunked_rows(x, chunk_size)

    def step(state, chunk):
        return online_update(state, chunk), None

    state, _ = lax.scan(step, online_identity(x.shape[:-1], acc), chunks)
    return state


def _streaming_logsumexp(x, chunk_size):
    with wide_context():
        return online_logsumexp(_scan_state(x, chunk_size), x.dtype)


def _streaming_softmax(x, chunk_size):
    with wide_context():
        state = _scan_state(x, chunk_size)
        return online_softmax(state, x)


_streaming_logsumexp_jit = jax.jit(_streaming_logsumexp, static_argnums=1)
_streaming_softmax_jit = jax.jit(_streaming_softmax, static_argnums=1)


def streaming_logsumexp(x, axis: int = -1, chunk_size: int = 4096) -> jax.Array:
    """Log-sum-exp over ``axis``, reading the row in chunks of ``chunk_size`` with ``lax.scan``.

    Equal to :func:`expnorm.logsumexp` within the module's accuracy statement. Not
    differentiable through the NaN/inf guards in a useful way: use :func:`expnorm.logsumexp`
    for gradients.
    """
    x = as_float_array(x)
    x = jnp.moveaxis(x, axis, -1)
    with wide_context():
        return _streaming_logsumexp_jit(x, int(chunk_size))


def streaming_softmax(x, axis: int = -1, chunk_size: int = 4096) -> jax.Array:
    """Softmax over ``axis`` in two passes: a chunked online pass for ``(m, t)``, then
    ``exp(x - m) / (1 + t)``. Equal to :func:`expnorm.softmax` within 1 ulp (float32)."""
    x = as_float_array(x)
    x = jnp.moveaxis(x, axis, -1)
    with wide_context():
        p = _streaming_softmax_jit(x, int(chunk_size))
    return jnp.moveaxis(p, -1, axis)


def cumulative_logsumexp(x, axis: int = -1) -> jax.Array:
    """``y_k = log sum_{i <= k} exp(x_i)`` along ``axis`` with :func:`jax.lax.associative_scan`.

    The parallel prefix scan is correct because :func:`online_combine` is associative
    (the chapter "Softmax at scale" proves it); each entry starts as the state ``(x_i, 0)``.
    """
    x = as_float_array(x)
    with wide_context():
        return _cumulative_jit(x, int(axis))


def _cumulative(x, axis):
    with wide_context():
        xw = x.astype(_acc_dtype(x.dtype))
        leaf = OnlineLSE(xw, jnp.zeros_like(xw))
        state = lax.associative_scan(online_combine, leaf, axis=axis)
        return online_logsumexp(state, x.dtype)


_cumulative_jit = jax.jit(_cumulative, static_argnums=1)


__all__ = [
    "OnlineLSE",
    "cumulative_logsumexp",
    "logsumexp_stream",
    "online_combine",
    "online_identity",
    "online_logsumexp",
    "online_softmax",
    "online_state",
    "online_update",
    "streaming_logsumexp",
    "streaming_softmax",
]
