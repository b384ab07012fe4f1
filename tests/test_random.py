"""tracejit.random: Threefry-2x32 against the published answers, the draws'
distributions (moments, Kolmogorov-Smirnov), independence of calls and of
split streams, the same streams interpreted and compiled, and a stateful
generator that draws anew on every call of a compiled function without
retracing."""

import numpy as np
import pytest

import tracejit
import tracejit.random as tr
from tracejit.primitives.random import threefry2x32

stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("key, counter, expected", [
    # Random123's known-answer vectors for threefry2x32_20 (also JAX's test)
    ((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
])
def test_threefry_known_answers_numpy_and_numba(key, counter, expected):
    from numba import njit

    from tracejit.backend import runtime

    @njit  # the runtime's helpers are called from compiled code only
    def bits(k0, k1, c0, c1):
        return runtime.threefry_bits(k0, k1, c0, c1)

    assert tuple(int(w) for w in threefry2x32(key, counter)) == expected
    assert int(bits(*key, *counter)) == expected[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_uniform_and_normal_distributions(dtype):
    k1, k2 = tr.split(tr.key(7))
    u = tr.uniform(k1, (20000,), dtype)
    z = tr.normal(k2, (20000,), dtype)
    assert u.dtype == dtype and z.dtype == dtype
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.003
    assert abs(z.mean()) < 0.03 and abs(z.std() - 1.0) < 0.03
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    assert stats.kstest(z, "norm").pvalue > 1e-3


def test_bernoulli_categorical_permutation_exponential():
    keys = tr.split(tr.key(3), 4)
    b = tr.bernoulli(keys[0], 0.3, (20000,))
    assert b.dtype == bool and abs(b.mean() - 0.3) < 0.015
    p = np.array([0.1, 0.2, 0.3, 0.4])
    c = tr.categorical(keys[1], np.log(p), shape=(20000,))
    assert c.shape == (20000,)
    np.testing.assert_allclose(np.bincount(c, minlength=4) / 20000, p, atol=0.015)
    perm = tr.permutation(keys[2], 50)
    assert sorted(perm.tolist()) == list(range(50)) and perm.tolist() != list(range(50))
    e = tr.exponential(keys[3], (20000,))
    assert stats.kstest(e, "expon").pvalue > 1e-3


def test_split_streams_and_successive_draws_are_independent():
    k = tr.key(0)
    a, b = tr.split(k)
    np.testing.assert_array_equal(tr.uniform(a, (5,)), tr.uniform(a, (5,)))  # pure
    x, y = tr.normal(a, (5000,)), tr.normal(b, (5000,))
    assert abs(np.corrcoef(x, y)[0, 1]) < 0.05
    assert abs(np.corrcoef(x[:-1], x[1:])[0, 1]) < 0.05  # neighbours in one stream
    gen = tr.SeedGenerator(1)
    first, second = gen.normal((5000,)), gen.normal((5000,))
    assert abs(np.corrcoef(first, second)[0, 1]) < 0.05


def test_same_streams_interpreted_and_compiled(monkeypatch):
    def draws(k, x):
        return (tr.uniform(k, x.shape), tr.uniform(k, (3, 4), np.float32), tr.split(k, 3),
                tr.normal(k, x.shape), tr.bernoulli(k, 0.5, (7,)))

    k, x = tr.key(11), np.zeros((5, 6))
    eager = draws(k, x)
    monkeypatch.setenv("TRACEJIT_DISABLE_JIT", "1")
    interpreted = tracejit.function(draws)(k, x)
    monkeypatch.delenv("TRACEJIT_DISABLE_JIT")
    monkeypatch.setenv("TRACEJIT_COMPILE", "sync")
    compiled = tracejit.function(draws)(k, x)
    for e, i, c in zip(eager, interpreted, compiled):
        assert e.dtype == i.dtype == c.dtype
        if e.dtype.kind == "f":
            np.testing.assert_allclose(i, e, rtol=1e-13)
            np.testing.assert_allclose(c, e, rtol=1e-13)
        else:
            np.testing.assert_array_equal(i, e)
            np.testing.assert_array_equal(c, e)
    np.testing.assert_array_equal(compiled[0], eager[0])  # uniforms: the same bits


def test_generator_draws_anew_each_call_without_retrace(mode):
    gen = tr.SeedGenerator(5)
    noisy = tracejit.function(lambda x: x + gen.normal(x.shape, np.float32))
    x = np.zeros((4, 3), np.float32)
    outs = [noisy(x)]
    traces = noisy.stats.traces
    outs += [noisy(x) for _ in range(3)]
    assert all(not np.array_equal(outs[0], o) for o in outs[1:])
    assert noisy.stats.traces == traces
    np.testing.assert_array_equal(gen.state.numpy()[2], 4)
    replay = tr.SeedGenerator(5)  # the same seed replays the same stream, eagerly
    replay.next()
    np.testing.assert_allclose(outs[1], replay.normal((4, 3), np.float32), rtol=1e-5, atol=1e-6)


def test_numpy_legacy_draws_inside_a_trace_are_fresh_and_distributed(mode):
    f = tracejit.function(lambda x: x + np.random.randn(*x.shape))
    a, b = f(np.zeros(4000)), f(np.zeros(4000))
    assert not np.array_equal(a, b)
    assert stats.kstest(a, "norm").pvalue > 1e-3
    g = tracejit.function(lambda x: x * np.random.uniform(2.0, 3.0, size=x.shape))
    u = g(np.ones(4000))
    assert u.min() >= 2.0 and u.max() < 3.0
    ints = tracejit.function(lambda x: np.random.randint(0, 5, size=x.shape))(np.ones(4000))
    assert set(np.unique(ints).tolist()) == {0, 1, 2, 3, 4}


def test_bad_key_names_the_problem():
    with pytest.raises(tracejit.TracerTypeError, match="uint32 array of shape"):
        tr.uniform(np.zeros(3), (2,))
