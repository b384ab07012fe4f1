"""Loop nests translated to LLVM IR (backend/irgen.py, called through nestcall.py):
the same numbers as the nests Numba compiles, to the last bit, for the programs
models are made of; what the translation refuses stays with Numba."""

import inspect
import json
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tracejit
from tracejit.backend import irgen, irtypes, nestcall

PROGRAMS = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tracejit
    from tracejit.backend import nestcall

    def mlp(x, w):  # relu, log-sum-exp, a gather by slicing
        h = np.maximum(x @ w, 0.0)
        z = h - np.max(h, axis=1, keepdims=True)
        return np.sum(np.log(np.sum(np.exp(z), axis=1)) - z[:, 0])

    def mixed(x):  # tanh, a select, minimum of NaN, abs, sqrt, reversed reads
        y = np.where(x > 0.5, np.tanh(x), np.minimum(x, 0.25))
        return np.sum(np.sqrt(np.abs(y) + 1.0) * x[::-1])

    def single(x):  # float32 with Python literals: NumPy 2 keeps float32
        return np.mean(x * 2.5 + 1.0) + np.max(np.exp(-x))

    def counts(k, x):  # integer arithmetic, an int mean, a comparison
        return np.mean(k * 3 - 7) + np.sum((k > 2) * x)

    def layers(ws, x):  # a loop over layers, rolled: stacked weights, views of rows
        for w in ws:
            x = np.tanh(x @ w + 0.5)
        return np.sum(x ** 2)

    def gather(x, k):  # a gather and its scatter-add, with their bounds checks
        return np.sum(x[k] ** 2)

    def libm(x):  # functions Numba takes from the C library, a float power
        return np.sum(np.log1p(x * x) + np.arctan(x) + np.sinh(x) * np.cosh(x)
                      + np.abs(x) ** 1.5)

    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(8, 5)), rng.normal(size=(5, 4))
    v = rng.normal(size=17)
    v[3] = np.nan
    out = {}
    for name, fn, args in [
            ("mlp", tracejit.value_and_grad(mlp, argnums=(0, 1)), (x, w)),
            ("mixed", tracejit.value_and_grad(mixed), (rng.normal(size=(6, 7)),)),
            ("mixed_nan", tracejit.function(mixed), (v,)),
            ("single", tracejit.value_and_grad(single),
             (rng.normal(size=(5, 3)).astype(np.float32),)),
            ("counts", tracejit.function(counts),
             (np.arange(12).reshape(3, 4), rng.normal(size=(3, 4)))),
            ("layers", tracejit.value_and_grad(layers),
             ([rng.normal(size=(6, 6)) / 3 for _ in range(16)], rng.normal(size=(4, 6)))),
            ("gather", tracejit.value_and_grad(gather),
             (rng.normal(size=7), np.array([0, 6, -1, 3, 3]))),
            ("libm", tracejit.value_and_grad(libm), (rng.normal(size=(3, 5)),)),
            ("libm32", tracejit.value_and_grad(libm),
             (rng.normal(size=(3, 5)).astype(np.float32),))]:
        result = fn(*args)
        if isinstance(result, tuple):  # (value, gradient or a list/tuple of them)
            value, grad = result
            result = (value, *(grad if isinstance(grad, (tuple, list)) else (grad,)))
        leaves = [np.asarray(a) for a in (result if isinstance(result, tuple) else (result,))]
        out[name] = [[a.dtype.str, a.shape, a.tobytes().hex()] for a in leaves]
    out["translated"] = len(nestcall.translated())
    print(json.dumps(out))
