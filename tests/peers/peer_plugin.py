"""pytest plugin: run a peer's own test module (from site-packages) with its function swapped.

Loaded with ``-p peer_plugin`` by ``tests/peers/run_peer_suites.py`` (which puts this folder
on ``PYTHONPATH``). Options:

  --peer-suite NAME     one of SUITES below (which module, which names to rebind)
  --peer-swap           rebind the peer functions to expnorm's before the test module is
                        imported (so ``from scipy.special import logsumexp`` inside the test
                        module gets expnorm's too); without it the run is the control
  --peer-differences F  TOML file of documented differences (tests expected to fail with
                        expnorm); they are marked ``xfail(strict=True)`` in the swapped run
  --peer-report F       write the outcome of every selected test there (JSON)

Only tests whose code refers to a swapped name are kept (the rest are deselected), so the
count is the number of the peer's tests that exercise the functions expnorm replaces.
"""

from __future__ import annotations

import fnmatch
import functools
import inspect
import json
import tomllib
import types
from pathlib import Path

import pytest

DOC_PREFIX = "expnorm difference: "


def _scipy_logsumexp_wrapper():
    import expnorm

    def logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False):
        """scipy.special.logsumexp's signature, computed by expnorm.logsumexp."""
        return expnorm.logsumexp(a, axis=axis, b=b, keepdims=keepdims, return_sign=return_sign)

    return logsumexp


def _swap_optax():
    import expnorm
    import optax
    import optax.losses
    from optax.losses import _classification

    names = ["softmax_cross_entropy", "softmax_cross_entropy_with_integer_labels"]
    originals = {n: getattr(_classification, n) for n in names}
    for n in names:
        for mod in (_classification, optax.losses, optax):
            setattr(mod, n, getattr(expnorm, n))
    return originals, {n: getattr(expnorm, n) for n in names}


def _swap_scipy():
    import scipy.special
    from scipy._lib import _array_api
    from scipy.special import _logsumexp

    original = scipy.special.logsumexp
    wrapper = _scipy_logsumexp_wrapper()
    # The test module decorates its classes with make_xp_test_case(logsumexp), which looks the
    # function up in scipy's capabilities table: give the wrapper the original's entry.
    _array_api.xp_capabilities_table[wrapper] = _array_api.xp_capabilities_table[original]
    scipy.special.logsumexp = wrapper
    _logsumexp.logsumexp = wrapper
    return {"logsumexp": original}, {"logsumexp": wrapper}


SUITES = {
    "optax": {
        "module": "optax/losses/_classification_test.py",
        "names": ["softmax_cross_entropy", "softmax_cross_entropy_with_integer_labels"],
        "swap": _swap_optax,
        # the test module calls them as attributes of this module
        "binding": lambda mod, name: getattr(mod._classification, name),
        "needs_fixture": None,
    },
    "scipy": {
        "module": "scipy/special/tests/test_logsumexp.py",
        "names": ["logsumexp"],
        "swap": _swap_scipy,
        "binding": lambda mod, name: mod.__dict__[name],
        # only the tests that run on the array backend (JAX arrays); the others pass numpy
        # arrays or lists, which are not what expnorm replaces
        "needs_fixture": "xp",
    },
}


def pytest_addoption(parser):
    g = parser.getgroup("peers", "expnorm peer suites")
    g.addoption("--peer-suite", choices=sorted(SUITES), required=True)
    g.addoption("--peer-swap", action="store_true", default=False)
    g.addoption("--peer-differences", default=None)
    g.addoption("--peer-report", default=None)


class _State:
    suite: str
    swap: bool
    originals: dict
    replacements: dict
    differences: list  # [(pattern, row, reason)]
    used_patterns: set
    selected: dict  # test id -> info
    results: dict  # test id -> outcome


STATE = _State()


def test_id(nodeid: str) -> str:
    """``suite::Class::test[params]`` (the node id without the file path)."""
    return STATE.suite + "::" + nodeid.split("::", 1)[1]


def load_differences(path) -> list:
    if not path:
        return []
    data = tomllib.loads(Path(path).read_text())
    out = []
    for d in data.get("difference", []):
        for pattern in d["tests"]:
            out.append((pattern, d["row"], d["reason"]))
    return out


