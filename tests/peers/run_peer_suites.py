"""Run optax's and scipy's own tests of the functions expnorm replaces, from site-packages.

Each suite runs twice, each in its own process: as a control (the peer's own functions) and
with the peer functions rebound to expnorm's (``peer_plugin.py``). In the swapped run every
selected test must pass, or be listed in ``differences.toml`` (then it must fail: it is
marked ``xfail(strict=True)``, so a difference that disappears is reported too).

Usage: python tests/peers/run_peer_suites.py [--suite optax|scipy] [--json OUT] [-v]
Prints one summary line per suite and run; exits 1 if any check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DIFFERENCES = HERE / "differences.toml"
SITE = Path(sysconfig.get_paths()["purelib"])

ENV = {
    "optax": {},
    # scipy's conftest reads this at import: only the JAX backend (x64 is switched on there)
    "scipy": {"SCIPY_ARRAY_API": '["jax.numpy"]'},
}
MODULES = {
    "optax": "optax/losses/_classification_test.py",
    "scipy": "scipy/special/tests/test_logsumexp.py",
}


def run_one(suite: str, swap: bool, verbose: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        ini = Path(tmp) / "pytest.ini"
        ini.write_text("[pytest]\n")  # not the project's pytest settings
        cmd = [sys.executable, "-m", "pytest", str(SITE / MODULES[suite]),
               "-c", str(ini), "--rootdir", str(SITE), "--confcutdir", str(SITE),
               "-p", "peer_plugin", "-p", "no:cacheprovider", "-q", "--no-header",
               "-W", "ignore::DeprecationWarning",
               "--peer-suite", suite, "--peer-differences", str(DIFFERENCES),
               "--peer-report", str(report)]
        if swap:
            cmd.append("--peer-swap")
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONDONTWRITEBYTECODE": "1",
               "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
               **ENV[suite]}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True)
        elapsed = time.perf_counter() - t0
        if not report.exists():
            raise RuntimeError(f"{suite} run wrote no report (exit {proc.returncode}):\n"
                               f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        out = json.loads(report.read_text())
        out["seconds"] = round(elapsed, 1)
        out["returncode"] = proc.returncode
        if verbose:
            print(proc.stdout[-6000:])
        return out


def problems(control: dict, swapped: dict) -> list[str]:
    """Everything that makes the check fail, one line each."""
    bad = []
    suite = control["suite"]
    if control["counted"] == 0 or swapped["counted"] == 0:
        bad.append(f"{suite}: no test selected (vacuous)")
    if control["counted"] != swapped["counted"]:
        bad.append(f"{suite}: control selected {control['counted']} tests, "
                   f"swapped {swapped['counted']}")
    for tid, r in sorted(control["tests"].items()):
        if r["outcome"] not in ("passed", "skipped", "peer-xfailed"):
            bad.append(f"{tid} [control {r['outcome']}] {r['cause']}")
    for tid, r in sorted(swapped["tests"].items()):
        if r["outcome"] in ("failed", "error"):
            bad.append(f"{tid} [{r['outcome']}] {r['cause']}")
        elif r["outcome"] == "xpass-strict":
            bad.append(f"{tid} [passes, but is listed as difference '{r['row']}']")
    missing = set(swapped["tests"]) ^ set(control["tests"])
    for tid in sorted(missing):
        bad.append(f"{tid}: ran in only one of control / swapped")
    for pattern in swapped["unused_differences"]:
        bad.append(f"differences.toml: '{pattern}' matches no selected test")
    return bad


def line(r: dict) -> str:
    c = r["counts"]
    kind = "swapped" if r["swap"] else "control"
    extra = "".join(f", {k} {v}" for k, v in sorted(c.items())
                    if k not in ("passed", "documented"))
    return (f"{r['suite']:5s} {kind}: counted {r['counted']}, passed {c.get('passed', 0)}, "
            f"documented differences {c.get('documented', 0)}{extra} ({r['seconds']} s)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", choices=sorted(MODULES), action="append")
    ap.add_argument("--json", help="write all results to this file")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    results, bad = [], []
    for suite in args.suite or sorted(MODULES):
        control = run_one(suite, False, args.verbose)
        swapped = run_one(suite, True, args.verbose)
        print(line(control))
        print(line(swapped))
        results += [control, swapped]
        bad += problems(control, swapped)
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": results, "problems": bad}, indent=1))
    for b in bad:
        print("FAIL", b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
