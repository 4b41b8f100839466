"""One linear cross-entropy forward+backward measurement, in its own process.

Usage: python benchmarks/ce_memory.py VARIANT N D V [REPS [CHUNK]]
VARIANT: naive | chunked (reduction="none", recompute) | fused (reduction="mean", Liger-style).
CHUNK: chunk_size (chunked) or row_chunk_size (fused); default: expnorm's plan for N and V.
Prints one JSON line: the peak resident memory (VmHWM), the floor (VmHWM with the runtime, the
inputs and two arrays of the gradients' shapes alive, measured in this process before the
function runs) and the times of REPS calls (default 1) after one untimed call.
Run by benchmarks/bench.py, one process per measurement and never two at once.
"""

import json
import sys
import time


def vmhwm_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def main():
    variant, n, d, v = sys.argv[1], *map(int, sys.argv[2:5])
    reps = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    import jax
    import jax.numpy as jnp

    import expnorm

    import numpy as np

    # Inputs from NumPy in float32 directly: jax.random.normal on a (V, D) array keeps
    # temporaries of its size, which raised the baseline high-water mark by about 1 GiB.
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((n, d), dtype=np.float32))
    w_np = rng.standard_normal((v, d), dtype=np.float32)
    w_np /= np.float32(np.sqrt(d))
    w = jnp.asarray(w_np)
    del w_np
    labels = jnp.asarray(rng.integers(0, v, n), jnp.int32)
    base = vmhwm_bytes()
    plan = expnorm.chunked.chunk_plan(n, v)
    chunk = int(sys.argv[6]) if len(sys.argv) > 6 else None

    if variant == "naive":
        def loss(x, w):
            return jnp.mean(expnorm.naive_linear_cross_entropy(x, w, labels))
        plan = {}
    elif variant == "chunked":
        def loss(x, w):
            return jnp.mean(expnorm.linear_cross_entropy(x, w, labels, reduction="none",
                                                         chunk_size=chunk))
        plan = {"chunk_size": chunk or plan["chunk_size"]}
    elif variant == "fused":
        def loss(x, w):
            return expnorm.linear_cross_entropy(x, w, labels, reduction="mean",
                                                row_chunk_size=chunk)
        plan = {"row_chunk_size": chunk or plan["row_chunk_size"]}
    else:
        raise SystemExit(f"unknown variant {variant}")

    f = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(x, w).compile()
    # The floor, after compiling: what any implementation must hold (the runtime, the
    # compiled function, the inputs and the gradients).
    gx, gw = jnp.ones_like(x), jnp.ones_like(w)
    jax.block_until_ready((gx, gw))
    floor = vmhwm_bytes()
    del gx, gw
    value, (gx, gw) = f(x, w)  # one untimed call: first-call costs (allocation, page faults)
    jax.block_until_ready((value, gx, gw))
    del gx, gw
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        value, (gx, gw) = f(x, w)
        jax.block_until_ready((value, gx, gw))
        times.append(time.perf_counter() - t0)
        del gx, gw
    print(json.dumps({"variant": variant, "n": n, "d": d, "v": v, "loss": float(value),
                      "peak_rss_bytes": vmhwm_bytes(), "baseline_rss_bytes": base,
                      "floor_rss_bytes": floor, "plan": plan, "times_s": times}))


if __name__ == "__main__":
    main()
