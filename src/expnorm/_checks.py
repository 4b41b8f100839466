"""Input checks shared by every public function: dtypes, axes, labels, temperature.

Errors are raised at trace time (they depend only on shapes and dtypes), so they fire the
same way eagerly and under ``jit``. Checks on *values* (labels in range, a positive
temperature) run only when the value is concrete; under ``jit`` the documented fallback applies.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

Axis = int | Sequence[int] | None


def as_float_array(x, name: str = "x") -> jax.Array:
    """Return ``x`` as a JAX floating array.

    Integer and boolean inputs are converted to the floating dtype JAX itself uses for them
    (:func:`inexact_dtype`: float32 for 8-, 16- and 32-bit integers, float64 for 64-bit integers
    with x64 enabled), as ``jax.nn.softmax`` and ``jax.scipy.special.logsumexp`` do. Complex inputs have no softmax and raise.
    """
    if isinstance(x, (list, tuple)):
        x = np.asarray(x)
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        raise TypeError(
            f"{name} has complex dtype {x.dtype}; softmax and log-sum-exp are defined for real "
            "inputs only (take the real part or the magnitude first)"
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        if jnp.issubdtype(x.dtype, jnp.integer) or x.dtype == jnp.bool_:
            return x.astype(inexact_dtype(x.dtype))
        raise TypeError(f"{name} has unsupported dtype {x.dtype}; expected a real floating dtype")
    return x


def inexact_dtype(dtype) -> np.dtype:
    """The floating dtype JAX computes in for ``dtype`` (as ``jnp.exp`` and ``jax.nn`` do).

    int8/16/32 and uint8/16/32 map to float32, int64/uint64 to float64 under x64 (float32
    without), booleans to the default float; asked of JAX itself, so the rule follows JAX's.
    """
    spec = jax.ShapeDtypeStruct((), dtype)
    return np.dtype(jax.eval_shape(jnp.exp, spec).dtype)


def canonical_axes(axis: Axis, ndim: int, name: str = "axis") -> tuple[int, ...]:
    """Normalize ``axis`` (an int, a sequence of ints, or None for all) to sorted non-negative ints."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (int, np.integer)):
        axes = (axis,)
    elif isinstance(axis, (tuple, list)):
        axes = tuple(axis)
    else:
        raise TypeError(f"{name} must be an int, a tuple of ints or None, got {axis!r}")
    out = []
    for a in axes:
        if not isinstance(a, (int, np.integer)) or isinstance(a, bool):
            raise TypeError(f"{name} must be an int, a tuple of ints or None, got {axis!r}")
        if not -ndim <= a < ndim:
            raise ValueError(f"{name} {a} is out of range for an array of rank {ndim}")
        out.append(int(a) % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{name} {axis!r} repeats an axis")
    return tuple(sorted(out))


def broadcast_mask(where, shape: tuple[int, ...]):
    """Broadcast a ``where`` mask to ``shape`` (None stays None)."""
    if where is None:
        return None
    where = jnp.asarray(where)
    if where.dtype != jnp.bool_:
        raise TypeError(f"where must be a boolean array, got dtype {where.dtype}")
    try:
        return jnp.broadcast_to(where, shape)
    except ValueError as err:
        raise ValueError(f"where of shape {where.shape} does not broadcast to {shape}") from err


def is_concrete(x) -> bool:
    """True when ``x`` holds a value now (not an abstract tracer inside jit or vmap)."""
    return not isinstance(x, jax.core.Tracer)


def check_temperature(temperature) -> None:
    """Raise if a concrete temperature is not a positive finite number."""
    if temperature is None or not is_concrete(temperature):
        return
    t = np.asarray(temperature)
    if t.ndim != 0:
        raise ValueError(f"temperature must be a scalar, got shape {t.shape}")
    if not np.isfinite(t) or t <= 0:
        raise ValueError(f"temperature must be positive and finite, got {float(t)}")
