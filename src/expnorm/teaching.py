"""Teaching variants: the textbook formulas, kept naive on purpose for the book's chapters.

:func:`naive_softmax` and :func:`linear_normalize` (chapters 1 and 2) use ``jnp.sum``. The
algorithms of chapter 5 (:func:`softmax_unshifted`, :func:`softmax_shifted`, ...) take a
``summation`` argument and by default add recursively *in the input dtype*
(:func:`recursive_sum`), because ``jnp.sum`` of a 16-bit array accumulates in float32 (``jax.numpy`` upcasts it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._checks import Axis, as_float_array, canonical_axes


def naive_softmax(x, axis: Axis = -1) -> jax.Array:
    r"""Softmax straight from the definition, *unstable on purpose*.

    .. math:: \operatorname{softmax}(x)_i = e^{x_i} / \textstyle\sum_j e^{x_j}

    No max shift: ``naive_softmax([0, 10000])`` overflows to ``inf / inf = nan`` in float32,
    which chapter 1 shows and :func:`expnorm.softmax` fixes. Use it to learn, not to train.

    The sum is ``jnp.sum``: for float16 and bfloat16 inputs ``jax.numpy`` accumulates it in float32 and
    rounds once, so this is *not* a computation in the input dtype throughout (chapter 5's
    :func:`softmax_unshifted` with ``summation="recursive"`` is).
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


# --------------------------------------------------------------------------------------------
# The textbook softmax algorithms of chapter 5, with the summation made explicit.
#
# ``jnp.sum`` of a float16 or bfloat16 array does *not* add in that dtype: unless it is given a
# ``dtype``, ``jax.numpy`` converts 16-bit inputs to float32 for the reduction (on every backend)
# and rounds the total once. The algorithms below therefore
# take a ``summation`` argument: ``"recursive"`` (the default) adds the terms left to right,
# rounding every partial sum to the dtype of the input (a ``lax.scan`` whose carry has that
# dtype), which is the recursive summation of the rounding error analyses; ``"xla"`` calls
# ``jnp.sum`` and gets what JAX and XLA do (for 16-bit inputs: float32 accumulation and
# one rounding; for float32 inputs: XLA's own, vectorized order, which is not left to right
# either). The elementwise operations (``-``, ``exp``, ``log``, ``log1p``, ``/``) are plain
# ``jnp`` calls: called eagerly, one operation at a time, each of them returns a number of the
# input dtype, so each rounds to it. Under ``jit`` XLA may fuse them and keep float32
# intermediates for 16-bit inputs (it is allowed to, see its flag
# ``xla_allow_excess_precision``), and its division by a broadcast divisor (``e / S``) is not
# always correctly rounded (seen: up to 1.5 ulp in float16 and float32); the recursive sum keeps its per-step rounding under ``jit`` too,
# because the carry of the loop is stored in the dtype.
# --------------------------------------------------------------------------------------------

_SUMMATIONS = ("recursive", "xla")


def recursive_sum(x, axis: int = -1, keepdims: bool = False) -> jax.Array:
    r"""Recursive summation *in the dtype of* ``x``: ``s = fl(...fl(fl(x_0 + x_1) + x_2)... + x_{n-1})``.

    Every partial sum is rounded to ``x.dtype`` (float16, bfloat16, float32 or float64), which is
    what the error bound :math:`|\hat s - s| \le (n - 1) u \sum_i |x_i|` (to first order) of
    recursive summation is about. A bfloat16 sum of 4096 ones is 256 (from 256 on, ``256 + 1``
    rounds back to 256), a float16 one 2048; ``jnp.sum`` returns 4096 for both, because
    ``jax.numpy`` adds 16-bit numbers in float32 (unless given a ``dtype``). Use this to *see* low-precision accumulation; to avoid it,
    accumulate in float32 (``jnp.sum(x, dtype=jnp.float32)``).
    """
    x = as_float_array(x)
    (ax,) = canonical_axes(axis, x.ndim)
    xs = jnp.moveaxis(x, ax, 0)

    def step(s, xi):
        return s + xi, None

    s, _ = jax.lax.scan(step, jnp.zeros(xs.shape[1:], x.dtype), xs)
    return jnp.expand_dims(s, ax) if keepdims else s


