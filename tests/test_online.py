"""The online normalizer (expnorm.online): associativity, and agreement with expnorm.logsumexp.

Tolerance (documented in expnorm/online.py): float32 results within 1 ulp of the accurate
expnorm.logsumexp / expnorm.softmax (both are within 1 ulp of the exact value, so they may
differ by one rounding: we allow 1 ulp of float32), away from the cancellation m + log1p(t) ~ 0;
float64 within a relative 1e-13. Associativity is checked on the combined states to 1e-13.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import expnorm
from expnorm import numerics as N

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
ROW = 24


def states(draw_len=6):
    return arrays(np.float32, (draw_len,), elements=st.floats(-80, 80, width=32))


_state_jit = jax.jit(expnorm.online_state)
_combine_jit = jax.jit(expnorm.online_combine)


def _state(x):
    return _state_jit(jnp.asarray(x))


def _close(a, b, rtol=1e-13):
    am, at = (np.asarray(v, np.float64) for v in a)
    bm, bt = (np.asarray(v, np.float64) for v in b)
    np.testing.assert_array_equal(am, bm)  # the max part is exactly associative
    np.testing.assert_allclose(at, bt, rtol=rtol, atol=0)


@SETTINGS
@given(states(), states(), states())
def test_combine_is_associative(a, b, c):
    sa, sb, sc = _state(a), _state(b), _state(c)
    comb = _combine_jit
    _close(comb(comb(sa, sb), sc), comb(sa, comb(sb, sc)))
    _close(comb(sa, sb), comb(sb, sa))  # and commutative


@SETTINGS
@given(states(), states())
def test_combine_of_parts_is_state_of_whole(a, b):
    whole = _state(np.concatenate([a, b]))
    _close(_combine_jit(_state(a), _state(b)), whole, rtol=1e-13)


def test_identity_and_special_rows():
    e = expnorm.online_identity((3,))
    s = _state_jit(jnp.array([[1.0, 2.0], [-jnp.inf, -jnp.inf], [jnp.inf, 0.0]], jnp.float32))
    for got in (_combine_jit(e, s), _combine_jit(s, e)):
        np.testing.assert_array_equal(np.asarray(got.m), np.asarray(s.m))
        np.testing.assert_array_equal(np.asarray(got.t), np.asarray(s.t))
    lse = np.asarray(expnorm.online_logsumexp(s))
    assert lse[1] == -np.inf and lse[2] == np.inf
    nan = _state_jit(jnp.array([0.0, jnp.nan], jnp.float32))
    one = _state_jit(jnp.array([1.0, 2.0], jnp.float32))
    assert np.isnan(float(expnorm.online_logsumexp(_combine_jit(one, nan))))
    assert np.isnan(float(expnorm.online_logsumexp(_combine_jit(nan, one))))


def _ulp_diff(got, want, dtype):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return np.max(np.abs(got - want) / np.array([N.ulp(w, dtype) for w in want.ravel()]).reshape(want.shape))


@SETTINGS
@given(arrays(np.float32, (3, 200), elements=st.floats(-30, 30, width=32)),
       st.sampled_from([1, 7, 64, 200]))
def test_streaming_logsumexp_matches_expnorm_float32(x, chunk):
    x = x + np.float32(5.0)  # keep the max positive: no cancellation in m + log1p(t)
    got = expnorm.streaming_logsumexp(jnp.asarray(x), chunk_size=chunk)
    want = expnorm.logsumexp(jnp.asarray(x), axis=-1)
    assert got.dtype == jnp.float32
    assert _ulp_diff(got, want, np.float32) <= 1.0


def test_streaming_logsumexp_mpmath_one_dominant():
    # one dominant entry: t ~ 1e-13, where log(sum) would return exactly the max
    x = np.array([[0.0] + [-30.0] * 9, [10.0, -5.0, -5.0, 9.0, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0]],
                 np.float32)
    got = np.asarray(expnorm.streaming_logsumexp(jnp.asarray(x), chunk_size=3))
    for row, g in zip(x, got):
        ref = N.ref_logsumexp(row)
        assert N.ulp_error(g, ref, np.float32) <= 1.0


def test_streaming_float64_and_stream_api():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 1000)) * 20
    with jax.enable_x64(True):
        got = np.asarray(expnorm.streaming_logsumexp(jnp.asarray(x), chunk_size=100))
    np.testing.assert_allclose(got, scipy.special.logsumexp(x, axis=-1), rtol=1e-13)
    x32 = x.astype(np.float32)
    streamed = np.asarray(expnorm.logsumexp_stream(np.array_split(x32, 7, axis=1)))
    assert _ulp_diff(streamed, expnorm.logsumexp(jnp.asarray(x32), axis=-1), np.float32) <= 1.0


def test_streaming_softmax_matches_expnorm():
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(5, 999)) * 10).astype(np.float32)
    x[1, 5] = -np.inf
    x[2, :] = -np.inf
    x[3, 7] = np.inf
    got = np.asarray(expnorm.streaming_softmax(jnp.asarray(x), chunk_size=128))
    want = np.asarray(expnorm.softmax(jnp.asarray(x)))
    np.testing.assert_array_equal(got[2], 0.0)
    np.testing.assert_array_equal(got[3], want[3])
    ok = want[[0, 1, 4]]
    normal = ok > np.finfo(np.float32).tiny
    diff = np.abs(got[[0, 1, 4]] - ok)[normal] / np.spacing(ok[normal])
    assert diff.max() <= 1.0
    # along another axis
    got0 = np.asarray(expnorm.streaming_softmax(jnp.asarray(x[[0, 1, 4]].T), axis=0, chunk_size=100))
    np.testing.assert_allclose(got0.T, ok, rtol=2e-7, atol=1e-37)


def test_cumulative_logsumexp_associative_scan():
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(3, 50)) * 4 + 3).astype(np.float32)
    got = np.asarray(expnorm.cumulative_logsumexp(jnp.asarray(x), axis=-1))
    # every prefix at once: row k of the mask keeps entries 0..k
    prefix = np.tril(np.ones((50, 50), bool))
    want = expnorm.logsumexp(jnp.asarray(np.broadcast_to(x[:, None, :], (3, 50, 50))), axis=-1,
                             where=jnp.asarray(prefix))
    assert _ulp_diff(got, want, np.float32) <= 1.0
    # under jit, as a building block
    jitted = jax.jit(lambda v: jax.lax.associative_scan(expnorm.online_combine,
                                                         expnorm.OnlineLSE(v, jnp.zeros_like(v))))
    with jax.enable_x64(True):
        st_ = jitted(jnp.asarray(x[0], jnp.float64))
        np.testing.assert_allclose(np.asarray(expnorm.online_logsumexp(st_)), got[0], rtol=1e-6)
