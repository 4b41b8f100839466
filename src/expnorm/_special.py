"""Special values made without special constants, so that ``jax.debug_nans`` and
``jax.debug_infs`` stay quiet on inputs whose results are finite.

Under ``jax.debug_nans`` every primitive's output is checked (all of them under
``jax.disable_jit``, and again op by op when a jitted function returns a NaN). A NaN constant
such as the one in ``jnp.where(row_is_nan, jnp.nan, x)`` is itself the output of a primitive
(its conversion to an array), so it trips the flag even when no row is NaN. These helpers make
the special value only at the entries that receive it: ``0 / 0`` and ``1 / 0`` of a mask.
"""

from __future__ import annotations

import jax.numpy as jnp


def _zero_where(cond, like):
    return jnp.where(cond, jnp.zeros((), like.dtype), jnp.ones((), like.dtype))


def nan_where(cond, x):
    """``x`` with NaN where ``cond``; creates a NaN only if ``cond`` holds somewhere."""
    z = _zero_where(cond, x)
    return jnp.where(cond, z / z, x)


def posinf_where(cond, x):
    """``x`` with ``+inf`` where ``cond``; creates an infinity only if ``cond`` holds somewhere."""
    z = _zero_where(cond, x)
    return jnp.where(cond, 1 / z, x)


def neginf_where(cond, x):
    """``x`` with ``-inf`` where ``cond``; creates an infinity only if ``cond`` holds somewhere."""
    z = _zero_where(cond, x)
    return jnp.where(cond, -1 / z, x)


# jnp.isposinf / jnp.isneginf compare with an infinite constant, which debug_infs reports.
def is_posinf(x):
    """``x == +inf``, without an infinite constant."""
    return ~jnp.isfinite(x) & ~jnp.isnan(x) & (x > 0)


def is_neginf(x):
    """``x == -inf``, without an infinite constant."""
    return ~jnp.isfinite(x) & ~jnp.isnan(x) & (x < 0)
