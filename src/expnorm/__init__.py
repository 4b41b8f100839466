"""expnorm: accurate softmax, log-softmax, log-sum-exp and cross-entropy for JAX.

The library of the book *Why Softmax?*. Every function is a drop-in for its ``jax.nn``,
``jax.scipy.special`` or optax counterpart, and is accurate to within 1 ulp in float16,
bfloat16 and float32 (4 ulp in float64), with special values defined and documented.
"""

from . import calibration  # calibration metrics (chapter 8): expnorm.calibration.*
from . import book_data  # the measured data the chapters read: expnorm.book_data.load_benchmark
from .alternatives import (
    entmax15,
    entmax15_loss,
    sparsemax,
    sparsemax_loss,
    spherical_softmax,
    taylor_softmax,
)
from .attention import attention, tiled_attention
from .chunked import linear_cross_entropy, naive_linear_cross_entropy
from .cross_entropy import softmax_cross_entropy, softmax_cross_entropy_with_integer_labels
from .logsumexp import logsumexp
from .online import (
    OnlineLSE,
    cumulative_logsumexp,
    logsumexp_stream,
    online_combine,
    online_identity,
    online_logsumexp,
    online_softmax,
    online_state,
    online_update,
    streaming_logsumexp,
    streaming_softmax,
)
from .parallel import vocab_parallel_cross_entropy, vocab_parallel_softmax
from .softmax import log_softmax, softmax
from .teaching import linear_normalize, naive_softmax

__version__ = "0.3.0"

__all__ = [
    "OnlineLSE",
    "attention",
    "cumulative_logsumexp",
    "linear_cross_entropy",
    "logsumexp_stream",
    "naive_linear_cross_entropy",
    "online_combine",
    "online_identity",
    "online_logsumexp",
    "online_softmax",
    "online_state",
    "online_update",
    "streaming_logsumexp",
    "streaming_softmax",
    "tiled_attention",
    "vocab_parallel_cross_entropy",
    "vocab_parallel_softmax",
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
