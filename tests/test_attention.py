"""Tiled (FlashAttention-style) attention equals plain attention; its memory grows like N."""

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
