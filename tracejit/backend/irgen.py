"""Loop nests as LLVM IR written here: the second code generator.

Numba takes 0.05-0.15 s to compile one loop nest (outline.py): type inference,
its IR with reference counts, array structs and error paths, then LLVM over all
of that. The nest itself is a few loops of scalar arithmetic over arrays, and
LLVM compiles those loops, written directly, in ~15 ms with the same
vectorisation. So a nest's canonical Python source is translated here, one
statement to a few instructions, into a plain function

    i32 sym(scalars and, per array, data pointer, shape, strides;
            then where to put the MemInfo and data of each array it allocates;
            then a slot for each scalar it returns)
        -> 0; 1 if out of memory; 2, 3, ... for its bounds checks' errors

compiled at O3 for this CPU, its object code kept in the cache directory, and
loaded under `sym` for the kernel drivers that call it (nestcall.py makes the
arrays of what it allocated and raises what a status stands for). The
translation follows Numba's typing of the same source (irtypes.py: NumPy's
promotion of scalars, int64 Python ints, float64 Python floats, signed indexes
wrapping once) so that both give the same numbers. Anything outside the subset
it knows raises `Unsupported`, and that nest is compiled by Numba as before:
`prange`, helpers with no spelling here (`np.fmod`, helpers Numba keeps as
calls), complex numbers, a nest returning one of its arguments. irjit.py makes
and loads the machine code.
"""

from __future__ import annotations

import ast
import contextlib
import linecache

import numpy as np
from llvmlite import ir

from . import pool
from .irtypes import (
    ALLOCATORS,
    BOOL,
    COMPARE,
    COPIES,
    I1,
    I8,
    I32,
    I64,
    INT,
    LIBM,
    MATH,
    VOID_P,
    Param,
    Types,
    Unsupported,
    arithmetic,
    cast,
    constant,
    constant_type,
    lltype,
    memtype,
    np_attr,
    np_dtype,
    promote,
    rt_call,
)

FORMAT = "irgen-1"  # part of every symbol: objects of an older translation are never loaded
FASTMATH = ("contract", "reassoc")  # codegen.FASTMATH, as LLVM flags


class Allocation:
    """An array the nest makes (`_rt.empty` / `_rt.full`): the caller allocates it
    (C order); `shape` holds, per axis, a parameter's position or a literal size."""

    def __init__(self, name: str, dtype: np.dtype, shape: list, fill):
        self.name, self.dtype, self.shape, self.fill = name, dtype, shape, fill


class Helper:
    """A runtime helper as LLVM IR (Numba's, linked into the nest and inlined there):
    its function's symbol in `text`, argument and result types. Numba's calling
    convention: `i32 symbol(result*, exception**, arguments...)`."""

    def __init__(self, symbol: str, text: str, args: tuple, result: np.dtype):
        self.symbol, self.text, self.args, self.result = symbol, text, args, result


class Translation:
    """A nest as LLVM IR: the module's text, its symbol, what the caller allocates
    and what the nest returns (("array", k): the k-th allocation; ("scalar", dtype))."""

    def __init__(self, symbol, text, allocations, results, returns_tuple, helpers=(),
                 raises=()):
        self.symbol, self.text = symbol, text
        self.allocations, self.results, self.returns_tuple = allocations, results, returns_tuple
        self.helpers = list(helpers)  # Helper records whose IR is linked in
        self.raises = list(raises)  # (exception name, message) of status 2, 3, ...


class _Array:
    """An array inside the nest: `data` points to its elements' type, `raw` to bytes."""

    def __init__(self, data, dtype, dims, strides, layout, raw):
        self.data, self.dtype, self.dims, self.strides, self.layout, self.raw = (
            data, dtype, dims, strides, layout, raw)