""")


def _run(tmp_path, translate: bool) -> dict:
    env = {**os.environ, "TRACEJIT_CACHE_DIR": str(tmp_path / f"cache{int(translate)}"),
           "TRACEJIT_COMPILE": "sync", "TRACEJIT_NEST_IR": "1" if translate else "0"}
    env.pop("TRACEJIT_DISABLE_JIT", None)
    proc = subprocess.run([sys.executable, "-c", PROGRAMS], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _arrays(found: dict) -> dict:
    return {(name, k): np.frombuffer(bytes.fromhex(data), dtype=dtype).reshape(shape)
            for name, leaves in found.items() for k, (dtype, shape, data) in enumerate(leaves)}


def test_translated_nests_give_numbas_numbers(tmp_path):
    translated, by_numba = _run(tmp_path, True), _run(tmp_path, False)
    assert translated.pop("translated") >= 12 and by_numba.pop("translated") == 0
    mine, numbas = _arrays(translated), _arrays(by_numba)
    assert mine.keys() == numbas.keys()
    exact = 0
    for key, want in numbas.items():
        got = mine[key]
        assert got.dtype == want.dtype and got.shape == want.shape, key
        # Elementwise results are the same bits; a sum may be added in another order
        # (both vectorise it under fastmath's reassociation): a few ulps.
        if got.tobytes() == want.tobytes():
            exact += 1
        elif got.dtype.kind == "f":
            assert np.array_equal(np.isnan(got), np.isnan(want)), key
            finite = ~np.isnan(want)
            np.testing.assert_array_max_ulp(got[finite], want[finite], maxulp=4)
        else:
            raise AssertionError(f"{key}: {got} != {want}")
    assert exact >= len(numbas) - 2


def _translated(kernel) -> bool:
    """Every nest of `kernel` runs its translation, none Numba's machine code (whatever
    earlier tests in this process compiled)."""
    done = {id(d) for d, _ in nestcall.translated().values()}
    return bool(kernel.nests) and all(id(n) in done and not n.overloads for n in kernel.nests)


def test_a_translated_bounds_check_raises_the_users_error(compiled):
    f = tracejit.function(lambda x, k: np.sum(x[k]))
    x = np.arange(5.0)
    assert f(x, np.array([0, 4, -5])) == 4.0
    kernel = f.entry((x, np.array([0])))[0].kernel
    assert _translated(kernel)
    (nest,) = kernel.nests
    assert "raise IndexError" in inspect.getsource(nest.py_func)
    with pytest.raises(IndexError, match="index out of bounds in gather at .*test_irgen.py"):
        f(x, np.array([0, 5]))
    assert f(x, np.array([1, 2])) == 3.0  # and the next good call works


def test_the_seed_models_nests_are_all_translated(compiled):
    def loss(w1, b1, w2, b2, x, y):
        h = np.maximum(x @ w1 + b1, 0.0)
        z = h @ w2 + b2
        z = z - np.max(z, axis=1, keepdims=True)
        return -np.mean(np.sum(y * (z - np.log(np.sum(np.exp(z), axis=1, keepdims=True))),
                               axis=1))

    rng = np.random.default_rng(1)
    args = (rng.normal(size=(10, 5)), np.zeros(5), rng.normal(size=(5, 2)), np.zeros(2),
            rng.normal(size=(32, 10)), np.eye(2)[rng.integers(0, 2, 32)])
    vg = tracejit.value_and_grad(loss, argnums=(0, 1, 2, 3))
    value, grads = vg(*args)
    kernel = vg.entry(args)[0].kernel
    assert len(kernel.nests) >= 5 and _translated(kernel)
    np.testing.assert_allclose(value, loss(*args), rtol=1e-13)
    eps, k = 1e-6, (3, 1)  # one weight's derivative against central differences
    up, down = [a.copy() for a in args], [a.copy() for a in args]
    up[0][k] += eps
    down[0][k] -= eps
    assert grads[0][k] == pytest.approx((loss(*up) - loss(*down)) / (2 * eps), rel=1e-6)


def test_a_nest_the_translation_refuses_is_compiled_by_numba(compiled, caplog):
    f = tracejit.function(lambda x: np.sum(np.fmod(x, 0.3) * 2.0))  # no spelling here
    x = np.linspace(-1.0, 1.0, 9)
    with caplog.at_level(logging.DEBUG, logger="tracejit"):
        assert f(x) == pytest.approx(np.sum(np.fmod(x, 0.3) * 2.0), rel=1e-14)
    assert any("not translated: call np.fmod" in r.getMessage() for r in caplog.records)
    entry, _ = f.entry((x,))
    (nest,) = entry.kernel.nests
    assert nest.overloads  # Numba's machine code
    assert not any(d is nest for d, _ in nestcall.translated().values())


@pytest.mark.parametrize("source, why", [
    ("def n(p0, p1):\n    for v0 in prange(p0):\n        p1[v0] = 1.0\n    return None\n",
     "loop form"),
    ("def n(p0):\n    raise KeyError('x')\n    return None\n", "Raise"),
    ("def n(p0, p1):\n    v0 = p1 // 2\n    return v0\n", "operator FloorDiv"),
    ("def n(p0):\n    return p0\n", "returns an argument array"),
])
def test_what_the_translation_refuses_it_names(source, why):
    import ast

    fn = ast.parse(source).body[0]
    params = [irtypes.Param(np.float64, 1)] + [irtypes.Param(np.int64)] * (len(fn.args.args) - 1)
    with pytest.raises(irtypes.Unsupported, match=why):
        irgen._Emitter(fn, {}, params, "n").translate()


WARM = textwrap.dedent("""
    import json
    import numpy as np
    import tracejit
    from tracejit.backend import nestcall

    def loss(w, x):
        return np.sum(np.log(np.sum(np.exp(np.tanh(x @ w)), axis=1)))

    g = tracejit.value_and_grad(loss)
    w, x = np.linspace(-1, 1, 12).reshape(4, 3), np.linspace(0, 1, 20).reshape(5, 4)
    value, grad = g(w, x)
    entry, _ = g.entry((w, x))
    driver = entry.kernel.fn
    compiled = sum(nestcall.cache_counts(nest)[1] for nest in entry.kernel.nests)
    print(json.dumps({"value": float(value), "translations compiled": compiled,
                      "translated": len(nestcall.translated()),
                      "driver read": sum(driver.stats.cache_hits.values()),
                      "driver compiled": sum(driver.stats.cache_misses.values())}))
