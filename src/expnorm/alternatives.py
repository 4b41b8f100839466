r"""Alternatives to softmax: sparse, spherical and Taylor maps onto the simplex, and their losses.

Every map here takes a real score vector ``z`` (along ``axis``) to a probability vector; they
differ in how they do it and in what they can return:

* :func:`sparsemax` and :func:`entmax15` can return *exact zeros* (sparse probabilities);
* :func:`spherical_softmax` and :func:`taylor_softmax` replace ``exp`` by a polynomial.

:func:`sparsemax_loss` and :func:`entmax15_loss` are the Fenchel-Young losses of the two sparse
maps (Blondel, Martins & Niculae 2020): convex in the logits, zero exactly when the target equals
the prediction, and with gradient ``prediction - target``, like softmax cross-entropy.

All functions are pure JAX: they work under ``jit``, ``vmap`` and ``grad``, in float32 and
float64 (float16 and bfloat16 inputs are computed in float32 and rounded back). ``axis`` is a
single int. Input checks (dtype, axis, shapes) depend only on shapes and dtypes, so they fire
the same way eagerly and under ``jit``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import as_float_array, canonical_axes, is_concrete

__all__ = [
    "entmax15",
    "entmax15_loss",
    "sparsemax",
    "sparsemax_loss",
    "spherical_softmax",
    "taylor_softmax",
]


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------


def _single_axis(axis, ndim: int, name: str = "axis") -> int:
    """Validate that ``axis`` is one int for an array of rank ``ndim >= 1``; return it >= 0."""
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise TypeError(f"{name} must be a single int, got {axis!r}")
    if ndim == 0:
        raise ValueError("expected an array with at least one dimension, got a scalar")
    return canonical_axes(int(axis), ndim, name)[0]


def _prepare(x, axis, name: str = "x"):
    """Return (x in its compute dtype with ``axis`` moved last, axis, output dtype)."""
    x = as_float_array(x, name)
    ax = _single_axis(axis, x.ndim)
    if x.shape[ax] == 0:
        raise ValueError(f"{name} has size 0 along axis {axis}; there is no distribution over no classes")
    out_dtype = x.dtype
    compute = jnp.promote_types(out_dtype, jnp.float32)
    return jnp.moveaxis(x.astype(compute), ax, -1), ax, out_dtype


def _finish(p, ax, out_dtype):
    return jnp.moveaxis(p, -1, ax).astype(out_dtype)


def _bad_rows(z):
    """Rows (last axis) with a NaN, a ``+inf``, or no finite entry: their output is NaN."""
    return (
        jnp.any(jnp.isnan(z), axis=-1, keepdims=True)
        | jnp.any(jnp.isposinf(z), axis=-1, keepdims=True)
        | jnp.all(jnp.isneginf(z), axis=-1, keepdims=True)
    )


def _shift(z):
    """Subtract the row maximum (treated as a constant: both sparse maps are shift invariant)."""
    m = jnp.max(z, axis=-1, keepdims=True)
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    return z - jax.lax.stop_gradient(m)


def _sort_desc(z):
    return -jnp.sort(-z, axis=-1)


# ---------------------------------------------------------------------------------------------
# Sparsemax
# ---------------------------------------------------------------------------------------------


@jax.jit
def _sparsemax_last(z):
    bad = _bad_rows(z)
    z = _shift(jnp.where(bad, 0.0, z))
    n = z.shape[-1]
    zs = _sort_desc(z)
    k = jnp.arange(1, n + 1, dtype=z.dtype)
    cs = jnp.cumsum(zs, axis=-1)
    # Support size k(z) = max{k : 1 + k z_(k) > sum_{j<=k} z_(j)}; the condition holds for a
    # prefix of the sorted scores, so counting it gives k(z). It is an integer: no gradient.
    kz = jnp.sum(jax.lax.stop_gradient(1.0 + k * zs > cs), axis=-1, keepdims=True)
    kz = jnp.maximum(kz, 1)
    top = jnp.sum(jnp.where(jnp.arange(n) < kz, zs, 0.0), axis=-1, keepdims=True)
    tau = (top - 1.0) / kz.astype(z.dtype)
    p = jnp.maximum(z - tau, 0.0)
    return jnp.where(bad, jnp.nan, p)


def sparsemax(x, axis: int = -1) -> jax.Array:
    r"""Sparsemax: the Euclidean projection of the scores onto the probability simplex.

    .. math::

        \operatorname{sparsemax}(z) = \operatorname*{argmin}_{p \in \Delta^{n-1}} \|p - z\|_2^2,
        \qquad \operatorname{sparsemax}(z)_i = [z_i - \tau(z)]_+ ,

    where :math:`\tau(z) = \big(\sum_{j \le k(z)} z_{(j)} - 1\big) / k(z)`, with
    :math:`z_{(1)} \ge \dots \ge z_{(n)}` the sorted scores and
    :math:`k(z) = \max\{k : 1 + k z_{(k)} > \sum_{j \le k} z_{(j)}\}` the size of the support
    (Martins & Astudillo 2016, Algorithm 1; :math:`O(n \log n)` by sorting).

    Unlike softmax it returns exact zeros: every score below :math:`\tau` gets probability 0,
    and scores that lead the runner-up by at least 1 give a one-hot vector. On the support
    :math:`S` the Jacobian is :math:`\operatorname{diag}(s) - s s^\top / |S|` with :math:`s`
    the indicator of :math:`S`; autodiff through the sort-based formula returns exactly that.
    Shift invariant: ``sparsemax(x + c) == sparsemax(x)``; not scale invariant.

    Args:
      x: real array (integers and booleans are converted to the default float dtype).
      axis: the single axis holding the scores (default: the last).

    Returns:
      An array of the shape and floating dtype of ``x``, nonnegative, summing to 1 along ``axis``.

    Special values:
      * a ``-inf`` score gets probability 0 (if the row has a finite score);
      * a row with a NaN, a ``+inf``, or no finite score gives NaN throughout;
      * ties at the boundary of the support (:math:`z_i = \tau`) are points where sparsemax is
        not differentiable; the gradient returned there is one of the one-sided ones.

    Raises:
      TypeError: complex input, or ``axis`` not an int.
      ValueError: a scalar input, ``axis`` out of range, or size 0 along ``axis``.

    Reference: A. F. T. Martins and R. F. Astudillo, "From Softmax to Sparsemax: A Sparse Model
    of Attention and Multi-Label Classification", ICML 2016.
    """
    z, ax, out_dtype = _prepare(x, axis)
    return _finish(_sparsemax_last(z), ax, out_dtype)


# ---------------------------------------------------------------------------------------------
# 1.5-entmax
# ---------------------------------------------------------------------------------------------


@jax.jit
def _entmax15_last(z):
    bad = _bad_rows(z)
    z = _shift(jnp.where(bad, 0.0, z)) / 2.0  # work with z/2, as in p = [(z/2 - tau)_+]^2
    n = z.shape[-1]
    zs = _sort_desc(z)
    k = jnp.arange(1, n + 1, dtype=z.dtype)
    # Candidate thresholds for each support size k (Peters, Niculae & Martins 2019, Alg. 2):
    # solve sum_{j<=k} (z_(j) - tau)^2 = 1 for the root tau below the mean of the top k.
    zs_ng = jax.lax.stop_gradient(zs)
    mean = jnp.cumsum(zs_ng, axis=-1) / k
    mean_sq = jnp.cumsum(zs_ng**2, axis=-1) / k
    delta = (1.0 - k * (mean_sq - mean**2)) / k
    tau_k = mean - jnp.sqrt(jnp.maximum(delta, 0.0))
    kz = jnp.maximum(jnp.sum(tau_k <= zs_ng, axis=-1, keepdims=True), 1)
    # Recompute tau for the chosen support, differentiably and with a two-pass variance.
    in_s = jnp.arange(n) < kz
    kf = kz.astype(z.dtype)
    zs_s = jnp.where(in_s, zs, 0.0)  # masked first: no inf - inf outside the support
    m = jnp.sum(zs_s, axis=-1, keepdims=True) / kf
    ss = jnp.sum(jnp.where(in_s, (zs_s - m) ** 2, 0.0), axis=-1, keepdims=True)
    tau = m - jnp.sqrt(jnp.maximum((1.0 - ss) / kf, 0.0))
    p = jnp.maximum(z - tau, 0.0) ** 2
    return jnp.where(bad, jnp.nan, p)


def entmax15(x, axis: int = -1) -> jax.Array:
    r"""1.5-entmax: a sparse map between softmax and sparsemax (exact, sort-based).

    .. math::

        \operatorname{entmax}_{1.5}(z)_i = \big[\,z_i/2 - \tau(z)\,\big]_+^{2},

    with :math:`\tau(z)` the unique threshold for which the entries sum to 1. This is the
    :math:`\alpha = 1.5` case of :math:`\alpha`-entmax,
    :math:`p = [(\alpha - 1) z - \tau \mathbf 1]_+^{1/(\alpha - 1)}`, the maximizer of
    :math:`\langle p, z\rangle + H^{T}_{\alpha}(p)` over the simplex with the Tsallis entropy
    :math:`H^{T}_{\alpha}(p) = \frac{1}{\alpha(\alpha-1)} \sum_j (p_j - p_j^{\alpha})`.
    ``tau`` is found exactly by sorting (Peters, Niculae & Martins 2019, Algorithm 2): for a
    support of the top :math:`k` scores, :math:`\tau` solves
    :math:`\sum_{j \le k} (z_{(j)}/2 - \tau)^2 = 1`, i.e.
    :math:`\tau_k = \mu_k - \sqrt{(1 - k\,\sigma_k^2)/k}` with :math:`\mu_k, \sigma_k^2` the mean
    and variance of the top :math:`k` halved scores; the support is the largest :math:`k` with
    :math:`\tau_k \le z_{(k)}/2`.

    Jacobian: with :math:`w = \sqrt{p}`,
    :math:`\partial p / \partial z = \operatorname{diag}(w) - w w^\top / \sum_j w_j`
    (autodiff through the formula returns it). Shift invariant; not scale invariant.

    Args:
      x: real array (integers and booleans are converted to the default float dtype).
      axis: the single axis holding the scores (default: the last).

    Returns:
      An array of the shape and floating dtype of ``x``, nonnegative, summing to 1 along ``axis``.

    Special values:
      * a ``-inf`` score gets probability 0 (if the row has a finite score);
      * a row with a NaN, a ``+inf``, or no finite score gives NaN throughout.

    Raises:
      TypeError: complex input, or ``axis`` not an int.
      ValueError: a scalar input, ``axis`` out of range, or size 0 along ``axis``.

    Reference: B. Peters, V. Niculae and A. F. T. Martins, "Sparse Sequence-to-Sequence
    Models", ACL 2019.
    """
    z, ax, out_dtype = _prepare(x, axis)
    return _finish(_entmax15_last(z), ax, out_dtype)


# ---------------------------------------------------------------------------------------------
# Polynomial maps
# ---------------------------------------------------------------------------------------------


def spherical_softmax(x, axis: int = -1, eps=0.0) -> jax.Array:
    r"""Spherical softmax: squared scores, normalized.

    .. math::

        \operatorname{sph}(z)_i = \frac{z_i^2}{\varepsilon + \sum_j z_j^2}

    (de Brébisson & Vincent 2016). With ``eps = 0`` (the default) the output sums to 1;
    a positive ``eps`` keeps an all-zero row finite (it then returns zeros) at the price of
    a total of :math:`\sum_j z_j^2 / (\varepsilon + \sum_j z_j^2) < 1`.

    Unlike softmax it is invariant to scaling (``sph(c z) == sph(z)`` for ``c != 0``, with
    ``eps = 0``) and to the *sign* of each score, but not to shifts; ``z_i = 0`` gets
    probability exactly 0.

    Args:
      x: real array (integers and booleans are converted to the default float dtype).
      axis: the single axis holding the scores (default: the last).
      eps: nonnegative scalar added to the denominator.

    Returns:
      An array of the shape and floating dtype of ``x``.

    Special values:
      * an all-zero row with ``eps = 0`` gives ``0/0 = NaN``;
      * a NaN or infinite score gives NaN in its row.

    Raises:
      TypeError: complex input, or ``axis`` not an int.
      ValueError: a scalar input, ``axis`` out of range, size 0 along ``axis``, or a concrete
        ``eps`` that is negative, non-finite or not a scalar.

    Reference: A. de Brébisson and P. Vincent, "An Exploration of Softmax Alternatives
    Belonging to the Spherical Loss Family", ICLR 2016.
    """
    if is_concrete(eps):
        e = np.asarray(eps)
        if e.ndim != 0:
            raise ValueError(f"eps must be a scalar, got shape {e.shape}")
        if not np.isfinite(e) or e < 0:
            raise ValueError(f"eps must be nonnegative and finite, got {float(e)}")
    z, ax, out_dtype = _prepare(x, axis)
    q = z * z
    p = q / (jnp.asarray(eps, z.dtype) + jnp.sum(q, axis=-1, keepdims=True))
    return _finish(p, ax, out_dtype)


def taylor_softmax(x, axis: int = -1) -> jax.Array:
    r"""Taylor softmax: the second-order Taylor polynomial of ``exp``, normalized.

    .. math::

        \operatorname{taylor}(z)_i = \frac{1 + z_i + z_i^2/2}{\sum_j (1 + z_j + z_j^2/2)}

    The numerator equals :math:`\tfrac12 \big((z_i + 1)^2 + 1\big) \ge \tfrac12`, so every
    probability is positive and the map is defined for all real scores (de Brébisson & Vincent
    2016, who call it the Taylor softmax). It is neither shift nor scale invariant, and it is
    not monotone: the weight is smallest at :math:`z_i = -1` and grows again for
    :math:`z_i < -1`, so a very negative score gets a *large* probability.

    Args:
      x: real array (integers and booleans are converted to the default float dtype).
      axis: the single axis holding the scores (default: the last).

    Returns:
      An array of the shape and floating dtype of ``x``, positive, summing to 1 along ``axis``.

    Special values:
      * a NaN or infinite score gives NaN in its row; :math:`z_i^2` overflows float32 for
        :math:`|z_i| \gtrsim 1.8 \times 10^{19}`.

    Raises:
      TypeError: complex input, or ``axis`` not an int.
      ValueError: a scalar input, ``axis`` out of range, or size 0 along ``axis``.

    Reference: A. de Brébisson and P. Vincent, "An Exploration of Softmax Alternatives
    Belonging to the Spherical Loss Family", ICLR 2016.
    """
    z, ax, out_dtype = _prepare(x, axis)
    q = 1.0 + z + 0.5 * z * z
    p = q / jnp.sum(q, axis=-1, keepdims=True)
    return _finish(p, ax, out_dtype)


# ---------------------------------------------------------------------------------------------
# Fenchel-Young losses
# ---------------------------------------------------------------------------------------------


def _prepare_pair(logits, targets, axis):
    z = as_float_array(logits, "logits")
    y = as_float_array(targets, "targets")
    if y.shape != z.shape:
        raise ValueError(
            f"targets of shape {y.shape} must have the shape of logits {z.shape} "
            "(a probability vector per row; convert integer labels with jax.nn.one_hot)"
        )
    z, ax, out_dtype = _prepare(z, axis, "logits")
    y = jnp.moveaxis(y.astype(z.dtype), ax, -1)
    return z, y, out_dtype


def _inner_with_safe_zeros(p, y, z):
    """``<p - y, z>`` where entries with ``p == y == 0`` contribute 0 even if ``z = -inf``."""
    drop = (p == 0) & (y == 0)
    zz = jnp.where(drop, 0.0, z)
    return jnp.sum(jnp.where(drop, 0.0, (p - y) * zz), axis=-1)


@jax.jit
def _sparsemax_loss_last(z, y):
    p = _sparsemax_last(z)
    return _inner_with_safe_zeros(p, y, z) + 0.5 * (jnp.sum(y * y, axis=-1) - jnp.sum(p * p, axis=-1))


@jax.jit
def _entmax15_loss_last(z, y):
    p = _entmax15_last(z)
    omega = jnp.sum(jnp.power(y, 1.5), axis=-1) - jnp.sum(jnp.power(p, 1.5), axis=-1)
    return _inner_with_safe_zeros(p, y, z) + (4.0 / 3.0) * omega


def sparsemax_loss(logits, targets, axis: int = -1) -> jax.Array:
    r"""Sparsemax loss: the Fenchel-Young loss of sparsemax.

    .. math::

        L(z; y) = \Omega^*(z) + \Omega(y) - \langle z, y\rangle
        = \langle p - y, z\rangle - \tfrac12 \|p\|^2 + \tfrac12 \|y\|^2,
        \qquad p = \operatorname{sparsemax}(z),

    with :math:`\Omega(p) = \tfrac12\|p\|^2` on the simplex and
    :math:`\Omega^*(z) = \max_{p \in \Delta} \langle p, z\rangle - \Omega(p)`. For a one-hot
    target :math:`e_k` this is Martins & Astudillo's
    :math:`-z_k + \tfrac12 \sum_{j \in S} (z_j^2 - \tau^2) + \tfrac12`. The loss is convex in
    ``z``, nonnegative, zero iff ``y == sparsemax(z)``, and its gradient is
    :math:`\nabla_z L = \operatorname{sparsemax}(z) - y` (Danskin's theorem; autodiff through
    the formula returns it, because the Jacobian of sparsemax annihilates the constant
    vector on the support).

    Args:
      logits: real array of scores.
      targets: array of the same shape; each row a probability vector (``y`` outside the
        simplex has :math:`\Omega(y) = +\infty`; that is not checked, the formula is applied).
      axis: the single class axis (default: the last).

    Returns:
      The loss per row: the shape of ``logits`` without ``axis``, in its floating dtype.
      Rounding can make a loss that is mathematically 0 a few ulp negative.

    Special values:
      * a ``-inf`` logit with target 0 contributes nothing; with a positive target the loss
        is ``+inf``; NaN anywhere in a row gives NaN.

    Raises:
      TypeError: complex input, or ``axis`` not an int.
      ValueError: shapes differ, a scalar input, ``axis`` out of range, or size 0 along it.

    References: Martins & Astudillo (ICML 2016); M. Blondel, A. F. T. Martins and V. Niculae,
    "Learning with Fenchel-Young Losses", JMLR 21 (2020).
    """
    z, y, out_dtype = _prepare_pair(logits, targets, axis)
    return _sparsemax_loss_last(z, y).astype(out_dtype)


def entmax15_loss(logits, targets, axis: int = -1) -> jax.Array:
    r"""1.5-entmax loss: the Fenchel-Young loss of :func:`entmax15`.

    .. math::

        L(z; y) = \langle p - y, z\rangle + \Omega(y) - \Omega(p)
        = \langle p - y, z\rangle + \tfrac43 \Big(\sum_j y_j^{3/2} - \sum_j p_j^{3/2}\Big),
        \qquad p = \operatorname{entmax}_{1.5}(z),

    with :math:`\Omega = -H^T_{1.5}`, the negative Tsallis 1.5-entropy,
    :math:`\Omega(p) = \tfrac{4}{3} \big(\sum_j p_j^{3/2} - 1\big)` on the simplex
    (Peters, Niculae & Martins 2019; Blondel, Martins & Niculae 2020). Convex in ``z``,
    nonnegative, zero iff ``y == entmax15(z)``, with gradient
    :math:`\nabla_z L = \operatorname{entmax}_{1.5}(z) - y`.

    Args:
      logits: real array of scores.
      targets: array of the same shape; each row a probability vector (not checked).
      axis: the single class axis (default: the last).

    Returns:
      The loss per row: the shape of ``logits`` without ``axis``, in its floating dtype.
      Rounding can make a loss that is mathematically 0 a few ulp negative.

    Special values:
      * a ``-inf`` logit with target 0 contributes nothing; with a positive target the loss
        is ``+inf``; NaN anywhere in a row gives NaN.

    Raises:
      TypeError: complex input, or ``axis`` not an int.
      ValueError: shapes differ, a scalar input, ``axis`` out of range, or size 0 along it.

    References: Peters, Niculae & Martins (ACL 2019); Blondel, Martins & Niculae (JMLR 2020).
    """
    z, y, out_dtype = _prepare_pair(logits, targets, axis)
    return _entmax15_loss_last(z, y).astype(out_dtype)