def _sum(e, summation: str) -> jax.Array:
    if summation == "recursive":
        return recursive_sum(e, axis=-1, keepdims=True)
    if summation == "xla":
        return jnp.sum(e, axis=-1, keepdims=True)
    raise ValueError(f"summation must be one of {_SUMMATIONS}, got {summation!r}")


def _shift(x):
    m = jnp.max(x, axis=-1, keepdims=True)  # exact
    return m, x - m


def softmax_unshifted(x, summation: str = "recursive") -> jax.Array:
    r"""Algorithm 1 of chapter 5: :math:`p_i = e^{x_i} / \sum_j e^{x_j}` (last axis, no shift)."""
    x = as_float_array(x)
    e = jnp.exp(x)
    return e / _sum(e, summation)


def lse_unshifted(x, summation: str = "recursive") -> jax.Array:
    r""":math:`\log \sum_j e^{x_j}` without a shift (last axis)."""
    x = as_float_array(x)
    return jnp.log(_sum(jnp.exp(x), summation))[..., 0]


def softmax_shifted(x, summation: str = "recursive") -> jax.Array:
    r"""Algorithm 2: :math:`p_i = e^{d_i} / S`, :math:`d_i = x_i - m`, :math:`S = \sum_j e^{d_j}`."""
    x = as_float_array(x)
    _, d = _shift(x)
    e = jnp.exp(d)
    return e / _sum(e, summation)


def lse_shifted(x, summation: str = "recursive") -> jax.Array:
    r"""Algorithm 2's log-sum-exp, :math:`m + \log S`."""
    x = as_float_array(x)
    m, d = _shift(x)
    return (m + jnp.log(_sum(jnp.exp(d), summation)))[..., 0]


def log_softmax_shifted(x, summation: str = "recursive") -> jax.Array:
    r"""Algorithm 2's log-softmax, :math:`d_i - \log S`."""
    x = as_float_array(x)
    _, d = _shift(x)
    return d - jnp.log(_sum(jnp.exp(d), summation))


def softmax_division_free(x, summation: str = "recursive") -> jax.Array:
    r"""Algorithm 3: :math:`p_i = \exp(x_i - \operatorname{LSE}(x))` with algorithm 2's LSE."""
    x = as_float_array(x)
    return jnp.exp(x - lse_shifted(x, summation)[..., None])


def _shift_and_t(x, summation):
    m, d = _shift(x)
    top = jax.nn.one_hot(jnp.argmax(x, axis=-1), x.shape[-1], dtype=bool)  # one position k
    t = _sum(jnp.where(top, jnp.zeros((), x.dtype), jnp.exp(d)), summation)
    return m, d, t


def lse_log1p(x, summation: str = "recursive") -> jax.Array:
    r"""Algorithm 4 (Blanchard, Higham & Higham): :math:`m + \operatorname{log1p}(t)`,
    :math:`t = \sum_{j \ne k} e^{d_j}` with ``k`` one position of the maximum."""
    x = as_float_array(x)
    m, _, t = _shift_and_t(x, summation)
    return (m + jnp.log1p(t))[..., 0]


def log_softmax_log1p(x, summation: str = "recursive") -> jax.Array:
    r"""Algorithm 4's log-softmax, :math:`d_i - \operatorname{log1p}(t)`."""
    x = as_float_array(x)
    _, d, t = _shift_and_t(x, summation)
    return d - jnp.log1p(t)


def log_of_softmax(x, summation: str = "recursive") -> jax.Array:
    """``log(softmax_shifted(x))``: the log of a rounded probability (underflows to ``-inf``)."""
    return jnp.log(softmax_shifted(x, summation))
