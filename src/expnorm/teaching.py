"""Teaching variants: the textbook formulas, kept naive on purpose for the book's chapters."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._checks import Axis, as_float_array, canonical_axes


def naive_softmax(x, axis: Axis = -1) -> jax.Array:
    r"""Softmax straight from the definition, *unstable on purpose*.

    .. math:: \operatorname{softmax}(x)_i = e^{x_i} / \textstyle\sum_j e^{x_j}

    No max shift: ``naive_softmax([0, 10000])`` overflows to ``inf / inf = nan`` in float32,
    which chapter 1 shows and :func:`expnorm.softmax` fixes. Use it to learn, not to train.
    """
    x = as_float_array(x)
    axes = canonical_axes(axis, x.ndim)
    e = jnp.exp(x)
    return e / jnp.sum(e, axis=axes, keepdims=True)


def linear_normalize(x, axis: Axis = -1) -> jax.Array:
    r"""Linear normalization ``x_i / sum_j x_j``: the alternative that softmax is compared with.

    .. math:: \operatorname{lin}(x)_i = x_i / \textstyle\sum_j x_j

    Only a probability vector when every ``x_i >= 0`` and the sum is positive: negative scores
    give negative "probabilities", and a zero sum gives ``inf`` or ``nan``. That is the point
    of chapter 2, so nothing here guards against it.
    """
    x = as_float_array(x)
    axes = canonical_axes(axis, x.ndim)
    return x / jnp.sum(x, axis=axes, keepdims=True)
