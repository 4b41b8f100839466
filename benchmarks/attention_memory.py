"""Peak resident memory of one attention forward pass, in its own process.

Usage: python benchmarks/attention_memory.py VARIANT N [D] [BLOCK]
VARIANT: plain (expnorm.attention, the (N, N) scores exist) | tiled (expnorm.tiled_attention).
Prints one JSON line with the peak resident memory (VmHWM) before and after the call.
"""

import json
import sys


def vmhwm_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def main():
    variant, n = sys.argv[1], int(sys.argv[2])
    d = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    block = int(sys.argv[4]) if len(sys.argv) > 4 else 512
    import jax
    import jax.numpy as jnp

    import expnorm

    kq, kk, kv = jax.random.split(jax.random.key(0), 3)
    q, k, v = (jax.random.normal(key, (n, d), jnp.float32) for key in (kq, kk, kv))
    if variant == "plain":
        f = jax.jit(expnorm.attention)
    elif variant == "tiled":
        f = jax.jit(lambda q, k, v: expnorm.tiled_attention(q, k, v, block_size=block))
    else:
        raise SystemExit(f"unknown variant {variant}")
    compiled = f.lower(q, k, v).compile()
    jax.block_until_ready((q, k, v))
    base = vmhwm_bytes()
    out = jax.block_until_ready(compiled(q, k, v))
    print(json.dumps({"variant": variant, "n": n, "d": d, "block": block,
                      "baseline_rss_bytes": base, "peak_rss_bytes": vmhwm_bytes(),
                      "out_abs_mean": float(jnp.mean(jnp.abs(out)))}))


if __name__ == "__main__":
    main()
