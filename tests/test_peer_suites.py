"""The peers' own test suites (optax, scipy) run against expnorm: "drop-in" checked by them.

``tests/peers/run_peer_suites.py`` runs optax 0.2.8's ``losses/_classification_test.py``
and scipy 1.17.1's ``special/tests/test_logsumexp.py`` (JAX array backend) from
site-packages, each twice: unswapped (control) and with the peer functions rebound to
expnorm's. Every swapped test must pass or be a documented difference
(``tests/peers/differences.toml``, rows of the README's "Differences from jax, optax and
scipy" table).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "tests" / "peers"
_spec = importlib.util.spec_from_file_location("run_peer_suites", PEERS / "run_peer_suites.py")
run_peer_suites = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_peer_suites)


@pytest.fixture(scope="module")
def peer_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("peers") / "peers.json"
    proc = subprocess.run([sys.executable, str(PEERS / "run_peer_suites.py"), "--json", str(out)],
                          env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True,
                          text=True, timeout=3600)
    print(proc.stdout)
    assert out.exists(), proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    data["stdout"] = proc.stdout
    return data


def _runs(data, swap):
    return {r["suite"]: r for r in data["runs"] if r["swap"] == swap}


@pytest.mark.slow
@pytest.mark.parametrize("suite", ["optax", "scipy"])
def test_control_passes_fully(peer_runs, suite):
    run = _runs(peer_runs, False)[suite]
    assert run["counted"] > 0
    bad = {t: r for t, r in run["tests"].items()
           if r["outcome"] not in ("passed", "peer-xfailed", "skipped")}
    assert not bad, bad
    assert run["counts"].get("passed", 0) > 0


@pytest.mark.slow
@pytest.mark.parametrize("suite", ["optax", "scipy"])
def test_swapped_passes_or_is_documented(peer_runs, suite):
    control, run = _runs(peer_runs, False)[suite], _runs(peer_runs, True)[suite]
    assert run["counted"] > 0 and run["counted"] == control["counted"]
    bad = run_peer_suites.problems(control, run)
    assert not bad, "\n".join(bad)


def test_differences_file_is_well_formed():
    data = tomllib.loads(run_peer_suites.DIFFERENCES.read_text())
    assert data["difference"]
    for d in data["difference"]:
        assert d["row"].strip() and d["reason"].strip() and d["tests"]
        for pattern in d["tests"]:
            assert pattern.split("::")[0] in run_peer_suites.MODULES, pattern


def test_difference_rows_are_in_the_readme_table():
    """Each difference names a row of the README's "Differences from jax, optax and scipy"."""
    readme = (ROOT / "README.md").read_text()
    assert "Differences from jax, optax and scipy" in readme
    table = readme.split("Differences from jax, optax and scipy", 1)[1]
    rows = {line.split("|")[1].strip() for line in table.splitlines()
            if line.startswith("|") and line.count("|") > 2}
    for d in tomllib.loads(run_peer_suites.DIFFERENCES.read_text())["difference"]:
        assert d["row"] in rows, d["row"]


def _run(swap, tests, counted=None, unused=()):
    return {"suite": "s", "swap": swap, "counted": len(tests) if counted is None else counted,
            "tests": {t: {"outcome": o, "row": None, "cause": "c"} for t, o in tests.items()},
            "unused_differences": list(unused)}


def test_the_check_can_fail():
    """problems() flags each way a run can be wrong (so the slow tests above can fail)."""
    ok = {"s::a": "passed", "s::b": "passed"}
    assert run_peer_suites.problems(_run(False, ok), _run(True, ok)) == []
    assert run_peer_suites.problems(_run(False, ok), _run(True, {**ok, "s::b": "documented"})) == []
    cases = [
        (_run(False, {}), _run(True, {})),  # vacuous
        (_run(False, {**ok, "s::b": "failed"}), _run(True, ok)),  # control fails
        (_run(False, ok), _run(True, {**ok, "s::b": "failed"})),  # swapped fails
        (_run(False, ok), _run(True, {**ok, "s::b": "error"})),
        (_run(False, ok), _run(True, {**ok, "s::b": "xpass-strict"})),  # difference vanished
        (_run(False, ok), _run(True, {"s::a": "passed"})),  # different selections
        (_run(False, ok), _run(True, ok, unused=["s::gone*"])),  # stale difference
    ]
    for control, swapped in cases:
        assert run_peer_suites.problems(control, swapped), (control, swapped)
