"""Softmax written into a donated input's buffer: timings on this machine -> benchmarks/inplace.json.

Run:  JAX_PLATFORMS=cpu .venv/bin/python benchmarks/inplace.py [--rows 4096] [--cols 32768] [--reps 7]

Methods, timed round-robin in one process (the starting method rotates from round to round), each
round on a freshly made input that is already resident in memory (making it is not timed):

* ``copy``: numpy copy into a preallocated array of the same size (the bandwidth reference:
  read + write of the array, as in bench.py);
* ``expnorm.softmax`` / ``expnorm.log_softmax`` with ``overwrite_input=True``, donated
  (``jax.jit(f, donate_argnums=0)``: the kernel writes into the input's buffer) and not donated
  (XLA copies the input first, and the kernel overwrites the copy);
* ``expnorm.softmax`` / ``expnorm.log_softmax`` as called by default (a fresh output),
  donated (XLA then copies the result into the donated buffer) and not donated;
* ``expnorm.logsumexp`` over the rows: the kernels' max and exp pass with no output array
  (what is left of softmax's time once no output is allocated: a floor for the donated call);
* ``jax.nn.softmax``, donated and not donated.

Stored (one entry per shape under "runs", a new run replacing its shape's entry): median, min, max and all runs of each method; time relative to the copy; the fraction
of the copy bandwidth (2 * bytes / time over the copy's); the load average before and after
(the machine is shared: compare within one run only); the sha256 of the kernels and of this
file. Not part of bench.py (whose stored results are tied to its own hash).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import statistics
import time
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "inplace.json"
SOURCES = ["src/expnorm/_native/kernels.cc", "src/expnorm/_native/__init__.py",
           "benchmarks/inplace.py"]


def summary(ts):
    return {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts),
            "runs": len(ts), "times_s": ts}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=32768)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if args.reps < 5:
        raise SystemExit("at least 5 runs")

    import jax
    import jax.numpy as jnp
    import numpy as np

    import expnorm
    from expnorm import _native

    assert _native.available(), _native.status()
    load_before = os.getloadavg()
    shape = (args.rows, args.cols)
    nbytes = args.rows * args.cols * 4
    base = jax.random.normal(jax.random.key(0), shape, jnp.float32) * 4
    fresh = jax.jit(lambda a: a + 0.0)  # a new, resident copy of the input (not timed)
    src = np.asarray(base).copy()
    dst = np.empty_like(src)

    softmax_over = partial(expnorm.softmax, overwrite_input=True)
    log_softmax_over = partial(expnorm.log_softmax, overwrite_input=True)
    fns = {
        "expnorm.softmax, overwrite_input, donated": (jax.jit(softmax_over, donate_argnums=0),
                                                      True),
        "expnorm.softmax, overwrite_input": (jax.jit(softmax_over), False),
        "expnorm.softmax donated": (jax.jit(expnorm.softmax, donate_argnums=0), True),
        "expnorm.softmax": (jax.jit(expnorm.softmax), False),
        "expnorm.log_softmax, overwrite_input, donated": (
            jax.jit(log_softmax_over, donate_argnums=0), True),
        "expnorm.log_softmax": (jax.jit(expnorm.log_softmax), False),
        # no output array: the same max / exp pass as softmax's statistics (a floor for it)
        "expnorm.logsumexp": (jax.jit(lambda x: expnorm.logsumexp(x, axis=-1)), False),
        "jax.nn.softmax donated": (jax.jit(jax.nn.softmax, donate_argnums=0), True),
        "jax.nn.softmax": (jax.jit(jax.nn.softmax), False),
    }
    methods = ["copy", *fns]
    # the evidence that the donated call allocates nothing: XLA's buffer assignment
    buffers = {}
    for name, (fn, donated) in fns.items():
        mem = fn.lower(base).compile().memory_analysis()
        buffers[name] = {"temp_bytes": mem.temp_size_in_bytes,
                         "output_aliased_to_input_bytes": mem.alias_size_in_bytes}

    def once(name):
        if name == "copy":
            t0 = time.perf_counter()
            np.copyto(dst, src)
            return time.perf_counter() - t0
        fn, donated = fns[name]
        x = jax.block_until_ready(fresh(base)) if donated else base
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(x))
        t = time.perf_counter() - t0
        del out, x
        return t

    for name in methods:  # warm-up: compile, and touch the copy's destination
        once(name)
    times = {name: [] for name in methods}
    for r in range(args.reps):
        k = r % len(methods)
        for name in methods[k:] + methods[:k]:
            times[name].append(once(name))
    load_after = os.getloadavg()

    copy_med = statistics.median(times["copy"])
    rows = {}
    print(f"shape {shape} float32, {nbytes / 2**20:.0f} MiB; load average before "
          f"{load_before[0]:.1f} / after {load_after[0]:.1f} on {os.cpu_count()} cores")
    for name in methods:
        s = summary(times[name])
        s["time_over_copy"] = s["median_s"] / copy_med
        s["fraction_of_copy_bandwidth"] = copy_med / s["median_s"]
        if name in buffers:
            s.update(buffers[name])
        rows[name] = s
        print(f"{name:46s} {s['median_s'] * 1e3:8.1f} ms [{s['min_s'] * 1e3:.1f}-"
              f"{s['max_s'] * 1e3:.1f}]  {s['fraction_of_copy_bandwidth']:.2f} of copy bw"
              + (f"  temp {s['temp_bytes'] / 2**20:.0f} MiB" if name in buffers else ""))
    copy_bw = 2 * nbytes / copy_med
    print(f"copy bandwidth (read + write) {copy_bw / 1e9:.1f} GB/s")
    # jax.nn.softmax time / expnorm time (> 1: expnorm faster), each with the same donation
    pairs = {"donated": ("expnorm.softmax, overwrite_input, donated", "jax.nn.softmax donated"),
             "not donated": ("expnorm.softmax", "jax.nn.softmax")}
    ratios = {}
    for label, (ours, theirs) in pairs.items():
        ratios[label] = rows[theirs]["median_s"] / rows[ours]["median_s"]
        print(f"speed against jax.nn.softmax, {label}: {ratios[label]:.2f} "
              f"({ours}: {rows[ours]['fraction_of_copy_bandwidth']:.2f} of copy bw)")
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "jax": jax.__version__,
                    "load_average_before": load_before, "load_average_after": load_after,
                    "note": "shared machine (load average above the core count): timings "
                            "vary run to run; compare methods within this run only"},
        "shape": list(shape), "dtype": "float32", "bytes": nbytes, "reps": args.reps,
        "copy_bandwidth_GBps": copy_bw / 1e9,
        "methods": rows,
        "speed_vs_jax_nn_softmax": ratios,
        "sources_sha256": {p: hashlib.sha256((ROOT / p).read_bytes()).hexdigest()
                           for p in SOURCES},
    }
    # one entry per shape; a run replaces the entry of its shape and keeps the others
    stored = json.loads(args.out.read_text()) if args.out.exists() else {}
    stored = stored if "runs" in stored else {"runs": {}}
    stored["runs"][f"{shape[0]}x{shape[1]}"] = result
    args.out.write_text(json.dumps(stored, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
