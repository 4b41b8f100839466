"""The float32 CPU kernels (``kernels.cc``), compiled on first use and called through the XLA FFI.

``available()`` tells whether they are in use; ``status()`` says why not. When they cannot be
built (no C++ compiler, a platform other than Linux/macOS x86-64/arm64), expnorm computes the
same results with XLA operations, more slowly, and warns once.

The shared library is built with the system's ``c++`` (or ``$CXX``) against the XLA FFI headers
that ship with jaxlib, into this folder when it is writable, else into ``~/.cache/expnorm``.
Its file name holds a hash of the source, the flags, the jaxlib version and the CPU's feature
flags (the code is built for this CPU), so a change of any of them rebuilds it. ``make install`` builds it up front (``python -m expnorm._native``).

Softmax and log-softmax can write their result into the input's buffer (``inplace=True``,
which ``expnorm.softmax(x, overwrite_input=True)`` passes): under
``jax.jit(f, donate_argnums=0)`` no output array is then allocated; without donation XLA copies
the input first, so the caller's array is never changed, but the copy costs a pass over fresh
memory. By default they write a fresh output.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "kernels.cc"
FLAGS = ["-O3", "-march=native", "-mprefer-vector-width=512", "-fno-trapping-math", "-fopenmp", "-fPIC", "-shared", "-std=c++17"]
TARGETS = {"expnorm_softmax_f32": "ExpnormSoftmaxF32",
           "expnorm_log_softmax_f32": "ExpnormLogSoftmaxF32",
           "expnorm_row_stats_f32": "ExpnormRowStatsF32"}

_state: dict = {}


def _cpu_flags() -> str:
    """The CPU's feature flags: -march=native code must not run on another CPU."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        return platform.processor()


def _library_path() -> Path:
    import jaxlib

    key = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode()
                         + jaxlib.__version__.encode() + _cpu_flags().encode()).hexdigest()[:16]
    name = f"libexpnorm_kernels_{key}.so"
    if os.access(HERE, os.W_OK):
        return HERE / name
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "expnorm" / name


def _compile(out: Path) -> None:
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not cxx:
        raise RuntimeError("no C++ compiler found (set CXX, or install g++)")
    out.parent.mkdir(parents=True, exist_ok=True)
    # build into a temporary file, then rename: two processes may build at once
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    cmd = [cxx, *FLAGS, f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", tmp]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        os.unlink(tmp)
        raise RuntimeError(f"compiling {SOURCE.name} failed:\n{' '.join(cmd)}\n{proc.stderr[-2000:]}")
    os.replace(tmp, out)


def _load() -> None:
    path = _library_path()
    if not path.exists():
        _compile(path)
    lib = ctypes.cdll.LoadLibrary(str(path))
    for target, symbol in TARGETS.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
    _state["path"] = path


def available() -> bool:
    """Whether the compiled kernels are loaded (built on the first call if needed)."""
    if "ok" not in _state:
        if os.environ.get("EXPNORM_DISABLE_NATIVE"):
            _state.update(ok=False, reason="disabled by EXPNORM_DISABLE_NATIVE")
        else:
            try:
                _load()
                _state.update(ok=True, reason=f"loaded {_state['path']}")
            except Exception as err:  # noqa: BLE001 - any failure means: use the XLA path
                _state.update(ok=False, reason=str(err))
                warnings.warn(f"expnorm: native float32 kernels unavailable, using the slower "
                              f"XLA path ({err})", RuntimeWarning, stacklevel=2)
    return _state["ok"]


def status() -> str:
    """One line: where the kernels were loaded from, or why they are not used."""
    available()
    return _state["reason"]


def usable(x, axes, kept, out_dtype) -> bool:
    """The kernels take float32 rows over the last axis to float32 results, with no mask, on
    the CPU backend."""
    return (x.dtype == jnp.float32 and jnp.dtype(out_dtype) == jnp.float32 and kept is None
            and x.ndim >= 1 and x.size > 0 and tuple(axes) == (x.ndim - 1,)
            and jax.default_backend() == "cpu" and available())


# With inplace=True, softmax and log-softmax write their result into the input's buffer (the
# output aliases operand 0). When the caller donates the input (``jax.jit(f, donate_argnums=0)``),
# XLA then allocates no output at all; when the input is still needed (not donated, or used
# again), XLA copies it first and the kernel overwrites the copy. Safe because every path of
# kernels.cc reads a row completely (max, sum) before it writes any of that row's outputs,
# and the output loops after that are elementwise (y[i] from x[i] only); rows, and the
# stretches of a row split over threads, are disjoint. See tests/test_inplace.py.
# The default is a fresh output: most callers do not donate, and for them the alias only
# adds XLA's copy (benchmarks/inplace.py measures both).
INPLACE = False


def _same_shape_call(target, x, inplace):
    inplace = INPLACE if inplace is None else inplace
    call = jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(x.shape, jnp.float32),
                            vmap_method="broadcast_all",
                            input_output_aliases={0: 0} if inplace else None)
    return call(x)


def softmax_f32(x, inplace: bool | None = None):
    """Softmax of float32 ``x`` over its last axis (see ``kernels.cc``), written into ``x``'s
    buffer when ``inplace`` (default: ``INPLACE``, off) and ``x`` is donated."""
    return _same_shape_call("expnorm_softmax_f32", x, inplace)


def log_softmax_f32(x, inplace: bool | None = None):
    """Log-softmax of float32 ``x`` over its last axis (see ``kernels.cc``), in place as
    :func:`softmax_f32`."""
    return _same_shape_call("expnorm_log_softmax_f32", x, inplace)


def row_stats_f32(x):
    """``(m, t)`` per row of float32 ``x`` (last axis): the max (float32) and
    ``t = sum_{x_i != m} exp(x_i - m) + (ties - 1)`` (float64); see ``kernels.cc``."""
    rows = x.shape[:-1]
    call = jax.ffi.ffi_call("expnorm_row_stats_f32",
                            (jax.ShapeDtypeStruct(rows, jnp.float32),
                             jax.ShapeDtypeStruct(rows, jnp.float64)),
                            vmap_method="broadcast_all")
    return call(x)