def pytest_configure(config):
    STATE.suite = config.getoption("--peer-suite")
    STATE.swap = config.getoption("--peer-swap")
    STATE.differences = load_differences(config.getoption("--peer-differences"))
    STATE.used_patterns = set()
    STATE.selected, STATE.results = {}, {}
    STATE.originals, STATE.replacements = {}, {}
    spec = SUITES[STATE.suite]
    if STATE.swap:
        # before collection, hence before the test module is imported
        STATE.originals, STATE.replacements = spec["swap"]()


def _code_names(code) -> set:
    names = set(code.co_names)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            names |= _code_names(c)
    return names


def _test_function(item):
    fn = getattr(item, "obj", None)
    fn = getattr(fn, "__func__", fn)
    return inspect.unwrap(fn) if fn is not None else None


def _refers_to(item, names) -> bool:
    fn = _test_function(item)
    code = getattr(fn, "__code__", None)
    return code is not None and bool(_code_names(code) & set(names))


def pytest_collection_modifyitems(session, config, items):
    spec = SUITES[STATE.suite]
    keep, drop = [], []
    checked_modules = set()
    for item in items:
        ok = _refers_to(item, spec["names"])
        fixture = spec["needs_fixture"]
        if ok and fixture is not None:
            ok = fixture in getattr(item, "fixturenames", ())
        if not ok:
            drop.append(item)
            continue
        keep.append(item)
        mod = item.module
        if id(mod) not in checked_modules:
            checked_modules.add(id(mod))
            # harness self-check: the test module sees the function of this run
            for name in spec["names"]:
                bound = spec["binding"](mod, name)
                if STATE.swap:
                    assert bound is STATE.replacements[name], f"{name} not rebound in {mod}"
                else:
                    assert bound.__module__.split(".")[0] != "expnorm", name
        tid = test_id(item.nodeid)
        STATE.selected[tid] = None
        if STATE.swap:
            for pattern, row, reason in STATE.differences:
                if fnmatch.fnmatchcase(tid, pattern):
                    STATE.used_patterns.add(pattern)
                    STATE.selected[tid] = row
                    item.add_marker(pytest.mark.xfail(
                        strict=True, reason=f"{DOC_PREFIX}{row}: {reason}"))
                    break
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep


def pytest_runtest_logreport(report):
    tid = test_id(report.nodeid)
    if tid not in STATE.selected:
        return
    wx = getattr(report, "wasxfail", None)
    if report.when == "call" or report.outcome != "passed":
        prev = STATE.results.get(tid)
        if prev is not None and prev["outcome"] != "passed":
            return  # keep the first non-passing phase (e.g. an error in teardown after a pass)
        if report.skipped and wx is not None:
            outcome = "documented" if wx.startswith(DOC_PREFIX) else "peer-xfailed"
        elif report.skipped:
            outcome = "skipped"
        elif report.passed and wx is not None:
            outcome = "xpassed"  # only non-strict xfails get here
        elif report.passed:
            outcome = "passed"
        else:
            # a strict xfail that passed is reported as failed with "[XPASS(strict)]"
            text = str(report.longrepr)
            outcome = "xpass-strict" if "XPASS(strict)" in text else (
                "failed" if report.when == "call" else "error")
        cause = ""
        if outcome in ("failed", "error") and report.longrepr is not None:
            crash = getattr(report.longrepr, "reprcrash", None)
            cause = crash.message if crash is not None else str(report.longrepr)[-400:]
            cause = cause.strip().splitlines()[0][:300] if cause.strip() else ""
        STATE.results[tid] = {"outcome": outcome, "row": STATE.selected[tid], "cause": cause}


def summary() -> dict:
    counts = {}
    for r in STATE.results.values():
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    # a documented difference of this suite that matches no selected test is stale
    unused = [p for p, _, _ in STATE.differences
              if p.startswith(STATE.suite + "::") and p not in STATE.used_patterns]
    if not STATE.swap:
        unused = []
    return {"suite": STATE.suite, "swap": STATE.swap, "counted": len(STATE.selected),
            "counts": counts, "unused_differences": sorted(set(unused)),
            "tests": STATE.results}


def pytest_sessionfinish(session, exitstatus):
    path = session.config.getoption("--peer-report")
    if path:
        Path(path).write_text(json.dumps(summary(), indent=1, sort_keys=True))
