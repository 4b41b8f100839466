"""Vocabulary-parallel softmax and cross-entropy on 8 simulated CPU devices.

XLA_FLAGS must be set before jax is imported, so the check runs in a subprocess; a second test
runs the same functions in this process on a one-device mesh.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np

import expnorm

SCRIPT = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import jax, jax.numpy as jnp, numpy as np
    import expnorm
    assert jax.device_count() == 8, jax.device_count()
    mesh = jax.make_mesh((8,), ("vocab",))
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(7, 96)) * 6).astype(np.float32)
    x[0, 3] = 40.0              # one dominant entry: the loss at 3 is tiny (log1p matters)
    x[1, :] = -np.inf           # empty row
    x[2, 10] = x[2, 50] = np.inf
    x[3, 7] = np.nan
    x[4, 9] = np.inf
    x[5, 20] = x[5, 80] = 30.0  # tied maxima on two different devices
    labels = rng.integers(0, 96, 7).astype(np.int32)
    labels[0], labels[4], labels[5] = 3, 9, 80
    p = np.asarray(expnorm.vocab_parallel_softmax(jnp.asarray(x), mesh))
    p1 = np.asarray(expnorm.softmax(jnp.asarray(x)))
    l = np.asarray(expnorm.vocab_parallel_cross_entropy(jnp.asarray(x), jnp.asarray(labels), mesh))
    l1 = np.asarray(expnorm.softmax_cross_entropy_with_integer_labels(jnp.asarray(x), jnp.asarray(labels)))
    np.save("p.npy", p); np.save("p1.npy", p1); np.save("l.npy", l); np.save("l1.npy", l1)
    print(len(expnorm.vocab_parallel_softmax(jnp.asarray(x), mesh).sharding.device_set))
""")


def _ulps(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    both = np.isfinite(a) & np.isfinite(b)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_array_equal(a[~both & ~np.isnan(a)], b[~both & ~np.isnan(b)])
    return np.max(np.abs(a[both] - b[both]) / np.spacing(np.abs(b[both]).astype(np.float32)))


def test_eight_devices(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "8"  # the output really is spread over 8
    p, p1 = np.load(tmp_path / "p.npy"), np.load(tmp_path / "p1.npy")
    l, l1 = np.load(tmp_path / "l.npy"), np.load(tmp_path / "l1.npy")
    assert _ulps(p, p1) <= 1.0
    assert _ulps(l, l1) <= 1.0
    assert 0 < l[0] < 1e-10  # the confident loss is not rounded to 0


def test_one_device_mesh():
    mesh = jax.make_mesh((1,), ("vocab",))
    x = (np.random.default_rng(1).normal(size=(4, 33)) * 3).astype(np.float32)
    labels = np.array([0, 5, 32, 7], np.int32)
    p = expnorm.vocab_parallel_softmax(x, mesh)
    l = expnorm.vocab_parallel_cross_entropy(x, labels, mesh)
    assert _ulps(p, expnorm.softmax(x)) <= 1.0
    assert _ulps(l, expnorm.softmax_cross_entropy_with_integer_labels(x, labels)) <= 1.0