class _Emitter:
    """Statements of the nest's source to instructions. Every scalar name lives in a
    stack slot (LLVM's mem2reg makes registers of them), so loops, branches and
    reassigned accumulators need no bookkeeping here."""

    def __init__(self, fn: ast.FunctionDef, constants: dict, params: list, symbol: str,
                 helpers=None, module: ir.Module | None = None):
        names = [a.arg for a in fn.args.args]
        if len(names) != len(params) or fn.args.vararg or fn.args.kwonlyargs:
            raise Unsupported("arguments")
        *body, last = fn.body
        if not isinstance(last, ast.Return):
            raise Unsupported("no return at the end")
        self.params = dict(zip(names, params))
        self.constants = {k: (v, constant_type(v)) for k, v in constants.items()}
        self.allocations = [self._allocation(s) for s in body if _allocates(s)]
        self.body = [s for s in body if not _allocates(s)]
        self.converted = {}  # name -> source: `v = u.astype(np.float32)` of an allocation
        for stmt in self.body:
            converted = _conversion(stmt, self.allocations)
            if converted is not None:
                name, source, dtype = converted
                self.converted[name] = source
                shape = next(a.shape for a in self.allocations if a.name == source)
                self.allocations.append(Allocation(name, dtype, shape, None))
        self.ndims = {n: p.ndim for n, p in self.params.items() if p.is_array}
        self.ndims.update({a.name: len(a.shape) for a in self.allocations})
        arrays = {n: p.dtype for n, p in self.params.items() if p.is_array}
        arrays.update({a.name: a.dtype for a in self.allocations})
        self.views = {}  # name -> (base, index nodes): `v = p[k]`, rows of an array
        for stmt in self.body:
            view = _view(stmt, self.ndims)
            if view is not None:
                name, base, index = view
                self.views[name] = (base, index)
                self.ndims[name] = self.ndims[base] - len(index)
                arrays[name] = arrays[base]
        self.returned = self._returned(last)
        scalars = {n: p.dtype for n, p in self.params.items() if not p.is_array}
        scalars.update({k: t for k, (_, t) in self.constants.items()})
        self.raises: list[tuple[str, str]] = []  # (exception, message): status 2, 3, ...
        self.types = Types(scalars, arrays, helpers)
        self.types.infer(self.body)
        self.linked: dict[str, Helper] = {}  # symbol -> helper called
        self.counters: set[str] = set()
        self.module = ir.Module(symbol) if module is None else module
        self.symbol = symbol

    # ---- reading the source's shape
    def _allocation(self, stmt: ast.Assign) -> Allocation:
        call = stmt.value
        kind = rt_call(call, ALLOCATORS)
        if len(call.args) != 2 or call.keywords:
            raise Unsupported("allocation arguments")
        dims = call.args[0].elts if isinstance(call.args[0], ast.Tuple) else [call.args[0]]
        shape = []
        for d in dims:
            if isinstance(d, ast.Name) and d.id in self.params and \
                    not self.params[d.id].is_array and self.params[d.id].dtype.kind in "iu":
                shape.append(list(self.params).index(d.id))
            elif isinstance(d, ast.Constant) and type(d.value) is int:
                shape.append(("literal", d.value))
            else:
                raise Unsupported("allocation shape")
        if not shape:
            raise Unsupported("0-d allocation")
        if kind == "empty":
            dtype = np_dtype(np_attr(call.args[1]))
            if dtype is None:
                raise Unsupported("allocation dtype")
            return Allocation(stmt.targets[0].id, dtype, shape, None)
        fill = call.args[1]
        scalars = {n: p.dtype for n, p in self.params.items() if not p.is_array}
        scalars.update({k: t for k, (_, t) in self.constants.items()})
        return Allocation(stmt.targets[0].id, Types(scalars, {}).of(fill), shape, fill)

    def _returned(self, ret: ast.Return) -> list:
        value = ret.value
        if value is None or (isinstance(value, ast.Constant) and value.value is None):
            self.returns_tuple = False
            return []
        self.returns_tuple = isinstance(value, ast.Tuple)
        items = value.elts if self.returns_tuple else [value]
        if not all(isinstance(i, ast.Name) for i in items):
            raise Unsupported("return of an expression")
        for item in items:
            if item.id in self.params and self.params[item.id].is_array:
                raise Unsupported("returns an argument array")
            if item.id in self.views:
                self._view_result(item.id)
        return [i.id for i in items]

    def _view_result(self, name: str) -> tuple:
        """("view", base parameter, index: parameter positions or ("literal", k)) of a
        returned view, which the caller makes again from its own arguments."""
        base, index = self.views[name]
        names = list(self.params)
        spec = []
        for node in index:
            if isinstance(node, ast.Name) and node.id in self.params and \
                    not self.params[node.id].is_array:
                spec.append(names.index(node.id))
            elif isinstance(node, ast.Constant) and type(node.value) is int:
                spec.append(("literal", node.value))
            else:
                raise Unsupported("returns a view at a computed index")
        if base not in self.params:
            raise Unsupported("returns a view of a new array")
        return ("view", names.index(base), spec)

    # ---- building the function
    def translate(self) -> Translation:
        made = [a.name for a in self.allocations]
        scalar_results = [n for n in self.returned if n not in made]
        arg_types = []
        for p in self.params.values():
            arg_types += ([VOID_P] + [I64] * (2 * p.ndim)) if p.is_array else [memtype(p.dtype)]
        arg_types += [VOID_P] * (1 + len(scalar_results))
        fn = ir.Function(self.module, ir.FunctionType(I32, arg_types), self.symbol)
        fn.attributes.add("nounwind")
        self.fn = fn
        # Stack slots go in a block of their own, first: mem2reg promotes those only.
        self.slot_builder = ir.IRBuilder(fn.append_basic_block("slots"))
        start = fn.append_basic_block("start")
        self.builder = ir.IRBuilder(start)
        args = iter(fn.args)
        self.values, self.arrays, self.slots = {}, {}, {}
        writes_arguments = self._writes_arguments()
        for name, p in self.params.items():
            if p.is_array:
                raw = next(args)
                if not writes_arguments:
                    raw.add_attribute("noalias")
                dims = [next(args) for _ in range(p.ndim)]
                strides = [next(args) for _ in range(p.ndim)]
                self.arrays[name] = _Array(self._typed(raw, p.dtype), p.dtype, dims, strides,
                                           p.layout, raw)
            else:
                value = next(args)
                self.values[name] = (self.builder.trunc(value, I1) if p.dtype == BOOL
                                     else value)
        for name, t in self.types.scalars.items():
            if name not in self.values and name not in self.constants:
                self.slots[name] = self.slot_builder.alloca(lltype(t), name=name)
        made_slots = self.made = self.builder.bitcast(next(args), VOID_P.as_pointer())
        for k, alloc in enumerate(self.allocations):
            dims = [ir.Constant(I64, d[1]) if isinstance(d, tuple)
                    else cast(self.builder, fn.args[self._arg_position(d)],
                              self.params[list(self.params)[d]].dtype, INT)
                    for d in alloc.shape]
            raw = self._allocate(alloc, dims, made_slots, k)
            self.arrays[alloc.name] = _Array(self._typed(raw, alloc.dtype), alloc.dtype, dims,
                                             None, "C", raw)
            if alloc.fill is not None:
                self._fill(self.arrays[alloc.name], alloc.fill)
        self._block(self.body)
        results = []
        for name in self.returned:
            if name in made:
                results.append(("array", made.index(name)))
            elif name in self.views:
                results.append(self._view_result(name))
            else:
                dtype = self.types.scalars.get(name) or self.params[name].dtype
                value = self._load_name(name)
                self._store(self._typed(next(args), dtype), value, dtype)
                results.append(("scalar", dtype))
        self.builder.ret(ir.Constant(I32, 0))
        self.slot_builder.branch(start)
        return Translation(self.symbol, str(self.module), self.allocations, results,
                           self.returns_tuple, self.linked.values(), self.raises)

    def _allocate(self, alloc: Allocation, dims: list, made, k: int):
        """Allocate the k-th array as `runtime.empty` does (large ones from the buffer
        pool, others from Numba's allocator, 32-byte aligned); its MemInfo and data go to
        made[2k], made[2k + 1] for the caller, which makes the array of them. If it
        cannot be had, the arrays before it are released and the nest returns 1."""
        b = self.builder
        nbytes = b.mul(self._product(dims), ir.Constant(I64, alloc.dtype.itemsize))
        meminfo = self._entry_alloca(VOID_P)
        big = b.icmp_signed(">=", nbytes, ir.Constant(I64, pool.MIN_BYTES))
        with b.if_else(big, likely=False) as (pooled, small):
            with pooled:
                b.store(b.call(self._declare(pool.SYMBOL, VOID_P, [I64]), [nbytes]), meminfo)
            with small:
                alloc_fn = self._declare("NRT_MemInfo_alloc_aligned", VOID_P, [I64, I32])
                b.store(b.call(alloc_fn, [nbytes, ir.Constant(I32, 32)]), meminfo)
        meminfo = b.load(meminfo)
        with b.if_then(b.icmp_unsigned("==", meminfo, ir.Constant(VOID_P, None)), likely=False):
            release = self._declare("NRT_MemInfo_release", ir.VoidType(), [VOID_P])
            for earlier in range(k):
                b.call(release, [b.load(b.gep(made, [ir.Constant(I64, 2 * earlier)]))])
            b.ret(ir.Constant(I32, 1))
        data = b.call(self._declare("NRT_MemInfo_data", VOID_P, [VOID_P]), [meminfo])
        b.store(meminfo, b.gep(made, [ir.Constant(I64, 2 * k)]))
        b.store(data, b.gep(made, [ir.Constant(I64, 2 * k + 1)]))
        return data

    def _declare(self, name: str, result: ir.Type, args: list):
        fn = self.module.globals.get(name)
        if fn is None:
            fn = ir.Function(self.module, ir.FunctionType(result, args), name)
        return fn

    def _arg_position(self, param_index: int) -> int:
        position = 0
        for p in list(self.params.values())[:param_index]:
            position += 1 + 2 * p.ndim if p.is_array else 1
        return position

    def _writes_arguments(self) -> bool:
        """Whether the nest stores into an argument (or a view of one): its arrays may
        then overlap and are not `noalias`."""
        aliases = set(self.params)
        for name, (base, _) in self.views.items():
            if base in aliases:
                aliases.add(name)
        for node in ast.walk(ast.Module(self.body, [])):
            target = (node.targets[0] if isinstance(node, ast.Assign)
                      else node.target if isinstance(node, ast.AugAssign) else None)
            if isinstance(target, ast.Subscript) and target.value.id in aliases:
                return True
            if isinstance(node, ast.Expr) and rt_call(node.value, COPIES):
                return True  # a copy into an argument
        return False

    def _fill(self, array: _Array, fill) -> None:
        value, dtype = self.expr(fill)
        with self._loop(self._product(array.dims)) as k:
            self._store(self.builder.gep(array.data, [k], inbounds=True),
                        cast(self.builder, value, dtype, array.dtype), array.dtype)

    # ---- helpers
    def _product(self, dims: list):
        count = ir.Constant(I64, 1)
        for d in dims:
            count = self.builder.mul(count, d)
        return count

    def _typed(self, raw, dtype: np.dtype):
        return self.builder.bitcast(raw, memtype(dtype).as_pointer())

    def _store(self, pointer, value, dtype: np.dtype) -> None:
        self.builder.store(self.builder.zext(value, I8) if dtype == BOOL else value, pointer)

    def _load(self, pointer, dtype: np.dtype):
        value = self.builder.load(pointer)
        if dtype == BOOL:  # any nonzero byte is True, as Numba reads it
            return self.builder.icmp_unsigned("!=", value, ir.Constant(I8, 0))
        return value

    def _entry_alloca(self, typ: ir.Type):
        return self.slot_builder.alloca(typ)

    @contextlib.contextmanager
    def _loop(self, count):
        """for k in range(count): the body goes in the with-block, `k` is yielded."""
        b = self.builder
        counter = self._entry_alloca(I64)
        b.store(ir.Constant(I64, 0), counter)
        test, body, done = (self.fn.append_basic_block(n) for n in ("test", "body", "done"))
        b.branch(test)
        b.position_at_end(test)
        k = b.load(counter)
        b.cbranch(b.icmp_signed("<", k, count), body, done)
        b.position_at_end(body)
        yield k
        b.store(b.add(k, ir.Constant(I64, 1)), counter)
        b.branch(test)
        b.position_at_end(done)

    # ---- statements
    def _block(self, body: list) -> None:
        for stmt in body:
            self._stmt(stmt)

    def _stmt(self, stmt) -> None:
        if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name) and \
                stmt.targets[0].id in self.views:
            self._make_view(stmt.targets[0].id)
        elif isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name) and \
                stmt.targets[0].id in self.converted:
            self._convert(stmt.targets[0].id)
        elif isinstance(stmt, ast.Assign) and _fills(stmt.targets[0], self.arrays):
            self._fill(self.arrays[stmt.targets[0].value.id], stmt.value)
        elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            self._assign(stmt.targets[0], lambda: self.expr(stmt.value))
        elif isinstance(stmt, ast.Raise):
            self._raise(stmt)
        elif isinstance(stmt, ast.Expr) and rt_call(stmt.value, COPIES):
            self._copy(stmt.value)
        elif isinstance(stmt, ast.AugAssign):
            target = stmt.target
            load = ast.copy_location(
                type(target)(**{**vars(target), "ctx": ast.Load()}), target)
            self._assign(target, lambda: self._binop(stmt.op, self.expr(load),
                                                     self.expr(stmt.value)))
        elif isinstance(stmt, ast.For):
            self._for(stmt)
        elif isinstance(stmt, ast.If):
            self._if(stmt)
        elif not isinstance(stmt, ast.Pass):
            raise Unsupported(type(stmt).__name__)

    def _assign(self, target, value) -> None:
        if isinstance(target, ast.Name) and target.id in self.slots:
            dtype = self.types.scalars[target.id]
            result, source = value()
            self.builder.store(cast(self.builder, result, source, dtype), self.slots[target.id])
        elif isinstance(target, ast.Subscript):
            array, pointer = self._element(target)
            result, source = value()
            self._store(pointer, cast(self.builder, result, source, array.dtype), array.dtype)
        else:
            raise Unsupported("assignment target")

    def _convert(self, name: str) -> None:
        """`v = u.astype(T)`: u's elements converted (both C order, one flat loop)."""
        out, source = self.arrays[name], self.arrays[self.converted[name]]
        with self._loop(self._product(out.dims)) as k:
            value = self._load(self.builder.gep(source.data, [k], inbounds=True), source.dtype)
            self._store(self.builder.gep(out.data, [k], inbounds=True),
                        cast(self.builder, value, source.dtype, out.dtype), out.dtype)

    def _make_view(self, name: str) -> None:
        """`v = p[k]`: the rows of `p` at k, sharing its memory."""
        base_name, index = self.views[name]
        base = self.arrays[base_name]
        data = self._pointer(base, [self._index(i, d) for i, d in zip(index, base.dims)])
        strides = None if base.strides is None else base.strides[len(index):]
        self.arrays[name] = _Array(data, base.dtype, base.dims[len(index):], strides,
                                   "C" if base.layout == "C" else "A",
                                   self.builder.bitcast(data, VOID_P))

    def _raise(self, stmt: ast.Raise) -> None:
        """`raise IndexError('...')`: the arrays made so far are released and the nest
        returns the status the caller raises that exception for."""
        exc = stmt.exc
        if not (isinstance(exc, ast.Call) and isinstance(exc.func, ast.Name)
                and exc.func.id in ("IndexError", "ValueError") and len(exc.args) == 1
                and isinstance(exc.args[0], ast.Constant) and isinstance(exc.args[0].value, str)
                and not exc.keywords and stmt.cause is None):
            raise Unsupported("Raise")
        self.raises.append((exc.func.id, exc.args[0].value))
        b = self.builder
        release = self._declare("NRT_MemInfo_release", ir.VoidType(), [VOID_P])
        for k in range(len(self.allocations)):
            b.call(release, [b.load(b.gep(self.made, [ir.Constant(I64, 2 * k)]))])
        b.ret(ir.Constant(I32, 1 + len(self.raises)))
        b.position_at_end(self.fn.append_basic_block("after_raise"))  # unreachable

    def _copy(self, call: ast.Call) -> None:
        """`_rt.putN(_rt.as_any(out), start, _rt.as_any(src))`: out[start + i, ...] =
        src[i, ...], as a call of one copy function per kind in the module (a rolled
        loop stacks 16 layers: 16 copies of the loop would be optimised 16 times)."""
        args = call.args
        if len(args) != 3 or call.keywords or not all(
                rt_call(a, ("as_any",)) and isinstance(a.args[0], ast.Name)
                and a.args[0].id in self.arrays for a in (args[0], args[2])):
            raise Unsupported("copy arguments")
        out, src = self.arrays[args[0].args[0].id], self.arrays[args[2].args[0].id]
        start, kind = self.expr(args[1])
        ndim = int(call.func.attr[-1])
        if len(out.dims) != ndim or len(src.dims) != ndim or kind.kind not in "iu":
            raise Unsupported("copy ranks")
        fn = self._copier(out, src)
        b = self.builder
        values = [out.raw, *out.dims, *self._strides(out), cast(b, start, kind, INT),
                  src.raw, *src.dims, *self._strides(src), *src.dims, self.made]
        b.call(fn, [b.bitcast(v, VOID_P) if v.type == VOID_P.as_pointer() else v
                    for v in values])

    def _strides(self, array: _Array) -> list:
        if array.strides is not None:
            return array.strides
        strides = [ir.Constant(I64, array.dtype.itemsize)]
        for d in reversed(array.dims[1:]):
            strides.append(self.builder.mul(strides[-1], d))
        return strides[::-1]

    def _copier(self, out: _Array, src: _Array):
        """The module's copy function for these two kinds of array (translated from
        its loops, as a nest is)."""
        ndim = len(out.dims)
        name = (f"put{ndim}_{out.dtype.str[1:]}{out.layout}_"
                f"{src.dtype.str[1:]}{src.layout}")
        fn = self.module.globals.get(name)
        if fn is not None:
            return fn
        counters = [f"v{k}" for k in range(ndim)]
        sizes = ", ".join(f"p{3 + k}" for k in range(ndim))
        lines = [f"def {name}(p0, p1, p2, {sizes}):"]
        lines += [f"{'    ' * (k + 1)}for v{k} in range(p{3 + k}):" for k in range(ndim)]
        target = ", ".join(["p1 + v0", *counters[1:]])
        lines += [f"{'    ' * (ndim + 1)}p0[{target}] = p2[{', '.join(counters)}]",
                  "    return None"]
        params = [Param(out.dtype, ndim, out.layout), Param(INT),
                  Param(src.dtype, ndim, src.layout), *[Param(INT)] * ndim]
        source = "\n".join(lines)
        helper = _Emitter(ast.parse(source).body[0], {}, params, name, module=self.module)
        helper.translate()
        helper.fn.linkage = "internal"
        helper.fn.attributes.add("noinline")
        return helper.fn

    def _for(self, stmt: ast.For) -> None:
        it = stmt.iter
        if (stmt.orelse or not isinstance(stmt.target, ast.Name)
                or not isinstance(it, ast.Call) or not isinstance(it.func, ast.Name)
                or it.func.id != "range" or len(it.args) != 1 or it.keywords):
            raise Unsupported("loop form")
        count, dtype = self.expr(it.args[0])
        if dtype.kind not in "iu":
            raise Unsupported("loop count")
        self.counters.add(stmt.target.id)
        with self._loop(cast(self.builder, count, dtype, INT)) as k:
            self.builder.store(k, self.slots[stmt.target.id])
            self._block(stmt.body)

    def _if(self, stmt: ast.If) -> None:
        test = self._truth(*self.expr(stmt.test))
        with self.builder.if_else(test) as (then, otherwise):
            with then:
                self._block(stmt.body)
            with otherwise:
                self._block(stmt.orelse)

    def _truth(self, value, dtype: np.dtype):
        return cast(self.builder, value, dtype, BOOL)

    # ---- expressions: (value, dtype)
    def expr(self, node):  # noqa: C901 - one case per expression kind
        b = self.builder
        if isinstance(node, ast.Constant):
            dtype = constant_type(node.value)
            return constant(node.value, dtype), dtype
        if isinstance(node, ast.Name):
            return self._load_name(node.id), self.types.of(node)
        if isinstance(node, ast.BinOp):
            return self._binop(node.op, self.expr(node.left), self.expr(node.right))
        if isinstance(node, ast.UnaryOp):
            value, dtype = self.expr(node.operand)
            if isinstance(node.op, ast.Not):
                return b.not_(self._truth(value, dtype)), BOOL
            if isinstance(node.op, ast.UAdd):
                return value, dtype
            return (b.fneg(value, flags=FASTMATH) if dtype.kind == "f" else b.neg(value)), dtype
        if isinstance(node, ast.Compare):
            return self._compare(node), BOOL
        if isinstance(node, ast.BoolOp):
            return self._branches(node), BOOL
        if isinstance(node, ast.IfExp):
            return self._branches(node), self.types.of(node)
        if isinstance(node, ast.Subscript):
            array, pointer = self._element(node)
            return self._load(pointer, array.dtype), array.dtype
        if isinstance(node, ast.Call):
            return self._call(node)
        raise Unsupported(type(node).__name__)

    def _load_name(self, name: str):
        if name in self.values:
            return self.values[name]
        if name in self.constants:
            value, dtype = self.constants[name]
            return constant(value, dtype)
        if name in self.slots:
            return self.builder.load(self.slots[name])
        raise Unsupported(f"name {name}")

    def _binop(self, op, left, right):
        dtype = self.types.binop(op, left[1], right[1])
        work = arithmetic(left[1], right[1]) if dtype == BOOL else dtype
        if isinstance(op, ast.Div):
            work = dtype
        a, c = (cast(self.builder, v, t, work) for v, t in (left, right))
        b = self.builder
        if isinstance(op, (ast.BitAnd, ast.BitOr, ast.BitXor)):
            a, c = (cast(b, v, t, BOOL) for v, t in (left, right))
            return {ast.BitAnd: b.and_, ast.BitOr: b.or_, ast.BitXor: b.xor}[type(op)](a, c), BOOL
        if isinstance(op, ast.Pow):
            fn = self.module.declare_intrinsic("llvm.pow", [lltype(work)])
            return b.call(fn, [a, c]), work
        if work.kind == "f":
            make = {ast.Add: b.fadd, ast.Sub: b.fsub, ast.Mult: b.fmul, ast.Div: b.fdiv}
            return make[type(op)](a, c, flags=FASTMATH), work
        return {ast.Add: b.add, ast.Sub: b.sub, ast.Mult: b.mul}[type(op)](a, c), work

    def _compare(self, node: ast.Compare):
        (left, lt), (right, rt) = self.expr(node.left), self.expr(node.comparators[0])
        dtype = promote(lt, rt)
        a, c = cast(self.builder, left, lt, dtype), cast(self.builder, right, rt, dtype)
        op = COMPARE[type(node.ops[0])]
        if dtype.kind == "f":
            if op == "!=":
                return self.builder.fcmp_unordered(op, a, c)
            return self.builder.fcmp_ordered(op, a, c)
        if dtype.kind == "i":
            return self.builder.icmp_signed(op, a, c)
        return self.builder.icmp_unsigned(op, a, c)

    def _branches(self, node):
        """`a if c else b`, `a and b`, `a or b`, evaluating only what Python does (a
        branch may read an element the other guards); LLVM makes selects of them."""
        b = self.builder
        dtype = self.types.of(node)
        result = self._entry_alloca(lltype(dtype))
        if isinstance(node, ast.IfExp):
            test = self._truth(*self.expr(node.test))
            with b.if_else(test) as (then, otherwise):
                with then:
                    b.store(cast(b, *self.expr(node.body), dtype), result)
                with otherwise:
                    b.store(cast(b, *self.expr(node.orelse), dtype), result)
            return b.load(result)
        first, *rest = node.values
        b.store(self._truth(*self.expr(first)), result)
        for value in rest:
            go_on = b.load(result)
            if isinstance(node.op, ast.Or):
                go_on = b.not_(go_on)
            with b.if_then(go_on):
                b.store(self._truth(*self.expr(value)), result)
        return b.load(result)

    def _call(self, node: ast.Call):
        b = self.builder
        dtype = self.types.of(node)
        args = [self.expr(a) for a in node.args]
        if isinstance(node.func, ast.Attribute) and rt_call(node, (node.func.attr,)):
            return self._helper_call(node.func.attr, args), dtype
        (value, source), = args
        name = node.func.id if isinstance(node.func, ast.Name) else np_attr(node.func)
        if name == "abs":
            if dtype.kind == "f":
                return self._intrinsic("fabs", value, dtype), dtype
            if dtype.kind == "u":
                return value, dtype
            return b.select(b.icmp_signed("<", value, ir.Constant(value.type, 0)),
                            b.neg(value), value), dtype
        if name in MATH:
            return self._intrinsic(name, cast(b, value, source, dtype), dtype), dtype
        if name in LIBM:
            typ = lltype(dtype)
            fn = self._declare(LIBM[name] + ("f" if dtype.itemsize == 4 else ""), typ, [typ])
            return b.call(fn, [cast(b, value, source, dtype)]), dtype
        return cast(b, value, source, dtype), dtype

    def _helper_call(self, name: str, args: list):
        helper = self.types.helpers(name, tuple(t for _, t in args))
        fn = self.module.globals.get(helper.symbol)
        if fn is None:
            fnty = ir.FunctionType(ir.IntType(32), [VOID_P, VOID_P]
                                   + [lltype(t) for t in helper.args])
            fn = ir.Function(self.module, fnty, helper.symbol)
            self.linked[helper.symbol] = helper
        result = self._entry_alloca(lltype(helper.result))
        self.builder.call(fn, [self.builder.bitcast(result, VOID_P),
                               ir.Constant(VOID_P, None), *(v for v, _ in args)])
        return self.builder.load(result)

    def _intrinsic(self, name: str, value, dtype: np.dtype):
        typ = lltype(dtype)
        fn = self.module.declare_intrinsic(f"llvm.{name}", [typ])
        return self.builder.call(fn, [value])

    # ---- elements
    def _element(self, node: ast.Subscript):
        """(the array, a pointer to the element `node` names)."""
        if not isinstance(node.value, ast.Name) or node.value.id not in self.arrays:
            raise Unsupported("subscript of a non-array")
        array = self.arrays[node.value.id]
        index = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if len(index) != len(array.dims) or not index:
            raise Unsupported("not one element")
        return array, self._pointer(array, [self._index(i, d)
                                            for i, d in zip(index, array.dims)])

    def _pointer(self, array: _Array, ks: list):
        """A pointer to array[ks] (leading indexes: the first element of those rows). In
        C order it is computed from the sizes, as Numba does, so that the last axis is
        seen to be contiguous (and vectorised); otherwise from the strides."""
        b = self.builder
        if array.layout == "C":
            flat = ks[0]
            for k, d in zip(ks[1:], array.dims[1:]):
                flat = b.add(b.mul(flat, d), k)
            for d in array.dims[len(ks):]:
                flat = b.mul(flat, d)
            return b.gep(array.data, [flat], inbounds=True)
        offset = ir.Constant(I64, 0)
        for k, stride in zip(ks, array.strides):
            offset = b.add(offset, b.mul(k, stride))
        pointer = b.gep(array.raw, [offset], inbounds=True)
        return b.bitcast(pointer, memtype(array.dtype).as_pointer())

    def _index(self, node, dim):
        """An index as Numba reads it: a signed one that may be negative counts from
        the end (`i < 0 ? i + n : i`); unsigned ones and loop counters cannot be."""
        value, dtype = self.expr(node)
        if dtype.kind not in "iu":
            raise Unsupported("index type")
        value = cast(self.builder, value, dtype, INT if dtype.kind == "i" else np.dtype("uint64"))
        if dtype.kind == "u" or self._nonnegative(node):
            return value
        b = self.builder
        return b.select(b.icmp_signed("<", value, ir.Constant(I64, 0)), b.add(value, dim), value)

    def _nonnegative(self, node) -> bool:
        if isinstance(node, ast.Name):
            return node.id in self.counters
        if isinstance(node, ast.Constant):
            return type(node.value) is int and node.value >= 0
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            return self._nonnegative(node.left) and self._nonnegative(node.right)
        return False


