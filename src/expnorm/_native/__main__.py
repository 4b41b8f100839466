"""``python -m expnorm._native``: build the kernels now, and fail loudly if that is not possible."""

import sys

import jax

from expnorm import _native

with jax.enable_x64(True):
    ok = _native.available()
print(_native.status())
sys.exit(0 if ok else 1)
