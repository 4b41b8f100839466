"""Tiled (FlashAttention-style) attention and its custom VJP equal plain attention; memory grows like N."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import expnorm


def _qkv(b, nq, nk, d, dv, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return (jnp.asarray(rng.normal(size=(b, nq, d)).astype(dtype)),
            jnp.asarray(rng.normal(size=(b, nk, d)).astype(dtype)),
            jnp.asarray(rng.normal(size=(b, nk, dv)).astype(dtype)))


def _reference(q, k, v, causal=False, scale=None):
    """Plain attention in float64 NumPy."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    s = np.einsum("bqd,bkd->bqk", q, k) * (1 / np.sqrt(q.shape[-1]) if scale is None else scale)
    if causal:
        nq, nk = q.shape[1], k.shape[1]
        s = np.where(np.arange(nk)[None, :] <= np.arange(nq)[:, None] + nk - nq, s, -np.inf)
    s = s - s.max(-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bqk,bkd->bqd", p, v)


@pytest.mark.parametrize("nq,nk,block,causal", [(64, 300, 64, False), (300, 300, 64, True),
                                                 (17, 129, 128, False), (50, 50, 512, True),
                                                 (40, 100, 7, True)])
def test_tiled_equals_plain(nq, nk, block, causal):
    q, k, v = _qkv(2, nq, nk, 16, 8)
    ref = _reference(q, k, v, causal)
    got = np.asarray(expnorm.tiled_attention(q, k, v, block_size=block, causal=causal))
    plain = np.asarray(expnorm.attention(q, k, v, causal=causal))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(plain, ref, rtol=1e-5, atol=2e-6)


def test_large_scores_and_scale():
    # scores of order 1e3: exp overflows in float32 without the running max
    q, k, v = _qkv(1, 20, 90, 8, 4, seed=3)
    got = np.asarray(expnorm.tiled_attention(q * 30, k * 30, v, block_size=16, scale=0.5))
    ref = _reference(q * 30, k * 30, v, scale=0.5)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_float64():
    with jax.enable_x64(True):
        q, k, v = _qkv(1, 33, 77, 8, 5, seed=4, dtype=np.float64)
        got = np.asarray(expnorm.tiled_attention(q, k, v, block_size=10, causal=True))
    np.testing.assert_allclose(got, _reference(q, k, v, causal=True), rtol=1e-12, atol=1e-13)


def test_memory_grows_linearly():
    """XLA's compiled memory analysis: temporaries of the tiled version grow ~linearly in N."""
    def temp(f, n):
        spec = jax.ShapeDtypeStruct((n, 64), jnp.float32)
        return jax.jit(f).lower(spec, spec, spec).compile().memory_analysis().temp_size_in_bytes

    tiled = lambda q, k, v: expnorm.tiled_attention(q, k, v, block_size=256)  # noqa: E731
    t1, t2 = temp(tiled, 2048), temp(tiled, 8192)
    assert t2 <= 4 * t1 * 1.25  # 4x the length: at most ~4x the memory (not 16x)
    assert t2 < 8192 * 8192 * 4 / 8  # far below one (N, N) float32 score matrix


def _residual_bytes(f, *args):
    """Bytes of the arrays that jax.vjp keeps for the backward pass of f at args."""
    _, vjp_fn = jax.vjp(f, *args)
    return sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(vjp_fn))


def test_vjp_residuals_are_linear_in_n():
    """The backward pass keeps O(N d) arrays (inputs, output, one LSE per row), not O(N^2) tiles."""
    n, d = 1024, 16
    q, k, v = _qkv(1, n, n, d, d, seed=5)
    tiled = lambda q, k, v: expnorm.tiled_attention(q, k, v, block_size=128, causal=True)  # noqa: E731
    res = _residual_bytes(tiled, q, k, v)
    # q, k, v, the output (4 N d floats) plus per-row statistics: allow 6 N d + a few N
    assert res <= (6 * n * d + 8 * n) * 4, res
    assert res < n * n * 4 / 4  # far below the N x N float32 score matrix


def test_value_and_grad_temporaries_grow_linearly():
    """XLA's compiled memory analysis of value_and_grad: temporaries ~linear in N, not N^2."""
    def temp(n):
        spec = jax.ShapeDtypeStruct((n, 64), jnp.float32)
        loss = lambda q, k, v: jnp.sum(expnorm.tiled_attention(q, k, v, block_size=256))  # noqa: E731
        f = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
        return f.lower(spec, spec, spec).compile().memory_analysis().temp_size_in_bytes

    t1, t2 = temp(2048), temp(8192)
    assert t2 <= 4 * t1 * 1.25, (t1, t2)  # 4x the length: at most ~4x the memory (not 16x)
    assert t2 < 8192 * 8192 * 4 / 8, t2  # far below one (N, N) float32 matrix


