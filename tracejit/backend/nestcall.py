"""How a kernel driver calls a loop nest: through its LLVM IR translation when it has
one (irgen.py), else through the nest compiled by Numba, both by symbol.

A driver's module rebinds each nest it imports, `nest_x = nest_call(nest_x)`: an
intrinsic that, for the argument types the driver passes, translates the nest,
compiles it (or reads its object code from the cache directory), loads it, and
lowers the call as one call of the symbol, then the arrays made of what the nest
allocated, the views it returned, and the exception its status stands for. When
the translation refuses the nest, the intrinsic compiles the Numba dispatcher
instead and calls its symbol, never linking its code (runtime._NestDispatcher).
"""

from __future__ import annotations

import builtins
import inspect
import logging
import threading
import time

import numba
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ..core import forksafe
from . import cache, irgen, irjit, irtypes
from .numba_cache import VerifiedCache
from .store import warn_once

_log = logging.getLogger("tracejit")
_lock = threading.RLock()
forksafe.renew_after_fork(globals(), "_lock", threading.RLock)
_direct: dict[str, tuple] = {}  # symbol -> (nest dispatcher, argument types): translated
_seconds: dict[str, float] = {}  # nest name -> seconds spent translating and compiling it


def nest_call(dispatcher):
    """The intrinsic kernels call `dispatcher`'s nest through (one per nest)."""
    with _lock:
        call = getattr(dispatcher, "_tracejit_call", None)
        if call is None:
            call = dispatcher._tracejit_call = _intrinsic(_NestCall(dispatcher))
        return call


def translated() -> dict:
    """symbol -> (dispatcher, argument types) of every nest loaded here as LLVM IR."""
    with _lock:
        return dict(_direct)


def inspect_llvm(dispatcher) -> dict:
    """{argument types: optimised LLVM IR} of a nest, as Numba's `inspect_llvm`: its
    translations' and, where it was compiled by Numba, Numba's."""
    found = dict(dispatcher.inspect_llvm())
    call = nest_call(dispatcher)._tracejit_nest
    with _lock:
        mine = [sig for d, sig in _direct.values() if d is dispatcher]
    found.update({sig: irjit.optimised(call.translate(sig)) for sig in mine})
    return found


def compile_seconds() -> dict:
    """{nest name: seconds spent translating and compiling it here so far} (the compile
    worker reports these beside Numba's pipeline times)."""
    with _lock:
        return dict(_seconds)


def load_translated(dispatcher, argtys) -> bool:
    """Load `dispatcher`'s translation for `argtys`, for a driver read from the disk
    that calls it: its object code alone, not translated again unless missing. False
    when the nest has no translation here."""
    call = nest_call(dispatcher)._tracejit_nest
    try:
        call.load(tuple(argtys), lazy=True)
    except irtypes.Unsupported:
        return False
    return True


def _intrinsic(call: _NestCall):
    """An intrinsic taking exactly the nest's parameters (Numba needs the arity)."""
    params = list(inspect.signature(call.dispatcher.py_func).parameters)
    namespace = {"call": call}
    name = call.dispatcher.py_func.__name__
    text = (f"def {name}({', '.join(['typingctx', *params])}):\n"
            f"    return call.typed(({''.join(p + ', ' for p in params)}))\n")
    # Compiled under this file's name: warnings raised while it types (a full cache
    # directory) are then attributed to the user's line, not to this generated function.
    exec(compile(text, __file__, "exec"), namespace)
    made = intrinsic(namespace[name])
    made._tracejit_nest = call
    return made


def cache_counts(dispatcher) -> tuple[int, int]:
    """(read from disk, compiled here) of a nest's machine code, both code generators'."""
    call = nest_call(dispatcher)._tracejit_nest
    return (sum(dispatcher.stats.cache_hits.values()) + call.read,
            sum(dispatcher.stats.cache_misses.values()) + call.compiled)


