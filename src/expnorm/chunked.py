"""Linear cross-entropy without the logits matrix: ``CE(x @ w.T, labels)`` chunk by chunk.

A language model's last layer maps ``N`` hidden states ``x`` (N, D) to ``V`` vocabulary
logits ``x @ w.T``; with ``N = 8192`` tokens and ``V = 131072`` words that matrix alone is
4 GiB in float32, and a naive forward and backward pass keeps several arrays of that size.
:func:`linear_cross_entropy` never forms it:

* forward: the vocabulary is read in chunks of ``chunk_size`` rows of ``w``; each chunk's
  logits ``(N, chunk)`` update the online normalizer of :mod:`expnorm.online` and pick out the
  label logit, then are dropped. The loss is ``LSE(z) - z_label``, accumulated in float64.
* backward (a :func:`jax.custom_vjp`): the residuals are ``x``, ``w``, the labels and the
  ``N`` log-sum-exps. Each chunk's logits are recomputed, ``p = exp(z - LSE)`` gives the
  softmax chunk directly (no second normalization pass), and
  ``dz = g * (p - onehot)`` feeds ``dx += dz @ w_c`` and ``dw_c = dz.T @ x``.

The price is one more matrix product (the recomputation): four ``N x D x V`` products
instead of three. This is the design of Cut Cross-Entropy (Wijmans et al. 2024), here in
plain JAX rather than a fused kernel.

With ``reduction="sum"`` or ``"mean"`` the upstream gradient is a single scalar, known up to a
factor in the forward pass; :func:`linear_cross_entropy` then uses the fused scheme of Liger
Kernel's FusedLinearCrossEntropy (Hsu et al. 2024): the rows are processed in chunks of
``row_chunk_size`` with the whole vocabulary, the gradients are computed *during the forward
pass* and stored (they have the size of ``x`` and ``w``), and the backward pass only scales
them. Three matrix products, as in the naive version, and a ``(row_chunk, V)`` working set.

References:
  E. Wijmans, B. Huval, A. Hertzberg, V. Koltun, P. Kraehenbuehl (2024), Cut your losses in
  large-vocabulary language models, arXiv:2411.09009.
  P.-L. Hsu et al. (2024), Liger Kernel: Efficient Triton kernels for LLM training,
  arXiv:2410.10989.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from ._wide import WIDE, wide_context
from .online import OnlineLSE, online_combine, online_identity, online_logsumexp, online_state


def _dot_t(a, b):
    """``a @ b.T`` in the inputs' dtype (float32 accumulation at least)."""
    acc = jnp.promote_types(a.dtype, jnp.float32)
    return lax.dot_general(a, b, (((1,), (1,)), ((), ())), preferred_element_type=acc)


def _chunks(v, chunk):
    """Static plan: (number of full chunks, size of the remainder)."""
    chunk = min(chunk, v)
    return chunk, v // chunk, v % chunk


# The chunk sizes chosen from the problem (``chunk_plan``), measured on the 2-core benchmark
# machine (benchmarks/bench.py, part "ce"; AMD EPYC, 32 MiB of last-level cache).
# * chunked (``reduction="none"``): a (N, chunk) float32 block of logits of about 16 MiB.
#   Half the last-level cache: a block written by one matrix product can still be in the
#   cache for the next step. Trials, one process each (a few % of noise), forward + backward:
#   N = 1024: 4, 16, 32 MiB took 1.05, 0.95, 1.03 s (one 128 MiB chunk, the whole vocabulary,
#   0.91 s); N = 2048: 8, 16, 32 MiB took 3.88, 3.74, 3.85-3.97 s; N = 4096 (D = 1024): 16, 32,
#   64 MiB took 15.1, 14.6, 15.7 s. A compromise, not the best size at every N.
# * fused (``"sum"``/``"mean"``): every row chunk reads and writes the whole gradient of
#   ``w``, so larger row chunks are faster (fewer such passes) and smaller ones save memory. A
#   (row_chunk, V) block gets 1/8 of the logits matrix, but at least 64 MiB (below that
#   memory is not the problem) and at most 256 MiB.
_CHUNKED_BLOCK_BYTES = 16 * 2**20
_FUSED_BLOCK = (1 / 8, 64 * 2**20, 256 * 2**20)
# Below these, the matrix products lose efficiency: blocks of fewer than 256 vocabulary
# columns, and fused row chunks of fewer than 64 rows; above 512 rows a fused row chunk
# gained nothing more in time.
_MIN_VOCAB_CHUNK = 256
_MIN_ROW_CHUNK = 64
_MAX_ROW_CHUNK = 512


