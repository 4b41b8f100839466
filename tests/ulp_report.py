"""Print the worst measured ulp errors of expnorm, JAX, SciPy and optax on the same inputs.

Run with ``make ulp-report``. The reference is :mod:`expnorm.numerics` (mpmath, 60 digits);
only outputs whose exact value is a normal number of the output dtype are counted.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_dtypes  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import scipy.special  # noqa: E402

import expnorm  # noqa: E402
from expnorm import numerics as N  # noqa: E402

DTYPES = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32,
          "float64": np.float64}


def inputs(dtype):
    """Adversarial rows (each a 1-D numpy array of ``dtype``), by family."""
    rng = np.random.default_rng(0)
    big = float(ml_dtypes.finfo(dtype).max)
    offsets = [o for o in (1e4, 3e4, 1e6, 1e10, 1e20, 3e38) if o < big / 2]
    fam = {
        "offsets": [(o + rng.standard_normal(8) * max(1.0, o * 2.0 ** -(N.precision_bits(dtype) - 4)))
                    .astype(dtype) for o in offsets],
        "dominant": [np.array([0.0] + [-d] * n, dtype) for d in (5, 10, 20, 30) for n in (1, 2, 10)],
        "tiny differences": [(1.0 + np.arange(6) * float(ml_dtypes.finfo(dtype).eps)).astype(dtype)],
        "mixed -inf": [np.array([0.5, -np.inf, -1.0, -np.inf, 2.0], dtype)],
    }
    if dtype in (np.float32, np.float64):
        fam["long rows (1e5)"] = [(rng.standard_normal(100_000) * 3).astype(dtype)]
    return fam


def worst(fn, rows, refs, dtype):
    w = 0.0
    for r, ref in zip(rows, refs):
        got = np.asarray(fn(r), dtype=np.float64).ravel()
        e, _ = N.max_ulp_error(got, ref if isinstance(ref, list) else [ref], dtype)
        w = max(w, e)
    return w


def libraries(dtype):
    j = lambda f: (lambda r: f(jnp.asarray(r)))  # noqa: E731
    libs = {
        "softmax": {"expnorm": j(expnorm.softmax), "jax.nn": j(jax.nn.softmax)},
        "log_softmax": {"expnorm": j(expnorm.log_softmax), "jax.nn": j(jax.nn.log_softmax)},
        "logsumexp": {"expnorm": j(expnorm.logsumexp),
                      "jax.scipy": j(jax.scipy.special.logsumexp)},
        "CE (label = argmax)": {
            "expnorm": j(lambda r: expnorm.softmax_cross_entropy_with_integer_labels(
                r[None], jnp.argmax(r)[None])),
            "optax": j(lambda r: optax.softmax_cross_entropy_with_integer_labels(
                r[None], jnp.argmax(r)[None])),
        },
    }
    if dtype in (np.float32, np.float64):
        libs["softmax"]["scipy"] = scipy.special.softmax
        libs["log_softmax"]["scipy"] = scipy.special.log_softmax
        libs["logsumexp"]["scipy"] = scipy.special.logsumexp
    return libs


REFS = {
    "softmax": N.ref_softmax,
    "log_softmax": N.ref_log_softmax,
    "logsumexp": N.ref_logsumexp,
    "CE (label = argmax)": lambda r: N.ref_cross_entropy_label(r, int(np.argmax(r))),
}


def main():
    print(f"{'function':22s} {'dtype':9s} {'library':10s} {'worst ulp':>12s}  (over all families)")
    with jax.enable_x64(True):
        for name in REFS:
            for dname, dtype in DTYPES.items():
                fams = inputs(dtype)
                rows = [r for rs in fams.values() for r in rs]
                refs = [REFS[name](r) for r in rows]
                for lib, fn in libraries(dtype)[name].items():
                    w = worst(fn, rows, refs, dtype)
                    print(f"{name:22s} {dname:9s} {lib:10s} {w:12.3g}")


if __name__ == "__main__":
    main()
