"""Chunked linear cross-entropy: same losses and gradients as the naive (N, V)-logits version."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import expnorm

N, D, V = 40, 16, 203  # V not a multiple of the chunk: the remainder chunk is exercised


def _data(seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(N, D)) * scale).astype(np.float32)
    w = rng.normal(size=(V, D)).astype(np.float32)
    labels = rng.integers(0, V, N).astype(np.int32)
    return jnp.asarray(x), jnp.asarray(w), jnp.asarray(labels)


def _reference_losses(x, w, labels):
    """float64 NumPy: logsumexp(x w^T) - x w_label."""
    z = np.asarray(x, np.float64) @ np.asarray(w, np.float64).T
    m = z.max(-1)
    lse = m + np.log(np.exp(z - m[:, None]).sum(-1))
    return lse - z[np.arange(len(labels)), np.asarray(labels)]


@pytest.mark.parametrize("chunk", [16, 64, 203, 1000])
def test_losses_match(chunk):
    x, w, labels = _data()
    got = np.asarray(expnorm.linear_cross_entropy(x, w, labels, chunk_size=chunk))
    # same logits, accurate cross-entropy: agree to float32 rounding of the matmul
    same_logits = np.asarray(expnorm.softmax_cross_entropy_with_integer_labels(x @ w.T, labels))
    np.testing.assert_allclose(got, same_logits, rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(got, _reference_losses(x, w, labels), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_reductions(reduction):
    x, w, labels = _data(1)
    got = float(expnorm.linear_cross_entropy(x, w, labels, reduction=reduction, row_chunk_size=16))
    ref = _reference_losses(x, w, labels)
    want = ref.sum() if reduction == "sum" else ref.mean()
    assert got == pytest.approx(want, rel=1e-5)


def _naive_grads(x, w, labels, weights):
    f = lambda x, w: jnp.sum(weights * expnorm.naive_linear_cross_entropy(x, w, labels))  # noqa: E731
    return jax.grad(f, argnums=(0, 1))(x, w)


def test_gradients_per_example():
    x, w, labels = _data(2)
    weights = jnp.asarray(np.random.default_rng(3).random(N).astype(np.float32))  # any cotangent
    f = lambda x, w: jnp.sum(weights * expnorm.linear_cross_entropy(x, w, labels, chunk_size=32))  # noqa: E731
    gx, gw = jax.jit(jax.grad(f, argnums=(0, 1)))(x, w)
    rx, rw = _naive_grads(x, w, labels, weights)
    np.testing.assert_allclose(gx, rx, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gw, rw, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_gradients_fused(reduction):
    x, w, labels = _data(4)
    scale = 1.0 if reduction == "sum" else 1.0 / N
    f = lambda x, w: 3.0 * expnorm.linear_cross_entropy(  # noqa: E731
        x, w, labels, reduction=reduction, row_chunk_size=16)
    gx, gw = jax.jit(jax.grad(f, argnums=(0, 1)))(x, w)
    rx, rw = _naive_grads(x, w, labels, jnp.full((N,), 3.0 * scale, jnp.float32))
    # float32 sums of N terms of size up to max|r|: absolute rounding ~ N u max|r|, not 1e-6
    np.testing.assert_allclose(gx, rx, rtol=1e-4, atol=4e-6 * float(np.max(np.abs(rx))))
    np.testing.assert_allclose(gw, rw, rtol=1e-4, atol=4e-6 * float(np.max(np.abs(rw))))


def test_large_logits_and_bad_labels():
    x, w, labels = _data(5, scale=40.0)  # logits of order 1e2-1e3: naive exp would overflow
    got = np.asarray(expnorm.linear_cross_entropy(x, w, labels, chunk_size=50))
    np.testing.assert_allclose(got, _reference_losses(x, w, labels), rtol=1e-4, atol=1e-3)
    bad = labels.at[0].set(V).at[1].set(-1)
    out = np.asarray(jax.jit(lambda l: expnorm.linear_cross_entropy(x, w, l, chunk_size=50))(bad))
    assert np.isnan(out[0]) and np.isnan(out[1]) and np.all(np.isfinite(out[2:]))
    with pytest.raises(ValueError):
        expnorm.linear_cross_entropy(x, w[:, :3], labels)
    with pytest.raises(ValueError):
        expnorm.linear_cross_entropy(x, w, labels, reduction="max")


def test_no_logits_matrix_in_memory():
    """Compiled temporaries of forward+backward stay far below one (N, V) float32 matrix."""
    n, d, v = 512, 64, 32768
    xs = jax.ShapeDtypeStruct((n, d), jnp.float32)
    ws = jax.ShapeDtypeStruct((v, d), jnp.float32)
    ls = jax.ShapeDtypeStruct((n,), jnp.int32)

    def temp(loss):
        g = jax.value_and_grad(lambda x, w, l: jnp.mean(loss(x, w, l)), argnums=(0, 1))
        return jax.jit(g).lower(xs, ws, ls).compile().memory_analysis().temp_size_in_bytes

    chunked = temp(lambda x, w, l: expnorm.linear_cross_entropy(x, w, l, chunk_size=1024))
    naive = temp(expnorm.naive_linear_cross_entropy)
    assert naive >= n * v * 4  # the naive version does hold the logits
    assert chunked < n * v * 4 / 4


def test_confident_loss_keeps_its_digits():
    """A tiny loss (label logit far above the rest) agrees with mpmath to float32 accuracy."""
    from expnorm import numerics as Nm

    x = jnp.asarray(np.eye(4, 8, dtype=np.float32))
    w = jnp.asarray(np.diag(np.array([30.0, 25.0, 3.0, 1.0, 0, 0, 0, 0], np.float32))[:, :8])
    labels = jnp.arange(4, dtype=jnp.int32)
    z = np.asarray(x) @ np.asarray(w).T  # exact small integers
    for reduction in ("none",):
        got = np.asarray(expnorm.linear_cross_entropy(x, w, labels, chunk_size=3))
        for i in range(4):
            ref = Nm.ref_cross_entropy_label(z[i].astype(np.float32), i)
            assert Nm.ulp_error(got[i], ref, np.float32) <= 1.0


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_gradients_have_the_input_dtype(dtype, reduction):
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((6, 4)), dtype)
    w = jnp.asarray(rng.standard_normal((10, 4)), dtype)
    labels = jnp.asarray(rng.integers(0, 10, 6), jnp.int32)

    def loss(x, w):
        out = expnorm.linear_cross_entropy(x, w, labels, reduction=reduction, chunk_size=4,
                                           row_chunk_size=4)
        return jnp.sum(out.astype(jnp.float32))

    gx, gw = jax.grad(loss, argnums=(0, 1))(x, w)
    assert gx.dtype == dtype and gw.dtype == dtype
    # and they are the same gradients as the naive version's, to the dtype's precision
    scale = 1.0 / x.shape[0] if reduction == "mean" else 1.0
    nx, nw = jax.grad(lambda x, w: scale * jnp.sum(expnorm.naive_linear_cross_entropy(
        x.astype(jnp.float32), w.astype(jnp.float32), labels)), argnums=(0, 1))(x, w)
    tol = 0.05 if dtype != jnp.float32 else 1e-5
    np.testing.assert_allclose(np.asarray(gx, np.float32), np.asarray(nx, np.float32), atol=tol, rtol=tol)
    np.testing.assert_allclose(np.asarray(gw, np.float32), np.asarray(nw, np.float32), atol=tol, rtol=tol)


# ----------------------------------------------------------- the chunk sizes and the fast path


@pytest.mark.parametrize("n, v", [(1024, 32768), (2048, 65536), (4096, 65536), (8192, 131072),
                                  (7, 50), (100_000, 50), (3, 1_000_003)])
def test_chunk_plan_follows_the_problem(n, v):
    from expnorm.chunked import chunk_plan

    plan = chunk_plan(n, v)
    c, r = plan["chunk_size"], plan["row_chunk_size"]
    assert 1 <= c <= v and 1 <= r <= n
    # chunked: an (n, c) float32 block of about 16 MiB (at most 8 columns more, from the
    # evening out); fused: an (r, v) block of at most max(1/8 of the logits, 64 MiB) and at
    # most 256 MiB; unless the floor (256 columns, 64 rows) or the whole problem forces more
    fused_budget = min(max(4 * n * v / 8, 64 * 2**20), 256 * 2**20)
    for size, total, other, floor, budget in ((c, v, n, 256, 16 * 2**20 + 32 * n),
                                              (r, n, v, 64, fused_budget + 32 * v)):
        if size < min(total, floor):
            raise AssertionError(f"{size} below the floor {floor} of {total}")
        if floor < size < total:
            assert 4 * other * size <= budget, plan
        if total % 8 == 0 and size < total:
            assert size % 8 == 0
    assert r <= 512
    assert c == v or -(-v // c) * c - v < c  # the chunks split v almost evenly


def test_chunk_plan_differs_with_the_size():
    from expnorm.chunked import chunk_plan

    plans = {(n, v): chunk_plan(n, v) for n, v in [(1024, 32768), (2048, 65536), (8192, 131072)]}
    # by hand. Chunked: 16 MiB / (4 B x N) columns: 4096 at N = 1024, 2048 at N = 2048, 512 at
    # N = 8192. Fused: (1024, 32768) has 128 MiB of logits, 1/8 is below the 64 MiB floor:
    # 64 MiB / (4 B x 32768) = 512 rows (also the cap); (2048, 65536): 1/8 of 512 MiB = 64 MiB,
    # 256 rows; (8192, 131072): 1/8 of 4 GiB is above the 256 MiB cap: 256 MiB / (4 B x 131072)
    # = 512 rows.
    assert plans[(1024, 32768)] == {"chunk_size": 4096, "row_chunk_size": 512}
    assert plans[(2048, 65536)] == {"chunk_size": 2048, "row_chunk_size": 256}
    assert plans[(8192, 131072)] == {"chunk_size": 512, "row_chunk_size": 512}


@pytest.mark.parametrize("scale", [0.25, 1.0, 3.0])
@pytest.mark.parametrize("argmax_labels", [False, True])
def test_float32_path_against_mpmath(scale, argmax_labels):
    """Wide chunks (the sliced, compensated float32 sum) on exact logits: <= 1 ulp of mpmath.

    Entries are multiples of 1/16 (times a power of 2), so every logit is exact whatever the
    order of the matrix product; with the label at the argmax the losses reach 1e-12.
    """
    from expnorm import numerics as Nm

    rng = np.random.default_rng(11)
    n, d, v = 24, 16, 2000 + 5  # chunks of 700 and 605: 16 slices and leftover columns
    x = (rng.integers(-32, 33, (n, d)) / 16 * scale).astype(np.float32)
    w = (rng.integers(-32, 33, (v, d)) / 16).astype(np.float32)
    z = x.astype(np.float64) @ w.astype(np.float64).T
    labels = (z.argmax(1) if argmax_labels else rng.integers(0, v, n)).astype(np.int32)
    got = np.asarray(expnorm.linear_cross_entropy(x, w, labels, chunk_size=700))
    refs = [Nm.ref_cross_entropy_label(z[i].astype(np.float32), labels[i]) for i in range(n)]
    worst = max(Nm.ulp_error(got[i], refs[i], np.float32) for i in range(n))
    assert worst <= 1.0, worst
    total = float(expnorm.linear_cross_entropy(x, w, labels, reduction="sum", row_chunk_size=8))
    assert Nm.ulp_error(np.float32(total), sum(refs), np.float32) <= 1.0


def test_float32_chunk_state_special_values_match_the_general_one():
    from expnorm._wide import wide_context
    from expnorm.chunked import _chunk_state
    from expnorm.online import online_state

    inf, nan = np.inf, np.nan
    rows = np.array([[0, 1, 2, 3] * 5, [-inf, 0, 1, -inf] * 5, [-inf] * 20, [inf, 1, inf, 0] * 5,
                     [nan, 1, 2, 3] * 5, [5, 5, 5, -inf] * 5, [1e30, -1e30, 3, 4] * 5,
                     [3e38, -3e38, 0, 1] * 5], np.float32)
    for cols in (20, 17, 3):  # 16 slices + leftover, and leftover only
        with wide_context():
            fast = _chunk_state(jnp.asarray(rows[:, :cols]))
            ref = online_state(jnp.asarray(rows[:, :cols]), axis=1)
        np.testing.assert_array_equal(np.asarray(fast.m), np.asarray(ref.m))
        np.testing.assert_allclose(np.asarray(fast.t), np.asarray(ref.t), rtol=1e-7, atol=0)
