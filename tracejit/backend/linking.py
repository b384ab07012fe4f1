"""A kernel driver's machine code in the disk cache, safely.

A driver calls its nests (and the runtime's `gemm`) by symbol
without linking their code (runtime.nest), so its machine code read back from
the disk names functions that must already be loaded in the process, under
the exact names they had when it was compiled (Numba mangles a per-process
counter into them); one missing aborts the process inside LLVM. So when a
driver is compiled, the functions its code declares are recorded beside its
module (`<module>.py.links`: each one's symbol, and which dispatcher and
argument types define it); a later process loads those first (from their own
disk cache), checks that every symbol resolves, and only then lets Numba read
the driver from the disk, and only the very file the record was made for (by
its digest: a concurrent process may have written another since). Anything
amiss and the driver is compiled here, as when nothing was recorded.
"""

from __future__ import annotations

import importlib
import json
import sys

import numpy as np
from llvmlite import binding as llvm

from . import cache, irjit, nestcall


def compile_driver(driver, path, sig, known: bool) -> str:
    """`cache.compile_signature` for a kernel driver, through the disk cache when
    that is safe: read back if `load_recorded_callees` vouches for the recorded code, else
    compiled and written (never read; with a new record) or, with nothing to
    record, compiled in memory."""
    from numba.core.caching import NullCache


    described = describe_types(sig)
    key = json.dumps(described)
    digest = load_recorded_callees(path, key) if known else None
    cached = (path is not None and described is not None
              and cache.enable_disk_cache(driver, save_only=digest is None))
    if not cached:
        driver._cache = NullCache()
    else:  # read back only the very file the record was made for
        driver._cache._cache_file.expected_digest = digest
    where = cache.compile_signature(driver, sig)
    if cached and where == "compiled":
        record(path, key, driver, sig)
    return where


def record(path, key: str, dispatcher, sig) -> None:
    """Note what the driver's machine code for `sig` calls (after it compiled)."""

    needs = [name for name in irjit.declared(dispatcher.overloads[sig].library.get_llvm_str())
             if not name.startswith("llvm.")]
    defined = _no_link_definitions()
    loads = []
    for name in needs:
        if name in defined:
            fn, fn_sig, how = defined[name]
            described = describe_types(fn_sig)
            if described is None:
                return  # types a later process could not rebuild: no disk cache for it
            loads.append([fn.py_func.__module__, fn.py_func.__name__, described, how])
    digest = dispatcher._cache._cache_file.saved_digest
    if digest is None:
        return  # nothing was written (storage read-only or full)
    records = _read(path)
    records[key] = {"needs": needs, "loads": loads, "digest": digest}
    cache.write_note(_note(path), json.dumps(records))


def load_recorded_callees(path, key: str) -> str | None:
    """Load what the driver recorded under `key` calls. If all of it resolves, the
    digest of the machine-code file the record was made for (else None)."""

    entry = _read(path).get(key)
    if entry is None or "digest" not in entry:
        return None
    try:
        for module, name, described, how in entry["loads"]:
            fn = getattr(importlib.import_module(module), name)
            if how == "ir":
                if not nestcall.load_translated(fn, rebuild_signature(described)):
                    return None
            else:
                cache.compile_signature(fn, rebuild_signature(described))
    except Exception:  # noqa: BLE001 (anything: the driver is then compiled here)
        return None
    defined = _no_link_definitions()
    if all(name in defined or llvm.address_of_symbol(name) for name in entry["needs"]):
        return entry["digest"]
    return None


def _no_link_definitions() -> dict:
    """symbol -> (dispatcher, signature, "numba" or "ir") for every function loaded here
    that drivers call by symbol: nests compiled by Numba, and nests' translations."""
    from .runtime import _NestDispatcher

    found = {}
    # A copy in one step: building a list of (name, module) pairs allocates, a garbage
    # collection can run Python code then, and another thread importing a module
    # meanwhile broke the iteration ("dictionary changed size during iteration").
    for module in [m for name, m in sys.modules.copy().items()
                   if name.startswith(("tracejit_kernels.", "tracejit.backend.runtime"))]:
        for fn in list(vars(module).values()):
            if isinstance(fn, _NestDispatcher):
                for sig, cres in list(fn.overloads.items()):
                    found[cres.fndesc.mangled_name] = (fn, sig, "numba")
    for symbol, (fn, sig) in nestcall.translated().items():
        found[symbol] = (fn, sig, "ir")
    return found


def _note(path) -> str:
    return f"{path}.links"


def _read(path) -> dict:
    text = cache.read_note(_note(path))
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return {}


# ------------------------------------------- signatures as JSON (for the worker too)

def describe_types(sig) -> list | None:
    """Numba argument types (arrays and numbers only) as JSON data, or None."""
    from numba.core import types

    out = []
    for t in sig:
        if isinstance(t, types.Array):
            out.append(["array", np.dtype(t.dtype.name).name, t.ndim, t.layout, t.mutable,
                        t.aligned])
        elif isinstance(t, (types.Boolean, types.Integer, types.Float, types.Complex)) and \
                not isinstance(t, types.Literal):
            out.append(["scalar", np.dtype(str(t)).name])
        else:
            return None
    return out


def rebuild_signature(described: list) -> tuple:
    import numba
    from numba.core import types

    sig = []
    for kind, dtype, *rest in described:
        base = numba.from_dtype(np.dtype(dtype))
        if kind == "array":
            ndim, layout, mutable, aligned = rest
            sig.append(types.Array(base, ndim, layout, readonly=not mutable, aligned=aligned))
        else:
            sig.append(base)
    return tuple(sig)
