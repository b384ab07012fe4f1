"""Big kernel arrays on recycled blocks (backend/pool.py): a block is reused only once no
array or view over it is left, the pool stays within its limit, and results are right
whatever the dtype, thread or allocation site."""

import threading

import numpy as np
import pytest

import tracejit
from tracejit.backend import pool
from tracejit.backend.runtime import POOL_MIN_BYTES

B, M, N = 64, 48, 48  # an outer product of B * M * N float64: just above POOL_MIN_BYTES
assert B * M * N * 8 >= POOL_MIN_BYTES


def outer(a, b):
    return a[:, :, None] * b[:, None, :]


def operands(seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((B, M)).astype(dtype), rng.standard_normal((B, N)).astype(dtype)


@pytest.fixture
def fresh_pool():
    pool.trim()
    limit = pool.limit_bytes()
    yield
    pool.set_limit(limit)
    pool.trim()


def test_a_kept_result_is_never_overwritten(compiled, fresh_pool):
    fn = tracejit.function(outer)
    kept_args = operands(0)
    kept = fn(*kept_args)
    for seed in range(1, 4):  # each call needs a block while `kept` holds its own
        new = fn(*operands(seed))
        assert not np.shares_memory(new, kept)
        np.testing.assert_array_equal(new, outer(*operands(seed)))
    np.testing.assert_array_equal(kept, outer(*kept_args))


def test_a_view_keeps_its_block(compiled, fresh_pool):
    fn = tracejit.function(outer)
    args = operands(0)
    view = fn(*args)[3, ::2]  # the array itself is gone: only the view holds the block
    for seed in range(1, 4):
        fn(*operands(seed))
    np.testing.assert_array_equal(view, outer(*args)[3, ::2])


def test_a_released_block_is_reused_and_refilled(compiled, fresh_pool):
    fn = tracejit.function(outer)
    first = fn(*operands(0))
    address = first.ctypes.data
    del first  # no reference left: its block goes back to the pool
    before = pool.stats()
    assert before["idle_blocks"] >= 1
    second = fn(*operands(1))
    assert pool.stats()["reused"] == before["reused"] + 1
    assert second.ctypes.data == address  # the same, already faulted, memory
    np.testing.assert_array_equal(second, outer(*operands(1)))


def test_small_arrays_stay_with_malloc(compiled, fresh_pool):
    fn = tracejit.function(outer)
    a, b = operands(0)
    before = pool.stats()
    np.testing.assert_array_equal(fn(a[:4], b[:4]), outer(a[:4], b[:4]))
    after = pool.stats()
    assert (after["new"], after["reused"]) == (before["new"], before["reused"])


def test_temporaries_inside_a_kernel_come_back(compiled, fresh_pool):
    """A matrix product read only by a reduction: a temporary freed inside compiled code
    (without the GIL), returned to the pool all the same."""
    def f(a, b):
        return (a @ b).sum(axis=1)

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((400, 300)), rng.standard_normal((300, 400))
    fn = tracejit.function(f)
    np.testing.assert_allclose(fn(a, b), (a @ b).sum(axis=1), rtol=1e-12)
    assert pool.stats()["idle_blocks"] >= 1  # nothing of ours holds the temporary
    reused = pool.stats()["reused"]
    np.testing.assert_allclose(fn(b.T, a.T), (b.T @ a.T).sum(axis=1), rtol=1e-12)
    assert pool.stats()["reused"] > reused


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.complex128, np.bool_])
def test_dtypes(compiled, fresh_pool, dtype):
    a, b = operands(0)
    if dtype is np.bool_:
        a, b = a > 0, b > 0
    elif dtype is np.complex128:
        a, b = a + 1j * b[:, :M], b - 2j
    else:
        a, b = (a * 100).astype(dtype), (b * 100).astype(dtype)
    fn = tracejit.function(lambda a, b: a[:, :, None] * b[:, None, :]
                           if dtype is not np.bool_ else a[:, :, None] & b[:, None, :])
    for _ in range(2):  # the second call runs on the first call's block
        got = fn(a, b)
        want = (a[:, :, None] & b[:, None, :]) if dtype is np.bool_ else outer(a, b)
        assert got.dtype == want.dtype
        if dtype is np.complex128:  # the kernel's complex product may fuse into an FMA
            np.testing.assert_allclose(got, want, rtol=1e-14)
        else:
            np.testing.assert_array_equal(got, want)


def test_per_example_gradients_kept_across_calls(compiled, fresh_pool):
    """vmap(grad): the case the pool is for. Results of earlier batches stay intact."""
    def loss(w, x, y):
        return np.sum((np.tanh(x @ w) - y) ** 2)

    per_example = tracejit.vmap(tracejit.grad(loss), in_axes=(None, 0, 0))
    rng = np.random.default_rng(1)
    w = rng.standard_normal((128, 64)) * 0.1

    def reference(x, y):
        h = np.tanh(np.einsum("bi,ij->bj", x, w))
        return np.einsum("bi,bj->bij", x, 2 * (h - y) * (1 - h * h))

    batches = [(rng.standard_normal((16, 128)), rng.standard_normal((16, 64))) for _ in range(4)]
    results = [per_example(w, x, y) for x, y in batches]  # all alive at once
    for (x, y), got in zip(batches, results):
        assert got.nbytes >= POOL_MIN_BYTES
        np.testing.assert_allclose(got, reference(x, y), rtol=1e-12, atol=1e-14)


def test_threads_never_share_a_block(compiled, fresh_pool):
    fn = tracejit.function(outer)
    fn(*operands(0))  # compiled before the threads start
    failures = []

    def work(thread):
        kept = []
        for k in range(12):
            args = operands(100 * thread + k)
            kept.append((args, fn(*args)))
            if len(kept) > 2:
                kept.pop(0)  # releases a block another thread may take next
            for old_args, old in kept:
                if not np.array_equal(old, outer(*old_args)):
                    failures.append((thread, k))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_limit_bounds_the_idle_bytes(compiled, fresh_pool):
    fn = tracejit.function(outer)
    nbytes = B * M * N * 8
    pool.set_limit(nbytes)  # room for one idle block
    results = [fn(*operands(seed)) for seed in range(3)]
    del results
    assert pool.stats()["idle_bytes"] <= nbytes
    pool.set_limit(0)
    assert pool.stats()["idle_bytes"] == 0
    got = fn(*operands(5))
    del got
    assert pool.stats()["idle_blocks"] == 0  # kept none


def test_pool_unit_take_give_evict():
    p = pool._Pool(limit=3000)
    a, b = p.take(1000), p.take(2000)
    assert p.counts == {"new": 2, "reused": 0, "freed": 0}
    p.give(a)
    p.give(b)
    assert p.idle_bytes == 3000
    assert p.take(1000) is a and p.counts["reused"] == 1
    p.give(p.take(5000))  # larger than the whole limit: freed, the others stay
    assert p.idle_bytes == 2000 and p.counts["freed"] == 1
    p.give(a)
    p.give(np.empty(1500, np.uint8))  # over the limit: the oldest idle block (b) goes
    assert p.idle_bytes == 2500 and p.take(2000) is not b
    p.trim()
    assert p.idle_bytes == 0 and not p.idle
