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
    assert "src/expnorm/_native/kernels.cc" in results["speed"]["sources_sha256"]
    assert "src/expnorm/_native/kernels.cc" in results["bounds"]["sources_sha256"]


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
    for name, run in results["ce"]["runs"].items():
        yield f"ce {name}", run["time"]


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


def test_memory_runs_are_repeated(results):
    for name, run in results["ce"]["runs"].items():
        for key in ("peak_rss_bytes", "baseline_rss_bytes", "extra_rss_bytes"):
            values = run[key]["values"]
            assert len(values) >= MIN_RUNS, (name, key)
            assert run[key]["min"] <= run[key]["median"] <= run[key]["max"], (name, key)


def test_the_machine_is_described(results):
    machine = results["machine"]
    for key in ("cpu_model", "logical_cpus", "cpus_available", "memory_bytes", "caches"):
        assert machine[key], key
    assert any(c["level"] == "3" for c in machine["caches"])
    for part in PARTS:
        for when in ("load_average_before", "load_average_after"):
            load = results[part][when]
            assert set(load) == {"1min", "5min", "15min"}, (part, when)
            assert all(v >= 0 for v in load.values())


def test_the_bounds_controls_are_present(results):
    wanted = {"max_alone", "sum_exp_alone", "sum_exp_shifted_f32",
              "max_and_sum_exp_independent", "numpy_copy_preallocated"}
    for run in results["bounds"]["runs"]:
        assert wanted <= set(run["timings"]), run["shape"]
