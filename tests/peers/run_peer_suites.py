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


def start(suite: str, swap: bool, tmp: Path) -> dict:
    """Start one pytest process (control or swapped); returns what finish() needs."""
    kind = "swapped" if swap else "control"
    report = tmp / f"{suite}-{kind}.json"
    ini = tmp / "pytest.ini"
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
    log = open(tmp / f"{suite}-{kind}.log", "w+")
    proc = subprocess.Popen(cmd, env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT,
                            text=True)
    return {"proc": proc, "log": log, "report": report, "t0": time.perf_counter(),
            "name": f"{suite} {kind}"}


def finish(run: dict, verbose: bool = False) -> dict:
    rc = run["proc"].wait()
    elapsed = time.perf_counter() - run["t0"]
    run["log"].seek(0)
    text = run["log"].read()
    run["log"].close()
    if verbose:
        print(text[-6000:])
    if not run["report"].exists():
        raise RuntimeError(f"{run['name']} wrote no report (exit {rc}):\n{text[-4000:]}")
    out = json.loads(run["report"].read_text())
    out["seconds"] = round(elapsed, 1)
    out["returncode"] = rc
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
    suites = args.suite or sorted(MODULES)
    with tempfile.TemporaryDirectory() as tmp:
        for suite in suites:
            # control and swapped side by side (two processes)
            runs = [start(suite, False, Path(tmp)), start(suite, True, Path(tmp))]
            control, swapped = (finish(r, args.verbose) for r in runs)
            print(line(control))
            print(line(swapped), flush=True)
            results += [control, swapped]
            bad += problems(control, swapped)
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": results, "problems": bad}, indent=1))
    for b in bad:
        print("FAIL", b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
