"""Softmax and log-softmax written into the input's buffer (src/expnorm/_native/__init__.py).

With ``overwrite_input=True`` the float32 kernels declare their output as operand 0's buffer
(``input_output_aliases``); by default they write a fresh output. Two things must hold:

* with ``jax.jit(f, donate_argnums=0)`` XLA allocates no new buffer for the result: the
  buffer assignment has no temporary of the array's size and no copy (without the alias it
  has both: the kernel's fresh output, then a copy into the donated buffer);
* the results are bit-identical to those of the kernels with a fresh output, donated or not,
  under jit, vmap and grad, on every path of kernels.cc; an input that is not donated is left
  unchanged (XLA copies it before the kernel overwrites it).

The reference is the same kernel called without the alias (``inplace=False``, the default),
so any difference is the aliasing's (the kernels' accuracy is tests/test_native.py's business).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import expnorm
from expnorm import _native
from test_native import SHAPES as KERNEL_PATH_SHAPES

# One shape per branch of kernels.cc (for_rows / softmax_row), shared with test_native.py.
# With T threads, rows >= 2 T take the rows-in-parallel branch and fewer rows of >= 2**17
# entries are split over threads.
PATHS = KERNEL_PATH_SHAPES
FUNCS = {"softmax": (partial(expnorm.softmax, overwrite_input=True), _native.softmax_f32),
         "log_softmax": (partial(expnorm.log_softmax, overwrite_input=True),
                         _native.log_softmax_f32)}
DEFAULTS = {"softmax": expnorm.softmax, "log_softmax": expnorm.log_softmax}


def setup_module():
    assert _native.available(), f"native kernels not in use: {_native.status()}"


def data(shape, seed=0):
    rng = np.random.default_rng(seed + sum(shape))
    x = (rng.standard_normal(shape) * 6.0).astype(np.float32)
    flat = x.reshape(-1, shape[-1])
    flat[0, 5] = flat[0].max() + 40.0  # a dominant entry
    flat[-1, :3] = flat[-1].max()  # a tie at the max
    return x


def fresh_output(kernel, x):
    """The kernel with a fresh output buffer: the reference."""
    return np.asarray(jax.jit(lambda a: kernel(a, inplace=False))(x))


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(
        a.view(np.uint32), b.view(np.uint32))


# ---- the buffer assignment ----

@pytest.mark.parametrize("name", list(FUNCS))
@pytest.mark.parametrize("shape", [(64, 1024), (2, 2**18 + 3)], ids=["rows", "split rows"])
def test_donated_input_is_the_output_buffer(name, shape):
    """With donation: the result goes to the parameter's buffer, no temporary and no copy."""
    fn, _ = FUNCS[name]
    x = jnp.zeros(shape, jnp.float32)
    compiled = jax.jit(fn, donate_argnums=0).lower(x).compile()
    mem = compiled.memory_analysis()
    hlo = compiled.as_text()
    assert mem.alias_size_in_bytes == x.nbytes  # output = donated parameter
    # without the kernel's alias XLA gives it a fresh f32[shape] temporary and copies it over
    assert mem.temp_size_in_bytes < x.nbytes, f"temp {mem.temp_size_in_bytes} B: a fresh output"
    assert " copy(" not in hlo
    assert "output_to_operand_aliasing" in hlo


@pytest.mark.parametrize("name", list(FUNCS))
def test_without_donation_xla_copies_the_input(name):
    """Not donated: the parameter must survive, so XLA copies it and the kernel writes there."""
    fn, _ = FUNCS[name]
    x = jnp.zeros((64, 1024), jnp.float32)
    compiled = jax.jit(fn).lower(x).compile()
    assert compiled.memory_analysis().alias_size_in_bytes == 0
    assert " copy(" in compiled.as_text()


@pytest.mark.parametrize("name", list(DEFAULTS))
def test_by_default_a_fresh_output_and_no_copy(name):
    """The default (no overwrite_input): not donated, the kernel writes a fresh output and XLA
    copies nothing; donated, the buffer test above would fail (the kernel gets a temporary)."""
    x = jnp.zeros((64, 1024), jnp.float32)
    compiled = jax.jit(DEFAULTS[name]).lower(x).compile()
    assert " copy(" not in compiled.as_text()
    assert compiled.memory_analysis().alias_size_in_bytes == 0
    mem = jax.jit(DEFAULTS[name], donate_argnums=0).lower(x).compile().memory_analysis()
    assert mem.temp_size_in_bytes >= x.nbytes


# ---- the results ----