# ------------------------------------------------------------------------------ gradients
#
# Reference: attention written here with jax.nn.softmax over the full (Nq, Nk) scores, with an
# explicit visibility matrix; a row that sees no key is defined to output 0 (double where:
# its softmax input is replaced by zeros, so neither pass produces NaN). Its gradients come from
# jax's ordinary autodiff of jax.nn.softmax; they are computed in float64.


def _visibility(nq, nk, causal, mask):
    vis = np.ones((nq, nk), bool) if mask is None else np.broadcast_to(np.asarray(mask), (nq, nk))
    if causal:
        vis = vis & (np.arange(nk)[None, :] <= np.arange(nq)[:, None] + nk - nq)
    return vis


def _ref_attention(q, k, v, vis, scale):
    s = jnp.einsum("...qd,...kd->...qk", q, k) * scale
    s = jnp.where(vis, s, -jnp.inf)
    seen = jnp.any(vis, axis=-1, keepdims=True)
    p = jax.nn.softmax(jnp.where(seen, s, 0.0), axis=-1)
    return jnp.einsum("...qk,...kd->...qd", jnp.where(seen, p, 0.0), v)


def _ref_grads(q, k, v, g, vis, scale):
    """Output and (dq, dk, dv) of the reference for the cotangent g, in float64."""
    with jax.enable_x64(True):
        args = [jnp.asarray(np.asarray(a), jnp.float64) for a in (q, k, v)]
        out, vjp = jax.vjp(lambda q, k, v: _ref_attention(q, k, v, jnp.asarray(vis), scale), *args)
        grads = vjp(jnp.asarray(np.asarray(g), jnp.float64))
        return np.asarray(out), [np.asarray(x) for x in grads]


def _tiled_grads(q, k, v, g, **kw):
    out, vjp = jax.vjp(lambda q, k, v: expnorm.tiled_attention(q, k, v, **kw), q, k, v)
    return np.asarray(out), [np.asarray(x) for x in vjp(g)]


def _assert_close(got, ref, rel):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape
    assert np.all(np.isfinite(got))
    err = np.max(np.abs(got - ref), initial=0.0)
    assert err <= rel * max(np.max(np.abs(ref), initial=0.0), 1e-30), (err, np.max(np.abs(ref)))