class _NestCall:
    """One nest's calls: per argument types, its translation's or Numba's."""

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
        self.built: dict[tuple, tuple] = {}  # argument types -> (signature, codegen)
        self.read = self.compiled = 0  # translations' object code: from disk, made here

    def typed(self, argtys: tuple):
        argtys = tuple(types.unliteral(t) for t in argtys)
        with _lock:
            built = self.built.get(argtys)
        if built is None:
            built = self.direct(argtys) or self._through_numba(argtys)
            with _lock:
                self.built[argtys] = built
        return built

    def direct(self, argtys: tuple):
        """(signature, codegen) calling the nest's translation, or None."""
        try:
            translation = self.load(argtys)
        except irtypes.Unsupported as why:
            _log.debug("%s%s: compiled by Numba (not translated: %s)",
                       self.dispatcher.py_func.__name__, argtys, why)
            return None
        return _lowering(translation, argtys)

    def translate(self, argtys: tuple) -> irgen.Translation:
        params = [_param(t) for t in argtys]
        symbol = irjit.symbol_for(self.dispatcher.py_func, params, cache.version_tag())
        return irgen.translate(self.dispatcher.py_func, params, symbol, _helper)

    def load(self, argtys: tuple, lazy: bool = False):
        """Make the translation for `argtys` callable (from the disk, else compiled here);
        the translation, or with `lazy` None if its object code was on disk. Raises
        irtypes.Unsupported when the nest has none (or TRACEJIT_NEST_IR=0)."""
        if not irjit.ENABLED:
            raise irtypes.Unsupported("TRACEJIT_NEST_IR=0")
        params = [_param(t) for t in argtys]
        symbol = irjit.symbol_for(self.dispatcher.py_func, params, cache.version_tag())
        translation = None if lazy else self.translate(argtys)
        if not irjit.is_loaded(symbol):
            code = self._read(symbol)
            if code is None:
                start = time.perf_counter()
                translation = translation or self.translate(argtys)
                code = self._compile(translation)
                name = self.dispatcher.py_func.__name__
                with _lock:
                    _seconds[name] = _seconds.get(name, 0.0) + time.perf_counter() - start
            irjit.load(symbol, code)
        with _lock:
            _direct[symbol] = (self.dispatcher, argtys)
        return translation

    def _path(self, symbol: str):
        on_disk = isinstance(self.dispatcher._cache, VerifiedCache)
        return cache.object_path(symbol) if on_disk else None

    def _read(self, symbol: str) -> bytes | None:
        path = self._path(symbol)
        code = cache.read_sealed(path) if path is not None else None
        if code is None and path is not None and path.exists():
            warn_once(("rejected", path), f"ignoring the tracejit cache file {path}: its seal "
                      "does not match (truncated, corrupt, copied from another entry, or not "
                      "written by tracejit); the nest is compiled again")
        if code is not None:
            self.read += 1
        return code

    def _compile(self, translation) -> bytes:
        try:
            code = irjit.machine_code(translation)
        except RuntimeError as err:  # LLVM refused the module: Numba compiles the nest
            raise irtypes.Unsupported(f"LLVM: {str(err).strip()[:200]}") from err
        self.compiled += 1
        path = self._path(translation.symbol)
        if path is not None:
            cache.write_sealed(path, code)
        return code

    def _through_numba(self, argtys: tuple):
        self.dispatcher.compile(argtys)
        compiled = self.dispatcher.overloads[argtys]

        def codegen(context, builder, sig, args):
            return context.call_internal(builder, compiled.fndesc, compiled.signature, args)

        return compiled.signature, codegen


_helpers: dict[tuple, irgen.Helper] = {}


def _helper(name: str, dtypes: tuple) -> irgen.Helper:
    """Runtime helper `name` for these argument types, as the IR Numba made of it (its
    library keeps it for linking, also when its machine code came from the disk)."""
    from . import runtime

    key = (name, dtypes)
    with _lock:
        found = _helpers.get(key)
    if found is not None:
        return found
    fn = getattr(runtime, name, None)
    # Helpers Numba keeps as calls (_NotInlined) and anything that is not a plain
    # scalar function stay with Numba.
    if type(fn) is not runtime._CompiledOnly or any(d.kind not in "iuf" for d in dtypes):
        raise irtypes.Unsupported(f"call _rt.{name}")
    sig = tuple(numba.from_dtype(d) for d in dtypes)
    fn.compile(sig)
    compiled = fn.overloads[sig]
    result = compiled.signature.return_type
    if not isinstance(result, (types.Integer, types.Float)):
        raise irtypes.Unsupported(f"_rt.{name} returns {result}")
    text = str(compiled.library._get_module_for_linking())
    if any(not d.startswith("llvm.") for d in irjit.declared(text)):
        raise irtypes.Unsupported(f"_rt.{name} calls outside LLVM")
    found = irgen.Helper(compiled.fndesc.mangled_name, text, dtypes,
                         numba.np.numpy_support.as_dtype(result))
    with _lock:
        _helpers[key] = found
    return found


def _param(t) -> irtypes.Param:
    if isinstance(t, types.Array):
        if not isinstance(t.dtype, (types.Integer, types.Float, types.Boolean)):
            raise irtypes.Unsupported(f"array of {t.dtype}")
        return irtypes.Param(numba.np.numpy_support.as_dtype(t.dtype), t.ndim, t.layout)
    if isinstance(t, (types.Integer, types.Float, types.Boolean)):
        return irtypes.Param(numba.np.numpy_support.as_dtype(t))
    raise irtypes.Unsupported(f"argument of type {t}")


