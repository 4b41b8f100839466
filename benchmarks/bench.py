"""Benchmarks of expnorm against jax / optax on this machine; writes benchmarks/results.json.

Run:  JAX_PLATFORMS=cpu .venv/bin/python benchmarks/bench.py [--parts speed,bounds,attention,ce]

Parts (all by default; a part left out keeps its previous entry of results.json):

* speed: expnorm vs jax.nn.softmax, jax.nn.log_softmax, jax.scipy.special.logsumexp and
  optax.softmax_cross_entropy_with_integer_labels on float32 shapes (1024, 32768),
  (64, 262144), (1, 2**24), the two implementations timed alternately, and the machine's
  copy bandwidth measured in the same run (numpy copy of a 128 MiB array).
* bounds: what limits softmax here, each ingredient timed on its own in a fresh process: a
  copy, read passes (max alone, sum alone), the controls of the exponential (sum(exp(x))
  alone, sum(exp(x - max)), max and sum(exp(x)) computed independently in one jit), the
  float64 sum of exponentials, both logsumexps (one pass with exp, no large output),
  ``x + 1`` into a fresh output, and both softmaxes; on (1024, 32768) with the default
  allocator and with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``, and on (64, 262144) (rows of
  1 MiB, where logsumexp's speed differs) with the default allocator, once more with
  ``OMP_NUM_THREADS=1`` (expnorm's kernels on one thread). Also records how many
  operations (fusions, reductions, custom calls) XLA compiled each jax function into.
* attention: peak resident memory of plain vs tiled attention for increasing N, one process
  per measurement (benchmarks/attention_memory.py).
* ce: linear cross-entropy forward+backward, naive vs chunked vs fused, at the sizes of
  CE_SIZES (from N=1024, V=32768 to N=8192, D=1024, V=131072), each size and variant in a
  fresh process of its own, one at a time (benchmarks/ce_memory.py). Each process measures
  its floor (the runtime, the compiled function, the inputs and arrays of the gradients'
  shapes), its peak resident memory, and CE_CALLS timed calls after one untimed call; the
  chunk sizes are expnorm's own choice for the problem (expnorm.chunked.chunk_plan).

Every timing is stored as its median, min and max over at least 5 runs, with every run;
conclusions are drawn only from ratios outside the measured spread. Each part stores the
load average of the machine before and after it (the machine may be shared), and the sha256
of the files whose code it ran (tests/test_benchmark_results.py checks them against the
files: results from older code fail the test).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results.json"
# Reduced from (4096, 32768) for a shared machine (a full run took > 15 min under a load
# average of ~9 on 2 cores); 128 MiB is still 4 times the L3 cache of the benchmark machine.
SHAPES = [(1024, 32768), (64, 262144), (1, 2**24)]
COPY_BYTES = 128 * 2**20
PY = sys.executable
MIN_RUNS = 5
# Linear cross-entropy sizes (N, D, V): logits of 128 MiB to 4 GiB. The largest is the size
# of the original benchmark (about 10 GiB of peak memory and a minute per call for the naive
# version on 2 cores).
CE_SIZES = [(1024, 512, 32768), (2048, 512, 65536), (4096, 1024, 65536), (8192, 1024, 131072)]
CE_CALLS = 5
CE_VARIANTS = ("naive", "chunked", "fused")
# The memory target applies where the naive version needs more than this beyond the floor.
CE_MEMORY_TARGET_ABOVE = 2**30
# The files whose code each part runs (paths relative to the repository root).
KERNELS = "src/expnorm/_native/kernels.cc"
KERNEL_FLAGS = "src/expnorm/_native/__init__.py"  # the compiler flags the kernels are built with
SOURCES = {
    "speed": [KERNELS, KERNEL_FLAGS, "benchmarks/bench.py"],
    "bounds": [KERNELS, KERNEL_FLAGS, "benchmarks/bench.py"],
    "attention": ["benchmarks/bench.py", "benchmarks/attention_memory.py"],
    "ce": ["benchmarks/bench.py", "benchmarks/ce_memory.py", "src/expnorm/chunked.py",
           "src/expnorm/online.py"],
}


def sha256(relpath):
    return hashlib.sha256((ROOT / relpath).read_bytes()).hexdigest()


def stats(times):
    """The summary stored for every timing: median, spread (min, max) and all runs."""
    if len(times) < MIN_RUNS:
        raise ValueError(f"{len(times)} runs; at least {MIN_RUNS} are required")
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "runs": len(times), "times_s": list(times)}


def load_average():
    one, five, fifteen = os.getloadavg()
    return {"1min": one, "5min": five, "15min": fifteen}


def _read(path):
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def cpu_caches():
    """The caches of cpu0, from sysfs: level, type, size, and which CPUs share each."""
    caches = []
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        caches.append({"level": _read(index / "level"), "type": _read(index / "type"),
                       "size": _read(index / "size"),
                       "shared_cpu_list": _read(index / "shared_cpu_list")})
    return caches


def machine_info():
    import jax
    import numpy as np
    import optax

    from expnorm import _native

    model, flags, mhz = "unknown", set(), None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model == "unknown":
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
                elif key == "cpu MHz" and mhz is None:
                    mhz = float(value)
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
        "cpu_mhz": mhz,
        "logical_cpus": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "virtual_machine": "hypervisor" in flags,
        "simd": sorted(flags & {"avx", "avx2", "fma", "avx512f"}),
        "caches": cpu_caches(),
        "memory_bytes": mem,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "numpy": np.__version__,
        "optax": optax.__version__,
        "date": datetime.date.today().isoformat(),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        "expnorm_native_kernels": _native.status().split(" ")[0],
    }


def time_runs(fns, *args, warmup=2, reps=7):
    """The times of `reps` calls of each function after warm-up. Several functions are timed
    alternately (f1, f2, f1, f2, ...), so that a change in the machine's state during the run
    (other load, memory) affects them alike."""
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
    return times


def copy_times(nbytes=COPY_BYTES, reps=7):
    """Times of a numpy copy into a preallocated array of `nbytes` (after 2 warm-up copies)."""
    import numpy as np

    src = np.random.default_rng(0).random(nbytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    times = []
    for _ in range(reps + 2):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t0)
    return times[2:]


def speed_part():
    import jax
    import jax.numpy as jnp
    import optax

    import expnorm

    copy = stats(copy_times())
    copy_bw = 2 * COPY_BYTES / copy["median_s"]
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
        reps = 7 if nbytes >= 2**27 else 11
        for name, (ours, theirs, ref_name, full_output) in ops.items():
            moved = nbytes * (2 if full_output else 1)
            t_ours, t_ref = time_runs([jax.jit(ours), jax.jit(theirs)], x, labels, reps=reps)
            s_ours, s_ref = stats(t_ours), stats(t_ref)
            rows.append({
                "op": name, "reference": ref_name, "shape": list(shape), "dtype": "float32",
                "bytes_moved": moved, "expnorm": s_ours, "reference_timing": s_ref,
                "speedup_vs_reference": s_ref["median_s"] / s_ours["median_s"],
                "expnorm_fraction_of_copy_bw": moved / s_ours["median_s"] / copy_bw,
                "reference_fraction_of_copy_bw": moved / s_ref["median_s"] / copy_bw,
            })
            print(f"{name:14s} {str(shape):16s} expnorm {_fmt(s_ours)}  "
                  f"{ref_name} {_fmt(s_ref)}  speedup {s_ref['median_s'] / s_ours['median_s']:5.2f}",
                  flush=True)
    return {"copy": copy, "copy_bandwidth_GBps": copy_bw / 1e9, "rows": rows}


def _fmt(s):
    return (f"{s['median_s'] * 1e3:8.2f} ms [{s['min_s'] * 1e3:.2f}-{s['max_s'] * 1e3:.2f}]")


# ------------------------------------------------------------------------------- bounds

BOUNDS_RUNS = [  # (shape, allocator label, extra environment)
    ((1024, 32768), "default_malloc", {}),
    ((1024, 32768), "hugetlb", {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}),
    ((64, 262144), "default_malloc", {}),
    # expnorm's kernels run on all cores with OpenMP; XLA's thread pool ignores this variable
    ((64, 262144), "default_malloc", {"OMP_NUM_THREADS": "1"}),
]


def bounds_kernels():
    import jax
    import jax.numpy as jnp

    import expnorm

    def shifted(x):
        return jnp.sum(jnp.exp(x - jnp.max(x, axis=-1, keepdims=True)), axis=-1)

    return {
        "numpy_copy_preallocated": None,
        # read passes with almost no arithmetic
        "max_alone": lambda x: jnp.max(x, axis=-1),
        "sum_alone": lambda x: jnp.sum(x, axis=-1),
        # the controls of the exponential
        "sum_exp_alone": lambda x: jnp.sum(jnp.exp(x), axis=-1),
        "sum_exp_shifted_f32": shifted,
        "max_and_sum_exp_independent": lambda x: (jnp.max(x, axis=-1),
                                                  jnp.sum(jnp.exp(x), axis=-1)),
        "sum_exp_shifted_f64": _wide_sum_exp,
        "x_plus_1_fresh_output": lambda x: x + 1.0,
        # one read pass plus exp and a sum, no large output: float32 exp (jax) against the
        # kernel's float64 exp (expnorm)
        "jax.scipy.special.logsumexp": lambda x: jax.scipy.special.logsumexp(x, axis=-1),
        "expnorm.logsumexp": lambda x: expnorm.logsumexp(x, axis=-1),
        "jax.nn.softmax": jax.nn.softmax,
        "expnorm.softmax": expnorm.softmax,
    }


def _entry_ops(compiled_text):
    """The number of fusions, unfused reductions and custom calls (expnorm's kernels) in the
    entry computation of a compiled XLA CPU program: the loops it runs over the data, roughly."""
    entry = compiled_text[compiled_text.index("ENTRY"):]
    entry = entry[: entry.index("\n}") if "\n}" in entry else len(entry)]
    return sum(1 for line in entry.splitlines()
               if " fusion(" in line or " reduce(" in line or " custom-call(" in line)


def bounds_child(rows, cols):
    """Runs in a subprocess: the cost of each ingredient of softmax on (rows, cols) float32."""
    import jax
    import jax.numpy as jnp

    x = jax.random.normal(jax.random.key(0), (rows, cols), jnp.float32) * 4
    out, ops = {}, {}
    reps = 7 if x.size * 4 >= 2**27 else 11
    for name, f in bounds_kernels().items():
        if f is None:
            out[name] = stats(copy_times(x.size * 4, reps=reps))
            continue
        jf = jax.jit(f)
        ops[name] = _entry_ops(jf.lower(x).compile().as_text())
        out[name] = stats(time_runs([jf], x, reps=reps if name != "sum_exp_shifted_f64" else 5)[0])
    print(json.dumps({"timings": out, "xla_entry_ops": ops}))


def _wide_sum_exp(x):
    import jax
    import jax.numpy as jnp

    with jax.enable_x64(True):
        xw = x.astype(jnp.float64)
        return jnp.sum(jnp.exp(xw - jnp.max(xw, axis=-1, keepdims=True)), axis=-1).astype(x.dtype)


def bounds_part():
    res = {"dtype": "float32", "runs": []}
    for shape, label, extra in BOUNDS_RUNS:
        env = dict(os.environ, JAX_PLATFORMS="cpu", **extra)
        before = load_average()
        proc = subprocess.run([PY, __file__, "--bounds-child", *map(str, shape)], env=env,
                              capture_output=True, text=True, check=True)
        child = json.loads(proc.stdout.strip().splitlines()[-1])
        res["runs"].append({"shape": list(shape), "bytes": shape[0] * shape[1] * 4,
                            "allocator": label, "glibc_tunables": extra.get("GLIBC_TUNABLES", ""),
                            "omp_num_threads": extra.get("OMP_NUM_THREADS", "default"),
                            "load_average_before": before, **child})
        print(label, shape, extra, {k: _fmt(v) for k, v in child["timings"].items()}, flush=True)
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
    out = {"dtype": "float32", "calls": CE_CALLS,
           "timed_calls": f"{CE_CALLS} calls in each process after one untimed call",
           "memory_target_above_bytes": CE_MEMORY_TARGET_ABOVE, "sizes": []}
    for n, d, v in CE_SIZES:
        size = {"n": n, "d": d, "v": v, "logits_bytes": 4 * n * v, "runs": {}}
        for variant in CE_VARIANTS:  # one process each, never two at once
            r = _child("ce_memory.py", variant, n, d, v, CE_CALLS)
            size["runs"][variant] = {
                "loss": r["loss"], "plan": r["plan"], "peak_rss_bytes": r["peak_rss_bytes"],
                "baseline_rss_bytes": r["baseline_rss_bytes"], "floor_rss_bytes": r["floor_rss_bytes"],
                "beyond_floor_bytes": r["peak_rss_bytes"] - r["floor_rss_bytes"],
                "time": stats(r["times_s"])}
            print("ce", (n, d, v), variant, r["plan"],
                  f"beyond floor {size['runs'][variant]['beyond_floor_bytes'] / 2**20:.0f} MiB",
                  f"(floor {r['floor_rss_bytes'] / 2**20:.0f} MiB)",
                  f"times {[round(t, 2) for t in r['times_s']]}", flush=True)
        naive = size["runs"]["naive"]
        size["memory_target_applies"] = naive["beyond_floor_bytes"] > CE_MEMORY_TARGET_ABOVE
        for variant in CE_VARIANTS[1:]:
            r = size["runs"][variant]
            r["beyond_floor_ratio_to_naive"] = r["beyond_floor_bytes"] / naive["beyond_floor_bytes"]
            r["time_ratio_to_naive"] = r["time"]["median_s"] / naive["time"]["median_s"]
            # faster or slower only when the spreads do not overlap
            r["time_spreads_apart"] = (r["time"]["max_s"] < naive["time"]["min_s"]
                                       or r["time"]["min_s"] > naive["time"]["max_s"])
            r["memory_target_met"] = (r["beyond_floor_ratio_to_naive"] < 0.25
                                      if size["memory_target_applies"] else None)
            r["time_target_met"] = r["time"]["median_s"] <= naive["time"]["median_s"]
        out["sizes"].append(size)
    print_ce_table(out)
    return out


def print_ce_table(ce):
    print("\nlinear cross-entropy, forward + backward (median s [min-max]; MiB beyond the floor)")
    for size in ce["sizes"]:
        naive = size["runs"]["naive"]
        line = [f"N={size['n']:5d} D={size['d']:4d} V={size['v']:6d}",
                f"naive {_fmt_s(naive['time'])} {naive['beyond_floor_bytes'] / 2**20:6.0f}"]
        for variant in CE_VARIANTS[1:]:
            r = size["runs"][variant]
            line.append(f"{variant} {r['plan']} {_fmt_s(r['time'])} x{r['time_ratio_to_naive']:.2f} "
                        f"{r['beyond_floor_bytes'] / 2**20:6.0f} ({r['beyond_floor_ratio_to_naive']:.2f})")
        print(" | ".join(line))


def _fmt_s(t):
    return f"{t['median_s']:.2f} [{t['min_s']:.2f}-{t['max_s']:.2f}]"


def _int_stats(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "values": list(values)}


PARTS = {"speed": speed_part, "bounds": bounds_part, "attention": attention_part, "ce": ce_part}


def print_table(speed):
    print(f"\ncopy bandwidth (numpy, read + write): {speed['copy_bandwidth_GBps']:.1f} GB/s "
          f"(copy {_fmt(speed['copy'])})")
    print("median ms [min-max] over the runs")
    for r in speed["rows"]:
        print(f"{r['op']:14s} {str(tuple(r['shape'])):16s} expnorm {_fmt(r['expnorm'])}  "
              f"reference {_fmt(r['reference_timing'])}  speedup {r['speedup_vs_reference']:5.2f}")


def main():
    if "--bounds-child" in sys.argv:
        i = sys.argv.index("--bounds-child")
        bounds_child(int(sys.argv[i + 1]), int(sys.argv[i + 2]))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--parts", default=",".join(PARTS))
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["machine"] = machine_info()
    for part in args.parts.split(","):
        t0, before = time.time(), load_average()
        entry = PARTS[part]()
        entry["sources_sha256"] = {path: sha256(path) for path in SOURCES[part]}
        entry["load_average_before"], entry["load_average_after"] = before, load_average()
        entry["wall_time_s"] = time.time() - t0
        entry["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        results[part] = entry
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
        print(f"part {part}: {entry['wall_time_s']:.0f} s, load average "
              f"{before['1min']:.1f} -> {entry['load_average_after']['1min']:.1f}", flush=True)
    if "speed" in results:
        print_table(results["speed"])
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