@pytest.mark.parametrize("name", list(FUNCS))
@pytest.mark.parametrize("shape", list(PATHS.values()), ids=list(PATHS))
def test_bit_identical_donated_or_not(name, shape):
    fn, kernel = FUNCS[name]
    x = data(shape)
    keep = x.copy()
    ref = fresh_output(kernel, x)
    xj = jnp.asarray(x)
    assert same_bits(fn(xj), ref)  # eager: the inner jit does not donate
    assert same_bits(jax.jit(fn)(xj), ref)
    assert same_bits(np.asarray(xj), keep), "the caller's (not donated) array changed"
    donated = jnp.asarray(x)
    out = jax.jit(fn, donate_argnums=0)(donated)
    assert donated.is_deleted()
    assert same_bits(out, ref)
    assert same_bits(x, keep)  # the NumPy array the caller holds is untouched too


@pytest.mark.parametrize("name", list(FUNCS))
@pytest.mark.parametrize("shape", [(3, 50), (2, 2**18 + 3)], ids=["small", "split rows"])
def test_bit_identical_under_vmap(name, shape):
    fn, kernel = FUNCS[name]
    x = np.stack([data(shape, seed=s) for s in range(3)])  # a batch of 3 such arrays
    ref = fresh_output(kernel, x)
    xj = jnp.asarray(x)
    assert same_bits(jax.vmap(fn)(xj), ref)
    assert same_bits(jax.jit(jax.vmap(fn))(xj), ref)
    assert same_bits(jax.jit(jax.vmap(fn), donate_argnums=0)(jnp.asarray(x)), ref)
    assert same_bits(np.asarray(xj), x)


def _loss(fn, w):
    return lambda a: jnp.sum(fn(a) * w)


@pytest.mark.parametrize("name", list(FUNCS))
@pytest.mark.parametrize("shape", list(PATHS.values()), ids=list(PATHS))
def test_gradients_bit_identical_to_the_fresh_output_path(name, shape):
    """The custom_jvp keeps p (the kernel's output, here in the input's buffer) as residual."""
    fn, _ = FUNCS[name]
    x = data(shape)
    w = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    ref_v, ref_g = (np.asarray(r) for r in
                    jax.jit(jax.value_and_grad(_loss(DEFAULTS[name], w)))(x))
    xj = jnp.asarray(x)
    v, g = jax.jit(jax.value_and_grad(_loss(fn, w)))(xj)
    assert same_bits(v, ref_v) and same_bits(g, ref_g)
    assert same_bits(np.asarray(xj), x)
    v, g = jax.jit(jax.value_and_grad(_loss(fn, w)), donate_argnums=0)(jnp.asarray(x))
    assert same_bits(v, ref_v) and same_bits(g, ref_g)
    g = jax.jit(jax.grad(_loss(fn, w)))(xj)  # also the plain grad, and the input is still there
    assert same_bits(g, ref_g) and same_bits(np.asarray(xj), x)


@pytest.mark.parametrize("name", list(FUNCS))
@pytest.mark.parametrize("n", [50, 100_003, 2**18 + 3], ids=["short", "cached", "split"])
def test_special_rows_in_place(name, n):
    """NaN, all -inf and +inf rows (the +inf branch reads x[i] while writing y[i]), one row at a
    time so that the long one takes the split-over-threads path."""
    fn, kernel = FUNCS[name]
    rows = np.zeros((5, n), np.float32)
    rows[0, 1] = np.nan
    rows[1, :] = -np.inf
    rows[2, :2] = np.inf
    rows[2, -1] = np.inf
    rows[3, 1:] = -np.inf
    rows[4, :] = np.arange(n, dtype=np.float32) % 7
    for r in range(5):
        x = rows[r:r + 1].copy()
        ref = fresh_output(kernel, x)
        assert same_bits(jax.jit(fn, donate_argnums=0)(jnp.asarray(x)), ref), r
        xj = jnp.asarray(x)
        assert same_bits(jax.jit(fn)(xj), ref) and same_bits(np.asarray(xj), x), r


def test_input_used_again_after_the_call():
    """A donated input that the function still needs after the kernel: XLA must copy it."""
    x = data((300, 1000))
    ref = fresh_output(_native.softmax_f32, x)
    softmax, log_softmax = FUNCS["softmax"][0], FUNCS["log_softmax"][0]
    out, again = jax.jit(lambda a: (softmax(a), a + 0.0), donate_argnums=0)(jnp.asarray(x))
    assert same_bits(out, ref) and same_bits(again, x)
    both = jax.jit(lambda a: (softmax(a), log_softmax(a)), donate_argnums=0)(jnp.asarray(x))
    assert same_bits(both[0], ref)
    assert same_bits(both[1], fresh_output(_native.log_softmax_f32, x))
