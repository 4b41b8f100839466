"""Peak memory and time of attention's value_and_grad, plain vs tiled, one process per measurement.

Run:  JAX_PLATFORMS=cpu .venv/bin/python benchmarks/attention_train_memory.py [--ns 2048,4096,...]
Writes benchmarks/attention_train_memory.json (schema in the docstring of ``main``).

What is measured, for N = 2048, 4096, 8192, 16384, d = 64, float32, q = k = v sequence length N:
the loss ``sum(attention(q, k, v) * g)`` with a fixed random cotangent ``g``, and its gradient
with respect to q, k and v (``jax.value_and_grad``, jitted, compiled before measuring), for

* plain: ``softmax(q k^T / sqrt(d)) v`` written in this script with ``jax.nn.softmax`` (the
  (N, N) scores, probabilities and their cotangents exist);
* tiled: ``expnorm.tiled_attention(q, k, v, block_size=512)`` (custom VJP: the backward pass
  recomputes each (N, 512) tile from the saved output and per-row log-sum-exp).

Each (N, method) runs in a fresh child process, one after another (never two at once). The child
creates the inputs (from NumPy, float32), compiles, and then records its *floor*: the resident
memory (VmRSS) of a process that holds the runtime, the inputs and the compiled executable. It
resets the peak-RSS counter (``echo 5 > /proc/self/clear_refs``, Linux >= 4.0) so that memory used
by compilation does not count, runs the step once and reads the peak (VmHWM): the row's
``peak_mib_above_floor`` is peak minus floor (it includes the outputs: the loss and three
(N, 64) gradients, 0.75 MiB at N = 2048). Then the step is timed ``--reps`` times (median, min, max).

Plain attention is skipped at an N whose predicted footprint (XLA's compiled memory analysis:
temporaries + outputs) exceeds ``--limit-gib`` (default 8), or when the machine has less memory
available than that plus a margin; the JSON says which rows were skipped and why.

The log-log slope of peak_mib_above_floor against N (least squares over the measured N) is
about 2 for memory that grows like N^2 and about 1 for memory that grows like N.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "attention_train_memory.json"
D = 64
BLOCK = 512
PROBE_N = 256
MIB = 2**20


def _status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return None


def _mem_available():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ----------------------------------------------------------------------------- child


def child(method, n, reps, limit_bytes):
    import jax
    import jax.numpy as jnp
    import numpy as np

    import expnorm

    rng = np.random.default_rng(0)
    q, k, v, g = (jnp.asarray(rng.standard_normal((n, D), dtype=np.float32)) for _ in range(4))

    def plain(q, k, v):
        s = (q @ k.T) * jnp.float32(1 / math.sqrt(D))
        return jax.nn.softmax(s, axis=-1) @ v

    def tiled(q, k, v):
        return expnorm.tiled_attention(q, k, v, block_size=BLOCK)

    att = {"plain": plain, "tiled": tiled}[method]

    def loss(q, k, v):
        return jnp.sum(att(q, k, v) * g)

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
    compiled = step.lower(q, k, v).compile()
    ma = compiled.memory_analysis()
    predicted = None if ma is None else ma.temp_size_in_bytes + ma.output_size_in_bytes
    row = {"N": n, "method": method, "xla_temp_mib": None if ma is None else ma.temp_size_in_bytes / MIB}
    if predicted is not None and predicted > limit_bytes:
        row["skipped"] = f"predicted {predicted / 2**30:.1f} GiB > limit {limit_bytes / 2**30:.1f} GiB"
        return row
    avail = _mem_available()
    if predicted is not None and avail is not None and predicted + 2 * 2**30 > avail:
        row["skipped"] = (f"predicted {predicted / 2**30:.1f} GiB, machine has only "
                          f"{avail / 2**30:.1f} GiB available")
        return row
    jax.block_until_ready((q, k, v, g))
    floor = _status("VmRSS")
    reset = _reset_peak()
    hwm_before = _status("VmHWM")
    value, grads = compiled(q, k, v)
    jax.block_until_ready((value, grads))
    peak = _status("VmHWM")
    del grads
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = compiled(q, k, v)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t0)
        del out
    row.update({
        "peak_mib_above_floor": (peak - (floor if reset else hwm_before)) / MIB,
        "floor_mib": floor / MIB,
        "peak_rss_mib": peak / MIB,
        "peak_counter_reset": reset,
        "time_s_median": statistics.median(times),
        "time_s_min": min(times),
        "time_s_max": max(times),
        "times_s": times,
        "loss": float(value),
    })
    return row


# ---------------------------------------------------------------------------- parent


def machine_info():
    import jax
    import numpy as np

    info = {"cpu_model": "unknown", "logical_cpus": os.cpu_count(),
            "cpus_available": len(os.sched_getaffinity(0)), "platform": platform.platform(),
            "python": platform.python_version(), "jax": jax.__version__, "numpy": np.__version__,
            "date": datetime.datetime.now().isoformat(timespec="seconds")}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                elif line.startswith("cache size"):
                    info["cache_size_per_cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            info["memory_bytes"] = int(f.readline().split()[1]) * 1024
    except OSError:
        pass
    info["mem_available_bytes_at_start"] = _mem_available()
    info["loadavg_at_start"] = os.getloadavg()
    return info


def _slope(rows, method, key="peak_mib_above_floor"):
    """Least-squares slope of log(row[key]) against log(N) over the rows of one method."""
    pts = [(math.log(r["N"]), math.log(r[key])) for r in rows
           if r["method"] == method and r.get(key) and r[key] > 0]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


def _difference_exponents(rows, method):
    """For N doubling, memory a + b N^alpha has differences in ratio 2^alpha whatever the constant
    a: alpha = log2((p(4N) - p(2N)) / (p(2N) - p(N))), one value per consecutive triple."""
    pts = sorted((r["N"], r["peak_mib_above_floor"]) for r in rows if r["method"] == method)
    out = []
    for (n0, p0), (n1, p1), (n2, p2) in zip(pts, pts[1:], pts[2:]):
        if n1 == 2 * n0 and n2 == 2 * n1 and p1 > p0 and p2 > p1:
            out.append({"N": [n0, n1, n2], "alpha": math.log2((p2 - p1) / (p1 - p0))})
    return out


def summarize(result, probe=True, reps=1, limit_gib=8.0):
    """Adds the slopes and diagnostics computed from result["rows"] (and a small-N probe)."""
    rows = result["rows"]
    result["slopes"] = {m: _slope(rows, m) for m in ("plain", "tiled")}
    result["difference_exponents"] = {m: _difference_exponents(rows, m) for m in ("plain", "tiled")}
    result["slopes_xla_temp"] = {m: _slope(rows, m, "xla_temp_mib") for m in ("plain", "tiled")}
    if probe:
        # what a first value_and_grad call costs beyond XLA's temporaries when those are tiny
        r = _run_child("tiled", PROBE_N, reps, limit_gib)
        result["probe_small_n"] = {k: r.get(k) for k in ("N", "method", "peak_mib_above_floor",
                                                        "xla_temp_mib", "floor_mib")}
    result["notes"] = (
        "slopes: least-squares log-log slope of peak_mib_above_floor vs N. difference_exponents: "
        "log2 of the ratio of successive differences, the exponent of a + b N^alpha with the "
        "constant a cancelled. slopes_xla_temp: the same fit of XLA's compiled temporaries "
        "(memory_analysis().temp_size_in_bytes). probe_small_n: the tiled step at a small N, "
        "where XLA's temporaries are below 1 MiB: the rest is a fixed cost of the first call "
        "(runtime, threads, allocator) that flattens the tiled log-log slope at small N.")
    return result


def _run_child(method, n, reps, limit_gib):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, __file__, "--child", method, str(n), "--reps", str(reps),
                           "--limit-gib", str(limit_gib)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [""]
        return {"N": n, "method": method,
                "skipped": f"child failed (exit {proc.returncode}): {lines[-1][:300]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    """Schema of the JSON: {"machine": {...}, "d": 64, "dtype": "float32", "block_size": 512,
    "rows": [{"N", "method": "plain" | "tiled", "peak_mib_above_floor", "floor_mib",
    "time_s_median", "time_s_min", "time_s_max", "xla_temp_mib", ...}], "skipped": [...],
    "slopes": {"plain", "tiled"}, "difference_exponents", "slopes_xla_temp", "probe_small_n"}."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", nargs=2, metavar=("METHOD", "N"))
    ap.add_argument("--ns", default="2048,4096,8192,16384")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--limit-gib", type=float, default=8.0)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--summarize", action="store_true",
                    help="recompute slopes and the small-N probe for the rows already in --out")
    args = ap.parse_args()
    limit = int(args.limit_gib * 2**30)
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.reps, limit)))
        return

    if args.summarize:  # recompute the summary of an existing file (no new measurements)
        result = json.loads(Path(args.out).read_text())
        summarize(result, reps=1, limit_gib=args.limit_gib)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        print("slopes", result["slopes"], "difference exponents", result["difference_exponents"])
        print("wrote", args.out)
        return

    info = machine_info()
    rows, skipped = [], []
    for n in map(int, args.ns.split(",")):
        for method in ("plain", "tiled"):  # one after the other, never two at once
            r = _run_child(method, n, args.reps, args.limit_gib)
            if "skipped" in r:
                skipped.append({"N": n, "method": method, "reason": r["skipped"]})
                print(method, n, "skipped:", r["skipped"], flush=True)
                continue
            rows.append(r)
            print(f"{method:5s} N={n:6d}  peak above floor {r['peak_mib_above_floor']:9.1f} MiB  "
                  f"(floor {r['floor_mib']:.0f} MiB, XLA temporaries {r['xla_temp_mib']:.1f} MiB)  "
                  f"time {r['time_s_median']:.3f} s [{r['time_s_min']:.3f}, {r['time_s_max']:.3f}]",
                  flush=True)
    info["loadavg_at_end"] = os.getloadavg()
    result = {"machine": info, "d": D, "dtype": "float32", "block_size": BLOCK,
              "loss": "sum(attention(q, k, v) * g), g a fixed random (N, 64) cotangent; "
                      "value_and_grad w.r.t. q, k, v",
              "floor": "VmRSS of the child after creating inputs and compiling; peak = VmHWM "
                       "of the first call after resetting the peak counter (clear_refs)",
              "rows": rows, "skipped": skipped}
    summarize(result, limit_gib=args.limit_gib)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print("log-log slopes of peak memory above floor vs N:",
          {m: None if v is None else round(v, 3) for m, v in result["slopes"].items()})
    print("exponents from successive differences:",
          {m: [round(e["alpha"], 3) for e in v] for m, v in result["difference_exponents"].items()})
    print("log-log slopes of XLA's temporaries:",
          {m: None if v is None else round(v, 3) for m, v in result["slopes_xla_temp"].items()})
    print("wrote", args.out)


if __name__ == "__main__":
    main()
