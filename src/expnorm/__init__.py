"""expnorm: accurate softmax, log-softmax, log-sum-exp and cross-entropy for JAX.

The library of the book *Why Softmax?*. Every function is a drop-in for its ``jax.nn``,
``jax.scipy.special`` or optax counterpart, and is accurate to within 1 ulp in float16,
bfloat16 and float32 (4 ulp in float64), with special values defined and documented.
"""

from .alternatives import (
    entmax15,
    entmax15_loss,
    sparsemax,
    sparsemax_loss,
    spherical_softmax,
    taylor_softmax,
)
from .cross_entropy import softmax_cross_entropy, softmax_cross_entropy_with_integer_labels
from .logsumexp import logsumexp
from .softmax import log_softmax, softmax
from .teaching import linear_normalize, naive_softmax

__version__ = "0.1.0"

__all__ = [
    "entmax15",
    "entmax15_loss",
    "linear_normalize",
    "log_softmax",
    "logsumexp",
    "naive_softmax",
    "softmax",
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_integer_labels",
    "sparsemax",
    "sparsemax_loss",
    "spherical_softmax",
    "taylor_softmax",
]