def _conversion(stmt, allocations: list):
    """(name, source, dtype) of a top-level `v = u.astype(np.T)` of an allocation."""
    if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Name) and isinstance(stmt.value, ast.Call)):
        return None
    call = stmt.value
    if (isinstance(call.func, ast.Attribute) and call.func.attr == "astype"
            and isinstance(call.func.value, ast.Name) and len(call.args) == 1
            and not call.keywords and call.func.value.id in [a.name for a in allocations]):
        dtype = np_dtype(np_attr(call.args[0]))
        if dtype is not None:
            return stmt.targets[0].id, call.func.value.id, dtype
    return None


def _fills(target, arrays: dict) -> bool:
    """Whether an assignment's target is `a[...]` of a C-order array (a fill)."""
    return (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
            and target.value.id in arrays and arrays[target.value.id].strides is None
            and isinstance(target.slice, ast.Constant) and target.slice.value is Ellipsis)


def _view(stmt, ndims: dict):
    """(name, base, index) of a top-level `v = p[k]` taking rows of an array, or None."""
    if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Name) and isinstance(stmt.value, ast.Subscript)
            and isinstance(stmt.value.value, ast.Name) and stmt.value.value.id in ndims):
        index = stmt.value.slice
        index = index.elts if isinstance(index, ast.Tuple) else [index]
        if 0 < len(index) < ndims[stmt.value.value.id] and not any(
                isinstance(i, ast.Slice) for i in index):
            return stmt.targets[0].id, stmt.value.value.id, index
    return None


def _allocates(stmt) -> bool:
    return (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Name)
            and rt_call(stmt.value, ALLOCATORS) is not None)


def translate(py_func, params: list, symbol: str, helpers=None) -> Translation:
    """The nest `py_func` (a generated module's function) for these argument types."""
    lines = linecache.getlines(py_func.__code__.co_filename)
    if not lines:
        raise Unsupported("no source")
    tree = ast.parse("".join(lines))
    found = [n for n in tree.body
             if isinstance(n, ast.FunctionDef) and n.name == py_func.__name__]
    if len(found) != 1:
        raise Unsupported("source not found")
    fn = found[0]
    constants = {n.id: py_func.__globals__[n.id] for n in ast.walk(fn)
                 if isinstance(n, ast.Name) and n.id.startswith("_k")
                 and n.id in py_func.__globals__}
    return _Emitter(fn, constants, params, symbol, helpers).translate()