def _lowering(translation, argtys: tuple):
    """The signature and codegen of a call of `translation` with `argtys`."""
    made_types = [types.Array(numba.from_dtype(a.dtype), len(a.shape), "C")
                  for a in translation.allocations]
    results = []
    for kind, *rest in translation.results:
        if kind == "array":
            results.append(made_types[rest[0]])
        elif kind == "view":
            base = argtys[rest[0]]
            results.append(base.copy(ndim=base.ndim - len(rest[1]),
                                     layout="C" if base.layout == "C" else "A"))
        else:
            results.append(numba.from_dtype(rest[0]))
    if not results:
        returned = types.none
    elif translation.returns_tuple:
        returned = types.BaseTuple.from_types(results)
    else:
        returned = results[0]

    def codegen(context, builder, sig, args):
        from numba.core import cgutils

        values = _arguments(context, builder, sig, args)
        made = cgutils.alloca_once(builder, irtypes.VOID_P, size=max(1, 2 * len(made_types)))
        values.append(builder.bitcast(made, irtypes.VOID_P))
        slots = []
        for kind, *rest in translation.results:
            if kind == "scalar":
                slots.append(cgutils.alloca_once(builder, irtypes.memtype(rest[0])))
                values.append(builder.bitcast(slots[-1], irtypes.VOID_P))
        fnty = ir.FunctionType(irtypes.I32, [v.type for v in values])
        status = builder.call(cgutils.get_or_insert_function(builder.module, fnty,
                                                             translation.symbol), values)
        raised = [(MemoryError, "tracejit: cannot allocate an array")]
        raised += [(getattr(builtins, name), message) for name, message in translation.raises]
        for code, (exc, message) in enumerate(raised, start=1):
            failed = builder.icmp_unsigned("==", status, status.type(code))
            with builder.if_then(failed, likely=False):
                context.call_conv.return_user_exc(builder, exc, (message,))
        arrays = [_array(context, builder, sig, args, alloc, arrtype, made, k)
                  for k, (alloc, arrtype) in enumerate(zip(translation.allocations, made_types))]
        out, scalars = [], iter(slots)
        for (kind, *rest), result_type in zip(translation.results, results):
            k = rest[0]
            if kind == "array":
                out.append(arrays[k])
                context.nrt.incref(builder, made_types[k], arrays[k])
            elif kind == "view":
                out.append(_view(context, builder, sig, args, k, rest[1], result_type))
            else:
                value = builder.load(next(scalars))
                out.append(builder.trunc(value, irtypes.I1) if k == irtypes.BOOL else value)
        for arrtype, value in zip(made_types, arrays):
            context.nrt.decref(builder, arrtype, value)  # the results hold their own
        if not out:
            return context.get_dummy_value()
        if translation.returns_tuple:
            return context.make_tuple(builder, sig.return_type, out)
        return out[0]

    return returned(*argtys), codegen


def _view(context, builder, sig, args, base: int, index: list, view_type):
    """The rows of argument `base` at `index` (a new reference): a view the nest
    returned, made again here from the same arguments."""
    from numba.core import cgutils
    from numba.np.arrayobj import make_array, populate_array

    base_type = sig.args[base]
    array = make_array(base_type)(context, builder, args[base])
    intp = context.get_value_type(types.intp)
    dims = cgutils.unpack_tuple(builder, array.shape, base_type.ndim)
    strides = cgutils.unpack_tuple(builder, array.strides, base_type.ndim)
    offset = ir.Constant(intp, 0)
    for axis, k in enumerate(index):
        value = (ir.Constant(intp, k[1]) if isinstance(k, tuple)
                 else context.cast(builder, args[k], sig.args[k], types.intp))
        wrapped = builder.add(value, dims[axis])  # a negative index counts from the end
        value = builder.select(builder.icmp_signed("<", value, value.type(0)), wrapped, value)
        offset = builder.add(offset, builder.mul(value, strides[axis]))
    view = make_array(view_type)(context, builder)
    data = builder.gep(builder.bitcast(array.data, irtypes.VOID_P), [offset])
    populate_array(view, data=builder.bitcast(data, view.data.type),
                   shape=cgutils.pack_array(builder, dims[len(index):], ty=intp),
                   strides=cgutils.pack_array(builder, strides[len(index):], ty=intp),
                   itemsize=array.itemsize, meminfo=array.meminfo, parent=array.parent)
    value = view._getvalue()
    context.nrt.incref(builder, view_type, value)
    return value


def _array(context, builder, sig, args, alloc, arrtype, made, k: int):
    """The k-th array the nest allocated (C order), from its MemInfo and data."""
    from .runtime import c_order_array

    intp = context.get_value_type(types.intp)
    dims = [ir.Constant(intp, d[1]) if isinstance(d, tuple)
            else context.cast(builder, args[d], sig.args[d], types.intp) for d in alloc.shape]
    meminfo = builder.load(builder.gep(made, [ir.Constant(intp, 2 * k)]))
    data = builder.load(builder.gep(made, [ir.Constant(intp, 2 * k + 1)]))
    return c_order_array(context, builder, arrtype, dims, meminfo, data)._getvalue()


def _arguments(context, builder, sig, args) -> list:
    """The translation's leading arguments: scalars, and per array its data pointer,
    shape and strides."""
    from numba.core import cgutils

    values = []
    for t, v in zip(sig.args, args):
        if isinstance(t, types.Array):
            array = context.make_array(t)(context, builder, v)
            values.append(builder.bitcast(array.data, irtypes.VOID_P))
            values += cgutils.unpack_tuple(builder, array.shape, t.ndim)
            values += cgutils.unpack_tuple(builder, array.strides, t.ndim)
        else:
            values.append(builder.zext(v, irtypes.I8) if t == types.boolean else v)
    return values
