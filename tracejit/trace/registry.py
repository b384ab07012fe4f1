"""The primitive record and the registry every stage reads.

A `Primitive` holds every rule for one op (see `tracejit.primitives` for the
records): its shape and dtype rule, its NumPy implementation, its derivative
rules (written with `tracejit.trace.ops`, so an adjoint is IR), and its Numba
emission. The records register themselves here when `tracejit.primitives` is
imported; the op layer, the transforms and the backend look them up by name
and keep no per-op tables of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..core.shapes import Sym, resolve
from .tracer import bind

# The kinds of record. CONTROL: an equation holding programs (loops, branches).
ELEMENTWISE, INDEXMAP, REDUCE, ARRAY, CONTROL = (
    "elementwise", "indexmap", "reduce", "array", "control")


@dataclass
class Primitive:
    name: str
    kind: str
    abstract_eval: Callable  # (avals, params, checks) -> [AVal]
    impl: Callable  # (*arrays, **params) -> array
    partials: Callable | None = None  # elementwise: (out, *xs, **p) -> [d out / d x_i | None]
    vjp: Callable | None = None  # (g, out, *xs, **p) -> [cotangent_i | None]
    jvp: Callable | None = None  # (tangents, out, *xs, **p) -> tangent | None
    scalar: str | Callable | None = None  # elementwise: "np.exp({0})" or fn(*exprs, **p)
    complex_scalar: str | Callable | None = None  # the same for complex operands, if other
    index_map: Callable | None = None  # (in_aval, out_aval, **p) -> [(axis|None, off, step)]
    monoid: tuple | None = None  # reduce: (identity(dtype), "update statement")
    accumulate: Callable | None = None  # reduce: input dtype -> accumulator dtype
    empty_error: str | None = None  # reduce without identity: NumPy's error when empty
    emit: Callable | None = None  # array ops: (ctx, out_name, in_names, eqn) -> [lines]
    differentiable: bool = True
    nan_safe: bool = False  # multiply cotangents with a zero-preserving product
    shape_only: bool = False  # reads only its operands' sizes, never their values
    forward_identity: bool = False  # computes operand 0 unchanged (lowered away by passes)
    simplify: Callable | None = None  # (eqn) -> replacement atom, Eqn, or None (passes.py)
    fold: Callable | None = None  # (eqn, defining(atom) -> Eqn | None) -> atom or None
    blas: bool = False  # codegen: calls BLAS (operands may be strided views)
    view: Callable | None = None  # (operand name, **params) -> a zero-copy view expression
    view_if: Callable | None = None  # (eqn) -> whether `view` applies (default: always)
    # the view is BLAS's slower case (a transposed operand): copied once, before a loop
    # whose body multiplies by it at every step, rather than read as a view there
    view_slow_in_blas: bool = False
    # its output is its operands laid end to end along params[pieces_along]
    # (concatenate): codegen lets the nest that makes them store them there
    pieces_along: str | None = None
    strided_operands: bool = False  # codegen: reads operands by indexing (views welcome)
    raises: bool = False  # may raise inside a loop nest (codegen keeps such kernels serial)
    indexed: bool = False  # elementwise: `scalar` also gets index=[loop indices], sizes=[dims]
    # Equations with several outputs (loops, branches): `bind` returns a list,
    # `vjp` gets a list of output cotangents (None: zero), and `jvp` is
    # (tangents, *xs, **p) -> (outputs, output tangents), one equation for both.
    multiple_results: bool = False
    # Reverse mode that must change the forward computation (a loop saving its
    # per-step residuals): (*xs, **p) -> (outputs, pullback(cotangents) -> [ct_i]).
    vjp_forward: Callable | None = None
    # (eqn, used: [bool per output]) -> a smaller equation (or None) when some
    # outputs are dead (passes.dce); its outputs are a subset of eqn's.
    prune: Callable | None = None
    # (params) -> sizes this equation defines (a while loop's trip count).
    dims_defined: Callable | None = None
    # loops: (eqn) -> [(operand, body, the body's input for it)] for the operands the
    # body reads unchanged at every step (codegen lays them out for that once)
    loop_constants: Callable | None = None
    # interpreter: a cheaper `impl` whose result NumPy's broadcasting completes,
    # used when every consumer is elementwise (a broadcast need not be materialised)
    impl_broadcasting: Callable | None = None
    # interpreter: (eqn, lazy, sizes) -> a NumPy expression of "{0}" (the operand)
    # doing `impl` (`impl_broadcasting` if lazy) inline, with the parameters
    # worked out once per program instead of on every call; `sizes(dims)` spells
    # a tuple of sizes in the interpreter's source. None: call `impl`.
    impl_source: Callable | None = None
    # vmap: (size, args, dims, **p) -> (out, out dim), each dim an axis or None
    # (unbatched); lists for multiple results. Set where the record is defined
    # (elementwise ops and reductions get their family's), with trace/batch_axes.py.
    batch: Callable | None = None

    def __repr__(self) -> str:
        return f"<primitive {self.name}>"

    def bind(self, *args, **params):
        return bind(self, *args, **params)

    def defined_dims(self, params) -> tuple:
        return self.dims_defined(params) if self.dims_defined else ()

    def scalar_for(self, avals):
        """The scalar template for operands of these types: the runtime's polynomial
        math is real-only, and Numba's complex `/` raises where NumPy gives inf/NaN."""
        if self.complex_scalar is not None and any(a.dtype.kind == "c" for a in avals):
            return self.complex_scalar
        return self.scalar


REGISTRY: dict[str, Primitive] = {}


def register(prim: Primitive) -> Primitive:
    assert prim.name not in REGISTRY, prim.name
    REGISTRY[prim.name] = prim
    return prim



def canonical_params(params: dict) -> tuple:
    """Hashable form of params (symbolic dims resolved), for CSE."""
    return tuple((key, _canonical(val)) for key, val in sorted(params.items()))


def _canonical(value):
    if isinstance(value, Sym):
        return resolve(value)
    if isinstance(value, tuple):
        return tuple(_canonical(v) for v in value)
    return value
