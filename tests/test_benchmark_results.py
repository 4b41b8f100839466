"""benchmarks/results.json must come from the current code and keep its promises.

Each part of the file stores the sha256 of the files whose code it ran (kernels.cc, the
benchmark scripts): when one of them changes, the stored results describe older code and
these tests fail until `make bench` is run again. Every timing is a median of at least 5 runs
with its spread (min, max) and every run stored.
"""

import hashlib
import json
import math
import statistics
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS_PATH = ROOT / "benchmarks" / "results.json"
PARTS = ("speed", "bounds", "attention", "ce")
MIN_RUNS = 5


@pytest.fixture(scope="module")
def results():
    return json.loads(RESULTS_PATH.read_text())


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_part_records_the_sources_it_ran(results):
    for part in PARTS:
        sources = results[part]["sources_sha256"]
        assert "benchmarks/bench.py" in sources, part
    for part in ("speed", "bounds"):  # the kernels, and the flags they are compiled with
        assert "src/expnorm/_native/kernels.cc" in results[part]["sources_sha256"]
        assert "src/expnorm/_native/__init__.py" in results[part]["sources_sha256"]


@pytest.mark.parametrize("part", PARTS)
def test_results_come_from_the_current_files(results, part):
    for relpath, digest in results[part]["sources_sha256"].items():
        assert sha256(ROOT / relpath) == digest, (
            f"benchmarks/results.json ({part}) was measured with another version of {relpath}: "
            "run `make bench` again")


def _timings(results):
    """Every timing summary in the file, with where it is."""
    yield "speed copy", results["speed"]["copy"]
    for row in results["speed"]["rows"]:
        where = f"speed {row['op']} {row['shape']}"
        yield where + " expnorm", row["expnorm"]
        yield where + " reference", row["reference_timing"]
    for run in results["bounds"]["runs"]:
        for name, timing in run["timings"].items():
            yield f"bounds {run['shape']} {run['allocator']} {name}", timing
    for size in results["ce"]["sizes"]:
        for name, run in size["runs"].items():
            yield f"ce {size['n']}x{size['d']}x{size['v']} {name}", run["time"]


def test_every_timing_is_a_median_of_at_least_5_runs_with_its_spread(results):
    count = 0
    for where, t in _timings(results):
        times = t["times_s"]
        assert t["runs"] == len(times) >= MIN_RUNS, where
        assert t["median_s"] == pytest.approx(statistics.median(times), rel=1e-12), where
        assert t["min_s"] == min(times) and t["max_s"] == max(times), where
        assert all(math.isfinite(v) and v > 0 for v in times), where
        count += 1
    assert count > 50


def test_the_cross_entropy_sweep_covers_the_sizes_it_promises(results):
    """At least four sizes from N=1024, V=32768 up to N=8192, D=1024, V=131072, each variant
    measured in a process of its own, with its floor below its peak."""
    sizes = [(s["n"], s["d"], s["v"]) for s in results["ce"]["sizes"]]
    assert len(sizes) >= 4
    assert (1024, 32768) == (sizes[0][0], sizes[0][2]) and sizes[-1] == (8192, 1024, 131072)
    for size in results["ce"]["sizes"]:
        assert set(size["runs"]) == {"naive", "chunked", "fused"}
        for name, run in size["runs"].items():
            assert run["baseline_rss_bytes"] <= run["floor_rss_bytes"] <= run["peak_rss_bytes"]
            assert run["beyond_floor_bytes"] == run["peak_rss_bytes"] - run["floor_rss_bytes"]
        naive = size["runs"]["naive"]["beyond_floor_bytes"]
        for name in ("chunked", "fused"):
            run = size["runs"][name]
            assert run["beyond_floor_ratio_to_naive"] == pytest.approx(run["beyond_floor_bytes"] / naive)
            assert run["plan"], name  # the chunk size the process used is recorded
    # the chunk sizes come from the problem: not the same at every size
    plans = {json.dumps(s["runs"]["fused"]["plan"]) for s in results["ce"]["sizes"]}
    assert len(plans) > 1