def _fit(total, ideal, floor):
    """A chunk length near ``ideal`` (at least ``floor``) that splits ``total`` evenly:
    equal chunks, rounded up to a multiple of 8, so the remainder is small or empty."""
    ideal = max(int(ideal), floor)
    if ideal >= total:
        return total
    pieces = -(-total // ideal)
    size = -(-total // pieces)
    return min(total, -(-size // 8) * 8)


def chunk_plan(n: int, v: int) -> dict:
    """The chunk sizes :func:`linear_cross_entropy` uses for ``N = n`` examples and a
    vocabulary of ``V = v`` when ``chunk_size`` / ``row_chunk_size`` are not given.

    * ``chunk_size`` (``reduction="none"``): an ``(n, chunk_size)`` float32 block of about
      16 MiB, and at least 256 vocabulary rows;
    * ``row_chunk_size`` (``"sum"``/``"mean"``): a ``(row_chunk_size, v)`` float32 block of 1/8
      of the logits matrix, but at least 64 MiB and at most 256 MiB; between 64 and 512 rows.

    Each is at most the whole problem, and evened out so that the chunks split the problem
    into nearly equal parts (multiples of 8). The constants were measured on one CPU (see the
    comments in this module); on another machine, pass the sizes explicitly.
    Returns ``{"chunk_size": ..., "row_chunk_size": ...}``.
    """
    n, v = int(n), int(v)
    if n < 1 or v < 1:
        raise ValueError(f"need n >= 1 and v >= 1, got n={n}, v={v}")
    fraction, low, high = _FUSED_BLOCK
    fused_block = min(max(4.0 * n * v * fraction, low), high)
    rows = min(fused_block / (4 * v), _MAX_ROW_CHUNK)
    return {"chunk_size": _fit(v, _CHUNKED_BLOCK_BYTES / (4 * n), _MIN_VOCAB_CHUNK),
            "row_chunk_size": _fit(n, rows, _MIN_ROW_CHUNK)}


def naive_linear_cross_entropy(x, w, labels) -> jax.Array:
    """The reference: form the ``(N, V)`` logits, then the integer-label cross-entropy
    (``logsumexp(z) - z_label`` with :func:`jax.nn.logsumexp`-style code, all in ``x.dtype``)."""
    z = _dot_t(x, w)
    lse = jax.nn.logsumexp(z, axis=-1)
    zl = jnp.take_along_axis(z, labels[:, None], axis=-1)[:, 0]
    return (lse - zl).astype(x.dtype)



def _two_sum(a, b):
    """``a + b = s + err`` exactly (Knuth's TwoSum, any order of magnitudes)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


# Columns are summed in float32 over this many slices, each column pair with its rounding
# error kept (TwoSum), and only the (rows, chunk / 16) partial sums are converted to float64.
_SLICES = 16


def _chunk_state(z):
    """The online state of a chunk of logits, reduced over axis 1, in float64.

    For float32 logits the work over the ``(N, chunk)`` block stays in float32, where XLA's CPU
    loops vectorize: converting every term to float64 and summing there cost about twice as
    much as the whole float32 log-sum-exp (1.1 s against 0.5 s for a (2048, 65536) block on
    the 2-core benchmark machine), more than a third of the three matrix products. Instead:

    * ``z - m`` is split exactly into ``d + lo`` (TwoSum) and each term is
      ``exp(d) + exp(d) * lo`` (first order in ``lo``): the float32 ``exp``'s own error plus
      half an ulp, not the error of rounding ``z - m``;
    * the block is cut into 16 column slices summed elementwise in float32 with each
      addition's rounding error carried alongside (TwoSum, a compensated sum: the partial
      sums are as accurate as if added in twice the precision), and the partial sums and
      their errors are added in float64.

    Same special values as :func:`expnorm.online.online_state` (NaN rows, ``+inf`` and
    ``-inf`` maxima, ties), which is used for every other dtype.
    """
    if z.dtype != jnp.float32:
        return online_state(z, axis=1)
    acc = jnp.dtype(WIDE)
    rows, cols = z.shape
    m = jnp.max(z, axis=1)  # NaN if the row holds a NaN: the whole state is then NaN
    mk = m[:, None]
    finite = jnp.isfinite(mk)
    shift = jnp.where(finite, -mk, 0.0)

    def terms(zs):
        d, lo = _two_sum(zs, shift)
        ok = jnp.isfinite(d)
        e = jnp.exp(jnp.where(finite, d, 0.0))
        e = e + e * jnp.where(ok, lo, 0.0)  # z = -inf: lo is NaN
        at_max = zs == mk
        e = jnp.where(mk == jnp.inf, 0.0, e)  # +inf row: only the +inf entries count (ties)
        return jnp.where(at_max, 0.0, e), at_max.astype(jnp.float32)

    width = cols // _SLICES
    total = jnp.zeros((rows,), acc)
    count = jnp.zeros((rows,), jnp.float32)
    if width:
        s = err = n_max = None
        for i in range(_SLICES):
            e, at = terms(lax.slice_in_dim(z, i * width, (i + 1) * width, axis=1))
            if s is None:
                s, err, n_max = e, jnp.zeros_like(e), at
            else:
                s, r = _two_sum(s, e)
                err, n_max = err + r, n_max + at
        total = jnp.sum(s.astype(acc) + err.astype(acc), axis=1)
        count = jnp.sum(n_max, axis=1)
    if cols > _SLICES * width:  # the last few columns
        e, at = terms(z[:, _SLICES * width:])
        total = total + jnp.sum(e.astype(acc), axis=1)
        count = count + jnp.sum(at, axis=1)
    ties = jnp.maximum(count.astype(acc) - 1.0, 0.0)
    t = jnp.where(m == -jnp.inf, 0.0, total + ties)
    return OnlineLSE(m.astype(acc), jnp.where(jnp.isnan(m), jnp.nan, t))


# ------------------------------------------------------------------ per-example: recompute


def _loss(state: OnlineLSE, zl):
    """``(m - z_label) + log1p(t)``: ``m - z_label`` is exact (float32 logits in float64), so
    a tiny loss (a confident, correct prediction) keeps full relative accuracy."""
    m, t = state
    fin = jnp.isfinite(m)
    loss = (jnp.where(fin, m, 0.0) - zl) + jnp.log1p(t)
    loss = jnp.where(fin, loss, online_logsumexp(state) - zl)
    return jnp.where(zl == -jnp.inf, jnp.inf, loss)


def _forward_stats(x, w, labels, chunk):
    """Loop over vocabulary chunks: the online state and the label logit, in float64."""
    n, v = x.shape[0], w.shape[0]
    chunk, n_full, rem = _chunks(v, chunk)
    acc = jnp.dtype(WIDE)

    def visit(carry, start, w_c):
        state, zl = carry
        z = _dot_t(x, w_c)
        size = w_c.shape[0]
        inside = (labels >= start) & (labels < start + size)
        idx = jnp.clip(labels - start, 0, size - 1)
        picked = jnp.take_along_axis(z, idx[:, None], axis=1)[:, 0].astype(acc)
        zl = jnp.where(inside, picked, zl)
        return online_combine(state, _chunk_state(z)), zl

    def body(i, carry):
        start = i * chunk
        return visit(carry, start, lax.dynamic_slice_in_dim(w, start, chunk, axis=0))

    carry = (online_identity((n,), acc), jnp.zeros((n,), acc))
    carry = lax.fori_loop(0, n_full, body, carry)
    if rem:
        carry = visit(carry, n_full * chunk, w[n_full * chunk:])
    return carry


def _lce_fwd_impl(x, w, labels, chunk):
    with wide_context():
        state, zl = _forward_stats(x, w, labels, chunk)
        lse = online_logsumexp(state)
        inside = (labels >= 0) & (labels < w.shape[0])
        loss = jnp.where(inside, _loss(state, zl), jnp.nan)
        return loss.astype(x.dtype), lse


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _lce(x, w, labels, chunk):
    return _lce_fwd_impl(x, w, labels, chunk)[0]


def _lce_fwd(x, w, labels, chunk):
    loss, lse = _lce_fwd_impl(x, w, labels, chunk)
    return loss, (x, w, labels, lse.astype(jnp.float32))


def _lce_bwd(chunk, res, g):
    x, w, labels, lse = res
    v = w.shape[0]
    chunk, n_full, rem = _chunks(v, chunk)
    dt = jnp.promote_types(x.dtype, jnp.float32)
    inside = (labels >= 0) & (labels < v)
    g = jnp.where(inside & jnp.isfinite(lse), g.astype(dt), 0.0)

    def grads(start, w_c):
        z = _dot_t(x, w_c)
        size = w_c.shape[0]
        p = jnp.exp(z - lse[:, None])
        onehot = (labels[:, None] - start) == jnp.arange(size)[None, :]
        dz = g[:, None] * (p - onehot.astype(dt))
        dx = jnp.dot(dz.astype(w.dtype), w_c, preferred_element_type=dt)
        dw = lax.dot_general(dz.astype(x.dtype), x, (((0,), (0,)), ((), ())),
                             preferred_element_type=dt)
        return dx, dw

    def body(i, carry):
        dx, dw = carry
        start = i * chunk
        dx_c, dw_c = grads(start, lax.dynamic_slice_in_dim(w, start, chunk, axis=0))
        return dx + dx_c, lax.dynamic_update_slice_in_dim(dw, dw_c.astype(w.dtype), start, axis=0)

    carry = (jnp.zeros(x.shape, dt), jnp.zeros(w.shape, w.dtype))
    dx, dw = lax.fori_loop(0, n_full, body, carry)
    if rem:
        dx_c, dw_c = grads(n_full * chunk, w[n_full * chunk:])
        dx = dx + dx_c
        dw = lax.dynamic_update_slice_in_dim(dw, dw_c.astype(w.dtype), n_full * chunk, axis=0)
    return dx.astype(x.dtype), dw, None


_lce.defvjp(_lce_fwd, _lce_bwd)


# ------------------------------------------------------------ scalar losses: fused (Liger)


def _fused_rows(x, w, labels, row_chunk, want_grads):
    """Sum of the losses, and (if ``want_grads``) d(sum)/dx and d(sum)/dw, by row chunks."""
    n, v = x.shape[0], w.shape[0]
    row_chunk, n_full, rem = _chunks(n, row_chunk)
    dt = jnp.promote_types(x.dtype, jnp.float32)
    acc = jnp.dtype(WIDE)

    def rows(x_r, l_r):
        z = _dot_t(x_r, w)
        state = _chunk_state(z)
        lse = online_logsumexp(state)
        inside = (l_r >= 0) & (l_r < v)
        zl = jnp.take_along_axis(z, jnp.clip(l_r, 0, v - 1)[:, None], axis=1)[:, 0].astype(acc)
        loss = jnp.sum(jnp.where(inside, _loss(state, zl), jnp.nan))
        if not want_grads:
            return loss, None, None
        p = jnp.exp(z - lse.astype(dt)[:, None])
        onehot = l_r[:, None] == jnp.arange(v)[None, :]
        dz = jnp.where(inside[:, None], p - onehot.astype(dt), 0.0)
        dx_r = jnp.dot(dz.astype(w.dtype), w, preferred_element_type=dt)
        dw = lax.dot_general(dz.astype(x.dtype), x_r, (((0,), (0,)), ((), ())),
                             preferred_element_type=dt)
        return loss, dx_r, dw

    def body(i, carry):
        total, dx, dw = carry
        start = i * row_chunk
        x_r = lax.dynamic_slice_in_dim(x, start, row_chunk, axis=0)
        l_r = lax.dynamic_slice_in_dim(labels, start, row_chunk, axis=0)
        loss, dx_r, dw_r = rows(x_r, l_r)
        if want_grads:
            dx = lax.dynamic_update_slice_in_dim(dx, dx_r.astype(dx.dtype), start, axis=0)
            dw = dw + dw_r
        return total + loss, dx, dw

    shape_dx, shape_dw = (x.shape, w.shape) if want_grads else ((0,), (0,))
    carry = (jnp.zeros((), acc), jnp.zeros(shape_dx, dt), jnp.zeros(shape_dw, dt))
    total, dx, dw = lax.fori_loop(0, n_full, body, carry)
    if rem:
        start = n_full * row_chunk
        loss, dx_r, dw_r = rows(x[start:], labels[start:])
        total = total + loss
        if want_grads:
            dx = lax.dynamic_update_slice_in_dim(dx, dx_r.astype(dx.dtype), start, axis=0)
            dw = dw + dw_r
    return total, dx, dw


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _lce_sum(x, w, labels, row_chunk):
    with wide_context():
        return _fused_rows(x, w, labels, row_chunk, False)[0].astype(x.dtype)


def _lce_sum_fwd(x, w, labels, row_chunk):
    with wide_context():
        total, dx, dw = _fused_rows(x, w, labels, row_chunk, True)
        # dx, dw are float32 accumulations; the empty arrays carry the dtypes to return
        return total.astype(x.dtype), (dx, dw, jnp.zeros((0,), x.dtype), jnp.zeros((0,), w.dtype))


def _lce_sum_bwd(row_chunk, res, g):
    dx, dw, x_like, w_like = res
    return (g * dx).astype(x_like.dtype), (g * dw).astype(w_like.dtype), None


_lce_sum.defvjp(_lce_sum_fwd, _lce_sum_bwd)


def linear_cross_entropy(x, w, labels, *, reduction: str = "none",
                         chunk_size: int | None = None,
                         row_chunk_size: int | None = None) -> jax.Array:
    r"""Cross-entropy of ``softmax(x @ w.T)`` against integer labels, without the logits matrix.

    .. math::

        \ell_n = \operatorname{LSE}_v\big(x_n \cdot w_v\big) - x_n \cdot w_{y_n}

    Args:
      x: hidden states ``(N, D)``.
      w: the output embedding ``(V, D)`` (logits are ``x @ w.T``).
      labels: integer array ``(N,)`` with values in ``[0, V)``.
      reduction: ``"none"`` (losses per example, shape ``(N,)``), ``"sum"`` or ``"mean"``.
      chunk_size: vocabulary rows per chunk for ``reduction="none"``: the working set is a few
        ``(N, chunk_size)`` arrays. Default: chosen from ``N`` by :func:`chunk_plan`
        (an array of about 16 MiB).
      row_chunk_size: examples per chunk for ``"sum"``/``"mean"``: the working set is a few
        ``(row_chunk_size, V)`` arrays. Default: from :func:`chunk_plan` likewise.

    Returns:
      The losses in ``x.dtype``; an out-of-range label gives NaN (and a zero gradient with
      ``reduction="none"``).

    Gradients (``x`` and ``w``): ``"none"`` recomputes each vocabulary chunk in the backward
    pass (Cut Cross-Entropy; four matrix products in all); ``"sum"``/``"mean"`` compute the
    gradients in the forward pass (Liger Kernel; three products), so a forward pass under
    :func:`jax.grad` costs about as much as forward plus backward.

    Accuracy: the logits are rounded to float32 as in any matmul; from them the loss is
    computed in float64 and rounded once (the same loss as
    :func:`expnorm.softmax_cross_entropy_with_integer_labels` of the same logits, to about
    1 ulp, when the matrix products round alike).
    """
    x = jnp.asarray(x)
    w = jnp.asarray(w)
    labels = jnp.asarray(labels)
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"need x (N, D) and w (V, D); got {x.shape} and {w.shape}")
    if labels.shape != (x.shape[0],) or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"labels must be integers of shape ({x.shape[0]},), got "
                         f"{labels.dtype} {labels.shape}")
    for name, size in (("chunk_size", chunk_size), ("row_chunk_size", row_chunk_size)):
        if size is not None and (isinstance(size, bool) or int(size) != size or size < 1):
            raise ValueError(f"{name} must be a positive integer or None, got {size!r}")
    plan = chunk_plan(x.shape[0], w.shape[0]) if x.shape[0] and w.shape[0] else {
        "chunk_size": 1, "row_chunk_size": 1}
    chunk_size = plan["chunk_size"] if chunk_size is None else int(chunk_size)
    row_chunk_size = plan["row_chunk_size"] if row_chunk_size is None else int(row_chunk_size)
    if reduction == "none":
        return _lce_jit(x, w, labels, int(chunk_size))
    if reduction in ("sum", "mean"):
        total = _lce_sum_jit(x, w, labels, int(row_chunk_size))
        return total / x.shape[0] if reduction == "mean" else total
    raise ValueError(f"reduction must be 'none', 'sum' or 'mean', got {reduction!r}")


_lce_jit = jax.jit(_lce, static_argnums=3)
_lce_sum_jit = jax.jit(_lce_sum, static_argnums=3)

__all__ = ["chunk_plan", "linear_cross_entropy", "naive_linear_cross_entropy"]