@pytest.mark.parametrize("b,nq,nk,d,dv,block,causal", [
    (1, 64, 64, 16, 16, 16, False),     # block divides N
    (2, 100, 100, 8, 8, 32, True),      # block does not divide N (last tile padded)
    (1, 37, 129, 16, 4, 64, False),     # Nq != Nk, dv != d
    (2, 129, 60, 8, 12, 7, True),       # Nq > Nk causal: the first 69 rows see no key
    (1, 50, 50, 4, 4, 512, True),       # one block larger than N
    (3, 1, 33, 8, 8, 5, False),         # a single query
])
def test_grads_equal_plain_float32(b, nq, nk, d, dv, block, causal):
    q, k, v = _qkv(b, nq, nk, d, dv, seed=nq + nk)
    g = jnp.asarray(np.random.default_rng(1).normal(size=(b, nq, dv)).astype(np.float32))
    vis = _visibility(nq, nk, causal, None)
    out, grads = _tiled_grads(q, k, v, g, block_size=block, causal=causal)
    ref_out, ref_grads = _ref_grads(q, k, v, g, vis, 1 / np.sqrt(d))
    _assert_close(out, ref_out, 1e-5)
    for got, ref in zip(grads, ref_grads):
        _assert_close(got, ref, 2e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_grads_equal_plain_float64(causal):
    with jax.enable_x64(True):
        q, k, v = _qkv(2, 45, 77, 8, 5, seed=9, dtype=np.float64)
        g = jnp.asarray(np.random.default_rng(2).normal(size=(2, 45, 5)))
        out, grads = _tiled_grads(q, k, v, g, block_size=10, causal=causal)
        assert all(x.dtype == np.float64 for x in grads)
    ref_out, ref_grads = _ref_grads(q, k, v, g, _visibility(45, 77, causal, None), 1 / np.sqrt(8))
    _assert_close(out, ref_out, 1e-13)
    for got, ref in zip(grads, ref_grads):
        _assert_close(got, ref, 1e-12)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("block", [16, 23])
def test_grads_boolean_mask_with_empty_rows(causal, block):
    """An arbitrary mask, including rows that see no key: zero output, zero dq row, no NaN."""
    nq, nk, d = 70, 90, 8
    rng = np.random.default_rng(3)
    mask = rng.random((nq, nk)) < 0.3
    mask[[0, 5, 40, 69]] = False                 # fully masked rows
    mask[:, 10:40] = False                       # masked columns (a whole tile when block=16)
    q, k, v = _qkv(2, nq, nk, d, d, seed=4)
    g = jnp.asarray(rng.normal(size=(2, nq, d)).astype(np.float32))
    vis = _visibility(nq, nk, causal, mask)
    empty = ~vis.any(-1)
    assert empty[[0, 5, 40, 69]].all()
    out, (dq, dk, dv) = _tiled_grads(q, k, v, g, block_size=block, causal=causal, mask=jnp.asarray(mask))
    ref_out, ref_grads = _ref_grads(q, k, v, g, vis, 1 / np.sqrt(d))
    assert np.all(out[:, empty] == 0) and np.all(dq[:, empty] == 0)
    assert np.all(dk[:, ~vis.any(0)] == 0) and np.all(dv[:, ~vis.any(0)] == 0)  # unseen keys
    _assert_close(out, ref_out, 1e-5)
    for got, ref in zip((dq, dk, dv), ref_grads):
        _assert_close(got, ref, 2e-5)


def test_all_rows_masked():
    """Nothing visible at all: output zero, every gradient exactly zero (not NaN)."""
    q, k, v = _qkv(1, 8, 12, 4, 4)
    mask = jnp.zeros((8, 12), bool)
    out, grads = _tiled_grads(q, k, v, jnp.ones((1, 8, 4)), block_size=5, mask=mask)
    assert np.all(out == 0)
    for x in grads:
        assert np.all(x == 0)


def test_mask_broadcast_over_batch_and_plain_attention_agrees():
    q, k, v = _qkv(3, 20, 30, 8, 8, seed=6)
    mask = np.random.default_rng(7).random((1, 20, 30)) < 0.5
    mask[0, 3] = False
    vis = _visibility(20, 30, True, mask[0])
    ref_out, ref_grads = _ref_grads(q, k, v, jnp.ones((3, 20, 8)), vis, 1 / np.sqrt(8))
    for f in (lambda q, k, v: expnorm.tiled_attention(q, k, v, block_size=8, causal=True, mask=mask),
              lambda q, k, v: expnorm.attention(q, k, v, causal=True, mask=mask)):
        out, vjp = jax.vjp(f, q, k, v)
        _assert_close(out, ref_out, 1e-5)
        for got, ref in zip(vjp(jnp.ones((3, 20, 8), jnp.float32)), ref_grads):
            _assert_close(got, ref, 2e-5)


def test_grad_of_scale_and_large_scores():
    """scale is differentiable (through q * scale); scores of order 1e3 stay finite."""
    q, k, v = _qkv(1, 20, 90, 8, 4, seed=3)
    q, k = q * 30, k * 30

    def loss(f, scale):
        return jnp.sum(jnp.sin(f(q, k, v, scale)))

    tiled = lambda q, k, v, s: expnorm.tiled_attention(q, k, v, block_size=16, scale=s)  # noqa: E731
    with jax.enable_x64(True):
        ref = lambda q, k, v, s: _ref_attention(  # noqa: E731
            *(jnp.asarray(np.asarray(a), jnp.float64) for a in (q, k, v)), np.ones((20, 90), bool), s)
        g_ref = float(jax.grad(lambda s: loss(ref, s))(jnp.float64(0.01)))
    g = float(jax.grad(lambda s: loss(tiled, s))(jnp.float32(0.01)))
    assert np.isfinite(g)
    np.testing.assert_allclose(g, g_ref, rtol=1e-3)


def test_grads_under_jit_and_vmap():
    b, n, d = 4, 40, 8
    q, k, v = _qkv(b, n, n, d, d, seed=8)
    g = jnp.asarray(np.random.default_rng(9).normal(size=(b, n, d)).astype(np.float32))

    def loss(q, k, v, g):  # one sequence, no batch axis
        return jnp.sum(expnorm.tiled_attention(q, k, v, block_size=12, causal=True) * g)

    grads = jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1, 2))))(q, k, v, g)
    _, ref_grads = _ref_grads(q, k, v, g, _visibility(n, n, True, None), 1 / np.sqrt(d))
    for got, ref in zip(grads, ref_grads):
        _assert_close(got, ref, 2e-5)
    # vmap of a per-example mask (batched non-differentiable input)
    masks = np.random.default_rng(10).random((b, n, n)) < 0.4
    masks[:, 0] = False

    def loss_m(q, k, v, g, m):
        return jnp.sum(expnorm.tiled_attention(q, k, v, block_size=12, mask=m) * g)

    grads = jax.vmap(jax.grad(loss_m, argnums=(0, 1, 2)))(q, k, v, g, jnp.asarray(masks))
    for i in range(b):
        _, ref_i = _ref_grads(q[i], k[i], v[i], g[i], masks[i], 1 / np.sqrt(d))
        for got, ref in zip(grads, ref_i):
            _assert_close(got[i], ref, 2e-5)


def test_vjp_matches_finite_differences_float64():
    """The custom VJP is the derivative of the forward pass itself (numerical check)."""
    from jax.test_util import check_grads

    with jax.enable_x64(True):
        q, k, v = _qkv(1, 9, 13, 4, 3, seed=11, dtype=np.float64)
        mask = jnp.asarray(np.random.default_rng(12).random((9, 13)) < 0.6).at[2].set(False)
        f = lambda q, k, v: expnorm.tiled_attention(q, k, v, block_size=4, causal=True, mask=mask)  # noqa: E731
        check_grads(f, (q, k, v), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)
