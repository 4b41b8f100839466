"""Benchmarks of expnorm against jax / optax on this machine; writes benchmarks/results.json.

Run:  JAX_PLATFORMS=cpu .venv/bin/python benchmarks/bench.py [--parts speed,bounds,attention,ce]

Parts (all by default; a part left out keeps its previous entry of results.json):

* speed: expnorm vs jax.nn.softmax, jax.nn.log_softmax, jax.scipy.special.logsumexp and
  optax.softmax_cross_entropy_with_integer_labels on float32 shapes (4096, 32768),
  (64, 262144), (1, 2**24): median time of several calls after warm-up (the two
  implementations timed alternately), effective bandwidth
  (bytes that must be read and written, over the time), ratio to jax, and ratio to the
  machine's copy bandwidth measured in the same run (numpy copy of a 512 MiB array).
* bounds: what limits softmax here: a copy, one read pass (max), sum(exp(x - max)) in
  float32 and float64, both logsumexps (one pass with exp, no large output),
  ``x + 1`` into a fresh output, and both softmaxes, each in a subprocess with the default
  allocator and with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``.
* attention: peak resident memory of plain vs tiled attention for increasing N, one process
  per measurement (benchmarks/attention_memory.py).
* ce: linear cross-entropy N=8192, D=1024, V=131072 forward+backward, naive vs chunked vs
  fused, one process each, run one after the other (benchmarks/ce_memory.py; ~10 GiB peak).

Timings on a shared machine vary by 20-30% between runs; compare ratios within one run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
SHAPES = [(4096, 32768), (64, 262144), (1, 2**24)]
PY = sys.executable


def machine_info():
    import jax
    import numpy as np
    import optax

    from expnorm import _native

    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * 1024
    except OSError:
        pass
    return {
        "cpu_model": model,
        "logical_cpus": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "memory_bytes": mem,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "numpy": np.__version__,
        "optax": optax.__version__,
        "date": datetime.date.today().isoformat(),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        "expnorm_native_kernels": _native.status(),
    }


def median_times(fns, *args, warmup=2, reps=7):
    """Median time of each function after warm-up. Several functions are timed alternately
    (f1, f2, f1, f2, ...), so that a change in the machine's state during the run (other
    load, memory) affects them alike."""
    import jax

    for _ in range(warmup):
        for fn in fns:
            jax.block_until_ready(fn(*args))
    times = [[] for _ in fns]
    for _ in range(reps):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]


def median_time(fn, *args, warmup=2, reps=7):
    return median_times([fn], *args, warmup=warmup, reps=reps)[0]


def copy_bandwidth(nbytes=512 * 2**20, reps=7):
    """numpy copy into a preallocated array: (read + write bytes) / median time."""
    import numpy as np

    src = np.random.default_rng(0).random(nbytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    times = []
    for _ in range(reps + 2):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t0)
    return 2 * nbytes / statistics.median(times[2:])


def speed_part():
    import jax
    import jax.numpy as jnp
    import optax

    import expnorm

    copy_bw = copy_bandwidth()
    ops = {
        "softmax": (lambda x, l: expnorm.softmax(x), lambda x, l: jax.nn.softmax(x),
                    "jax.nn.softmax", True),
        "log_softmax": (lambda x, l: expnorm.log_softmax(x), lambda x, l: jax.nn.log_softmax(x),
                        "jax.nn.log_softmax", True),
        "logsumexp": (lambda x, l: expnorm.logsumexp(x, axis=-1),
                      lambda x, l: jax.scipy.special.logsumexp(x, axis=-1),
                      "jax.scipy.special.logsumexp", False),
        "cross_entropy": (lambda x, l: expnorm.softmax_cross_entropy_with_integer_labels(x, l),
                          lambda x, l: optax.softmax_cross_entropy_with_integer_labels(x, l),
                          "optax.softmax_cross_entropy_with_integer_labels", False),
    }
    rows = []
    for shape in SHAPES:
        x = jax.random.normal(jax.random.key(0), shape, jnp.float32) * 4
        labels = jax.random.randint(jax.random.key(1), shape[:-1], 0, shape[-1])
        nbytes = x.size * 4
        reps = 7 if nbytes >= 2**28 else 11
        for name, (ours, theirs, ref_name, full_output) in ops.items():
            moved = nbytes * (2 if full_output else 1)
            t_ours, t_ref = median_times([jax.jit(ours), jax.jit(theirs)], x, labels, reps=reps)
            rows.append({
                "op": name, "reference": ref_name, "shape": list(shape), "dtype": "float32",
                "bytes_moved": moved,
                "expnorm_s": t_ours, "reference_s": t_ref,
                "expnorm_GBps": moved / t_ours / 1e9, "reference_GBps": moved / t_ref / 1e9,
                "speedup_vs_reference": t_ref / t_ours,
                "expnorm_fraction_of_copy_bw": moved / t_ours / copy_bw,
                "reference_fraction_of_copy_bw": moved / t_ref / copy_bw,
            })
            print(f"{name:14s} {str(shape):16s} expnorm {t_ours * 1e3:8.2f} ms  "
                  f"{ref_name} {t_ref * 1e3:8.2f} ms  speedup {t_ref / t_ours:5.2f}", flush=True)
    return {"copy_bandwidth_GBps": copy_bw / 1e9, "rows": rows}


# ------------------------------------------------------------------------------- bounds


def bounds_child():
    """Runs in a subprocess: the cost of each ingredient of softmax on (4096, 32768) float32."""
    import jax
    import jax.numpy as jnp

    import expnorm

    x = jax.random.normal(jax.random.key(0), (4096, 32768), jnp.float32) * 4
    kernels = {
        "numpy_copy_preallocated": None,
        "max_one_read_pass": jax.jit(lambda x: jnp.max(x, axis=-1)),
        "sum_exp_shifted_f32": jax.jit(
            lambda x: jnp.sum(jnp.exp(x - jnp.max(x, axis=-1, keepdims=True)), axis=-1)),
        "sum_exp_shifted_f64": jax.jit(
            lambda x: _wide_sum_exp(x)),
        "x_plus_1_fresh_output": jax.jit(lambda x: x + 1.0),
        # one read pass plus exp and a sum, no large output: float32 exp (jax) against the
        # kernel's float64 exp (expnorm)
        "jax.scipy.special.logsumexp": jax.jit(lambda x: jax.scipy.special.logsumexp(x, axis=-1)),
        "expnorm.logsumexp": jax.jit(lambda x: expnorm.logsumexp(x, axis=-1)),
        "jax.nn.softmax": jax.jit(jax.nn.softmax),
        "expnorm.softmax": jax.jit(expnorm.softmax),
    }
    out = {}
    for name, f in kernels.items():
        if f is None:
            out[name] = 2 * x.size * 4 / copy_bandwidth(x.size * 4)
        else:
            out[name] = median_time(f, x, reps=7)
    print(json.dumps(out))


def _wide_sum_exp(x):
    import jax
    import jax.numpy as jnp

    with jax.enable_x64(True):
        xw = x.astype(jnp.float64)
        return jnp.sum(jnp.exp(xw - jnp.max(xw, axis=-1, keepdims=True)), axis=-1).astype(x.dtype)


def bounds_part():
    res = {"shape": [4096, 32768], "dtype": "float32", "bytes": 4096 * 32768 * 4}
    for label, extra in (("default_malloc", {}),
                         ("hugetlb", {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"})):
        env = dict(os.environ, JAX_PLATFORMS="cpu", **extra)
        proc = subprocess.run([PY, __file__, "--bounds-child"], env=env, capture_output=True,
                              text=True, check=True)
        res[label] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(label, {k: round(v * 1e3, 1) for k, v in res[label].items()}, "ms", flush=True)
    return res


# ----------------------------------------------------------------------- memory parts


def _child(script, *args):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run([PY, str(HERE / script), *map(str, args)], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def attention_part():
    rows = []
    for n in (1024, 2048, 4096, 8192, 16384):
        for variant in ("plain", "tiled"):
            r = _child("attention_memory.py", variant, n, 64, 512)
            r["extra_bytes"] = r["peak_rss_bytes"] - r["baseline_rss_bytes"]
            rows.append(r)
            print("attention", variant, n, f"{r['extra_bytes'] / 2**20:.1f} MiB", flush=True)
    return {"d": 64, "block": 512, "rows": rows}


def ce_part():
    n, d, v = 8192, 1024, 131072
    out = {"n": n, "d": d, "v": v, "dtype": "float32", "runs": {}}
    for variant in ("naive", "chunked", "fused"):  # sequentially: never two at once
        r = _child("ce_memory.py", variant, n, d, v, 1)
        out["runs"][variant] = r
        print("ce", variant, f"peak {r['peak_rss_bytes'] / 2**30:.2f} GiB",
              f"time {r['times_s']}", flush=True)
    naive = out["runs"]["naive"]
    for variant in ("chunked", "fused"):
        r = out["runs"][variant]
        r["peak_ratio_to_naive"] = r["peak_rss_bytes"] / naive["peak_rss_bytes"]
        r["time_ratio_to_naive"] = min(r["times_s"]) / min(naive["times_s"])
    return out


PARTS = {"speed": speed_part, "bounds": bounds_part, "attention": attention_part, "ce": ce_part}


def print_table(speed):
    print(f"\ncopy bandwidth (numpy, read + write): {speed['copy_bandwidth_GBps']:.1f} GB/s")
    print(f"{'op':14s} {'shape':16s} {'expnorm ms':>10s} {'jax ms':>9s} {'GB/s ours':>9s} "
          f"{'GB/s jax':>9s} {'speedup':>7s} {'ours/copy':>9s} {'jax/copy':>8s}")
    for r in speed["rows"]:
        print(f"{r['op']:14s} {str(tuple(r['shape'])):16s} {r['expnorm_s'] * 1e3:10.2f} "
              f"{r['reference_s'] * 1e3:9.2f} {r['expnorm_GBps']:9.2f} {r['reference_GBps']:9.2f} "
              f"{r['speedup_vs_reference']:7.2f} {r['expnorm_fraction_of_copy_bw']:9.2f} "
              f"{r['reference_fraction_of_copy_bw']:8.2f}")


def main():
    if "--bounds-child" in sys.argv:
        bounds_child()
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--parts", default=",".join(PARTS))
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["machine"] = machine_info()
    for part in args.parts.split(","):
        results[part] = PARTS[part]()
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    if "speed" in results:
        print_table(results["speed"])
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
