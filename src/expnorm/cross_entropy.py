"""Softmax cross-entropy losses, accurate even when the loss is tiny (drop-ins for optax's)."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from . import _native
from ._checks import (Axis, as_float_array, broadcast_mask, canonical_axes, check_temperature,
                      is_concrete)
from ._rows import (fast_log_softmax, fast_stats, fast_t, row_log_softmax, row_softmax,
                    row_stats)
from ._special import is_neginf, is_posinf, nan_where, posinf_where
from ._wide import WIDE, dd_sum, tangent_dtype, wide_context

SymbolicZero = jax.custom_derivatives.SymbolicZero


def _scaled(logits, temperature):
    check_temperature(temperature)
    if temperature is None:
        return logits
    return logits.astype(WIDE) / jnp.asarray(temperature, WIDE)


@partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def _ce_probs(x, y, kept, axes, out_dtype):
    """``kept``: None, or the where mask; ``y`` is already 0 at masked entries."""
    with wide_context():
        if jnp.dtype(out_dtype) != jnp.float64:
            ls = fast_log_softmax(fast_stats(x, axes, kept), axes)
        else:
            ls = row_log_softmax(row_stats(x.astype(WIDE), axes, kept))
        yw = y.astype(WIDE)
        # 0 * log(0) = 0: a class of target probability 0 costs nothing, even at logit -inf.
        term = jnp.where(yw == 0, 0.0, -yw * ls)
        inf_term = is_posinf(term)
        hi, lo = dd_sum(jnp.where(inf_term, 0.0, term), jnp.zeros_like(term), axes)
        loss = posinf_where(jnp.any(inf_term, axis=axes), hi + lo)  # dd: inf - inf
        return nan_where(jnp.any(jnp.isnan(term), axis=axes), loss).astype(out_dtype)


def _ce_probs_jvp(axes, out_dtype, primals, tangents):
    x, y, kept = primals
    tx, ty, _ = tangents
    loss = _ce_probs(x, y, kept, axes, out_dtype)
    with wide_context():
        s = row_stats(x.astype(WIDE), axes, kept)
        dt = tangent_dtype(out_dtype)
        p, ls = row_softmax(s).astype(dt), row_log_softmax(s).astype(dt)
        yt = y.astype(dt)
        # d loss = sum(y) <p, dx> - <y, dx> - <log p, dy>
        d = jnp.zeros(loss.shape, dt)
        if not isinstance(tx, SymbolicZero):
            tx = tx.astype(dt) if kept is None else jnp.where(kept, tx.astype(dt), 0.0)
            d = d + jnp.sum(yt, axis=axes) * jnp.sum(p * tx, axis=axes) - jnp.sum(yt * tx, axis=axes)
        if not isinstance(ty, SymbolicZero):
            # -log p is +inf where p = 0: the true derivative with respect to that target.
            # Masked entries take no part: their derivative is 0.
            lk = ls if kept is None else jnp.where(kept, ls, 0.0)
            d = d - jnp.sum(lk * ty.astype(dt), axis=axes)
        return loss, d.astype(out_dtype)


# Symbolic zeros: the target term is skipped when only the logits are differentiated, so
# its infinities (log 0) never meet a zero tangent (inf * 0 = nan).
_ce_probs.defjvp(_ce_probs_jvp, symbolic_zeros=True)


@partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def _ce_labels(x, labels, kept, axis, out_dtype):
    """``kept``: None, or the where mask (classes left out of the normalizer)."""
    with wide_context():
        if jnp.dtype(out_dtype) != jnp.float64 or kept is not None:
            return _ce_labels_fast(x, labels, kept, axis, out_dtype)
        ls = row_log_softmax(row_stats(x.astype(WIDE), (axis,), None))
        k = x.shape[axis]
        inside = (labels >= 0) & (labels < k)
        idx = jnp.expand_dims(jnp.where(inside, labels, 0), axis)
        loss = -jnp.squeeze(jnp.take_along_axis(ls, idx, axis=axis), axis)
        return nan_where(~inside, loss).astype(out_dtype)


def _ce_labels_fast(x, labels, kept, axis, out_dtype):
    """``(m - x_label) + log1p(t)`` in float64 without forming the log-softmax array.

    Both terms are >= 0, so nothing cancels; ``m - x_label`` is exact for float32 inputs.
    With a mask (optax's ``where``) the normalizer runs over the kept classes only, and
    float64 results use plain float64 (not double-double) arithmetic.
    """
    if _native.usable(x, (axis,), kept, out_dtype):
        m, t = _native.row_stats_f32(x)  # the same float64 computation, compiled (kernels.cc)
        m, l = m.astype(WIDE), jnp.log1p(t)
    else:
        s = fast_stats(x.astype(WIDE) if kept is not None else x, (axis,), kept)
        l = jnp.squeeze(jnp.log1p(fast_t(s, (axis,))), axis)
        m = jnp.squeeze(s.m, axis)
    k = x.shape[axis]
    inside = (labels >= 0) & (labels < k)
    idx = jnp.expand_dims(jnp.where(inside, labels, 0), axis)
    xl = jnp.squeeze(jnp.take_along_axis(x, idx, axis=axis), axis).astype(WIDE)
    loss = (jnp.where(jnp.isfinite(m), m, 0.0) - xl) + l
    m_inf = is_posinf(m)
    loss = jnp.where(m_inf & is_posinf(xl), l, loss)
    loss = posinf_where((m_inf & ~is_posinf(xl)) | is_neginf(m) | is_neginf(xl), loss)
    loss = nan_where(jnp.isnan(m) | ~inside, loss)
    return loss.astype(out_dtype)


@_ce_labels.defjvp
def _ce_labels_jvp(axis, out_dtype, primals, tangents):
    x, labels, kept = primals
    tx, _, _ = tangents
    loss = _ce_labels(x, labels, kept, axis, out_dtype)
    with wide_context():
        s = row_stats(x.astype(WIDE), (axis,), kept)
        dt = tangent_dtype(out_dtype)
        k = x.shape[axis]
        inside = (labels >= 0) & (labels < k)
        onehot = jnp.moveaxis(jax.nn.one_hot(labels, k, dtype=WIDE), -1, axis)
        p = row_softmax(s)
        # At a confident label p_k - 1 cancels (p_k rounds to 1); -(sum of the other
        # probabilities) is the same number without cancellation, so tiny gradients survive.
        others = -jnp.sum(jnp.where(onehot == 1.0, 0.0, p), axis=axis, keepdims=True)
        grad = jnp.where(onehot == 1.0, others, p)
        d = jnp.sum(grad.astype(dt) * tx.astype(dt), axis=axis)
        return loss, jnp.where(inside, d, 0.0).astype(out_dtype)


# One compiled kernel per shape and dtype, also when called eagerly (inlined under an outer jit).
_ce_probs_jit = jax.jit(_ce_probs, static_argnums=(3, 4))
_ce_labels_jit = jax.jit(_ce_labels, static_argnums=(3, 4))


def _where_mask(where, logits, axes):
    """optax's ``where``: the shape of ``logits``, or of ``logits`` without the class axes (one
    flag per example, expanded over the classes); None stays None."""
    if where is None:
        return None
    where = jnp.asarray(where)
    if where.dtype != jnp.bool_:
        raise TypeError(f"where must be a boolean array, got dtype {where.dtype}")
    if where.ndim != logits.ndim:
        where = jnp.expand_dims(where, axes)
    return broadcast_mask(where, logits.shape)


def softmax_cross_entropy(logits, labels, axis: Axis = -1, where=None, *,
                          temperature=None) -> jax.Array:
    r"""Cross-entropy between target distributions and ``softmax(logits)``.

    .. math::

        \ell(z, y) = -\sum_i y_i \log \operatorname{softmax}(z)_i

    A drop-in for :func:`optax.softmax_cross_entropy` (the same arguments, ``labels`` being the
    target distributions), accurate to within 1 ulp (float64: 4 ulp),
    including the confident case where the loss is tiny: for logits ``[20, 0]`` and target
    ``[1, 0]`` in float32, optax returns 0 and this returns ``2.06e-9``.

    Args:
      logits: real array of unnormalized scores.
      labels: the targets, an array broadcastable to ``logits``; each row is usually a
        probability vector (``sum(labels) == 1``), but any non-negative weights are accepted.
      axis: the class axis or axes.
      where: optional boolean mask, as in optax: of the shape of ``logits`` (entries to
        include: the softmax is taken over them and the sum runs over them), or of the shape
        of ``logits`` without ``axis`` (examples to include; an excluded example's loss is 0).
      temperature: optional positive scalar ``T``: the loss of ``softmax(logits / T)``.

    Returns:
      The loss per row, with the class axes removed, in the dtype of ``logits``.

    Special values:
      * a class with target 0 contributes 0, even if its logit is ``-inf`` (``0 log 0 = 0``);
      * a class with target > 0 and logit ``-inf`` gives a loss of ``+inf``;
      * a NaN logit makes the row's loss NaN.

    Gradients: with respect to the logits ``sum(y) * softmax(z) - y`` (finite everywhere, also
    at ``-inf`` logits); with respect to the targets ``-log softmax(z)``, which is ``+inf`` at a
    class of probability 0.

    Raises:
      TypeError: complex logits or targets.
      ValueError: labels that do not broadcast to the logits; a bad axis, mask or temperature.
    """
    logits = as_float_array(logits, "logits")
    targets = as_float_array(labels, "labels")
    try:
        targets = jnp.broadcast_to(targets, logits.shape)
    except ValueError as err:
        raise ValueError(
            f"labels of shape {targets.shape} do not broadcast to logits of shape {logits.shape}"
        ) from err
    axes = canonical_axes(axis, logits.ndim)
    kept = _where_mask(where, logits, axes)
    if kept is not None:
        targets = jnp.where(kept, targets, jnp.zeros((), targets.dtype))  # the sum skips them
    with wide_context():
        loss = _ce_probs_jit(_scaled(logits, temperature), targets, kept, axes,
                             jnp.dtype(logits.dtype))
    if kept is not None:
        loss = jnp.where(jnp.any(kept, axis=axes), loss, jnp.zeros((), loss.dtype))
    return loss


def softmax_cross_entropy_with_integer_labels(logits, labels, axis: Axis = -1, where=None, *,
                                              temperature=None) -> jax.Array:
    r"""Cross-entropy of ``softmax(logits)`` against integer class labels.

    .. math::

        \ell(z, k) = -\log \operatorname{softmax}(z)_k = \operatorname{LSE}(z) - z_k

    A drop-in for :func:`optax.softmax_cross_entropy_with_integer_labels`, accurate to within
    1 ulp (float64: 4 ulp) including tiny losses (optax returns exactly 0 in float32 once
    the margin passes about 17).

    Args:
      logits: real array of shape ``(..., K, ...)`` with the ``K`` classes on ``axis``.
      labels: integer array of the shape of ``logits`` without ``axis``.
      axis: the class axis, or a tuple of axes (as in optax: the classes are the entries of a
        ``logits`` slice over those axes, and a label is a flat (C-order) index into it).
      where: optional boolean mask, as in optax: of the shape of ``logits`` (classes included
        in the normalizer), or of ``logits`` without ``axis`` (examples to include); an example
        with no included class has loss 0.
      temperature: optional positive scalar ``T``: the loss of ``softmax(logits / T)``.

    Returns:
      The loss per example, of the shape of ``labels``, in the dtype of ``logits``.

    Special values:
      * a label whose logit is ``-inf`` gives ``+inf``; a NaN logit gives NaN;
      * under ``jit`` labels cannot be checked: a label outside ``[0, K)`` gives a NaN loss
        (and a zero gradient), never a silently wrong number.

    Gradient with respect to the logits: ``softmax(z) - onehot(k)``.

    Raises:
      TypeError: complex logits, non-integer labels, or an ``axis`` that is not an int or a
        tuple of ints.
      ValueError: labels whose shape is not the logits' shape without ``axis``; concrete labels
        outside ``[0, K)``; a bad axis or temperature.
    """
    logits = as_float_array(logits, "logits")
    if isinstance(axis, tuple):
        canonical_axes(axis, logits.ndim)  # validates: ints, in range, no repeats
        # in the order given, as optax: the flat label indexes the slice in that axis order
        class_axes = tuple(int(a) % logits.ndim for a in axis)
        if not class_axes:
            raise ValueError("axis must name at least one class axis")
        kept = _where_mask(where, logits, class_axes)
        # as optax: the class axes go last (in order) and are flattened into one
        batch_axes = tuple(a for a in range(logits.ndim) if a not in class_axes)
        perm = batch_axes + class_axes
        flat = logits.shape[:0] + tuple(logits.shape[a] for a in batch_axes) + (-1,)
        logits = jnp.transpose(logits, perm).reshape(flat)
        if kept is not None:
            kept = jnp.transpose(kept, perm).reshape(flat)
        return softmax_cross_entropy_with_integer_labels(
            logits, labels, axis=-1, where=kept, temperature=temperature)
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise TypeError(f"axis must be an int or a tuple of ints, got {axis!r}")
    (ax,) = canonical_axes(axis, logits.ndim)
    kept = _where_mask(where, logits, (ax,))
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels must have an integer dtype, got {labels.dtype}")
    expected = logits.shape[:ax] + logits.shape[ax + 1:]
    if labels.shape != expected:
        raise ValueError(
            f"labels have shape {labels.shape}, but logits of shape {logits.shape} with class "
            f"axis {axis} need labels of shape {expected}"
        )
    k = logits.shape[ax]
    if is_concrete(labels) and labels.size:
        concrete = np.asarray(labels)  # NumPy: also a constant closed over under jit
        lo, hi = int(concrete.min()), int(concrete.max())
        if lo < 0 or hi >= k:
            bad = lo if lo < 0 else hi
            raise ValueError(f"label {bad} is out of range for {k} classes (valid: 0 to {k - 1})")
    with wide_context():
        loss = _ce_labels_jit(_scaled(logits, temperature), labels, kept, ax,
                              jnp.dtype(logits.dtype))
    if kept is not None:
        loss = jnp.where(jnp.any(kept, axis=ax), loss, jnp.zeros((), loss.dtype))
    return loss