""")


def test_a_new_process_reads_the_driver_and_the_translations_from_disk(tmp_path):
    env = {**os.environ, "TRACEJIT_CACHE_DIR": str(tmp_path), "TRACEJIT_COMPILE": "sync"}
    env.pop("TRACEJIT_DISABLE_JIT", None)

    def run():
        proc = subprocess.run([sys.executable, "-c", WARM], env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])

    cold, warm = run(), run()
    assert cold["translations compiled"] >= 2 and cold["driver compiled"] == 1
    assert warm["value"] == cold["value"] and warm["translated"] == cold["translated"]
    assert warm["translations compiled"] == 0
    assert warm["driver read"] == 1 and warm["driver compiled"] == 0


def test_a_translation_llvm_refuses_is_compiled_by_numba(compiled, monkeypatch, caplog,
                                                          tmp_path):
    def refuse(translation):
        raise RuntimeError("LLVM IR parsing error")

    monkeypatch.setenv("TRACEJIT_CACHE_DIR", str(tmp_path))  # no object on disk to read
    monkeypatch.setattr(nestcall.irjit, "machine_code", refuse)
    f = tracejit.function(lambda x: np.sum(np.exp(x) * 3.0 - x))
    x = np.linspace(-1.0, 1.0, 11)
    with caplog.at_level(logging.DEBUG, logger="tracejit"):
        assert f(x) == pytest.approx(np.sum(np.exp(x) * 3.0 - x), rel=1e-14)
    assert any("not translated: LLVM: LLVM IR parsing error" in r.getMessage()
               for r in caplog.records)
    (nest,) = f.entry((x,))[0].kernel.nests
    assert nest.overloads  # Numba's machine code


def test_loading_a_nest_takes_numbas_lock_outside_its_own(compiled, monkeypatch):
    # A nest's load registered Numba's runtime under the nest lock, taking Numba's
    # compiler lock there; a compile holds Numba's lock when it loads the nests it
    # calls. A kernel loaded in the background while another compiled in the
    # foreground hung the suite that way.
    from tracejit.backend import irjit, numba_cache

    held = []
    register = numba_cache.runtime_symbols

    def recording():
        held.append(irjit._lock.locked())
        register()

    monkeypatch.setattr(numba_cache, "runtime_symbols", recording)
    f = tracejit.function(lambda x: np.tanh(x) * 1.2345678 + 0.25)  # a nest of its own
    np.testing.assert_allclose(f(np.ones(3)), np.tanh(1.0) * 1.2345678 + 0.25, rtol=1e-15)
    assert held and not any(held)
