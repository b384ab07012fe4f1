"""The registry's linear-algebra records: LAPACK calls with their derivative rules.

Each record is an ARRAY primitive over the last two axes (leading axes are a
batch the kernel loops over). Kernels call disk-cached helpers in runtime.py
(`_rt.cholesky`, `_rt.solve`, ...), so Numba types LAPACK once per dtype, not
once per kernel. Decompositions with several results (slogdet, eigh, svd)
return them packed in one array, unpacked by slices (free index maps):

    slogdet -> (..., 2)            [sign, log|det|]
    eigh    -> (..., n + 1, n)     [w; V]
    svd     -> (..., k, m + 1 + n) [U^T | s | Vt]   k = min(m, n)

Derivatives are the standard formulas (Murray 2016 for Cholesky, Giles 2008
for solve/slogdet, Townsend 2016 for the SVD); eigh and svd assume distinct
eigen/singular values, as every autodiff library does. Symmetric inputs
(cholesky, eigh) get the symmetrised gradient, as in JAX.
"""

from __future__ import annotations

import numpy as np

from ..core.dtypes import is_real_float
from ..core.errors import ShapeError, TracerTypeError
from ..core.ir import AVal
from ..core.shapes import broadcast_shapes, format_shape, join
from ..trace import ops
from ..trace.batch_axes import all_front, leading_batch_rule
from .array import _array_op, _same_dtype

# ------------------------------------------------------------------ helpers

def _matrix(aval, name, square=True, complex_ok=False):
    if aval.ndim < 2:
        raise ShapeError(f"{name}: expected a matrix (or a stack of them), got "
                         f"{format_shape(aval.shape)}")
    if not (is_real_float(aval.dtype) or complex_ok and np.issubdtype(aval.dtype,
                                                                       np.complexfloating)):
        raise TracerTypeError(f"{name}: only floating-point matrices are traced, got {aval.dtype}")


def _square(aval, name, checks, complex_ok=False):
    _matrix(aval, name, complex_ok=complex_ok)
    return join(aval.shape[-1], aval.shape[-2], f"{name} (square matrix)", checks)


def _batched(fn):
    """A NumPy implementation over the last two axes, looped over leading ones."""
    def run(*xs, **params):
        xs = [np.asarray(x) for x in xs]
        batch = xs[0].shape[:-2]
        if not batch:
            return fn(*xs, **params)
        outs = [fn(*[x[i] for x in xs], **params) for i in np.ndindex(*batch)]
        return np.stack(outs).reshape(batch + outs[0].shape)

    return run


def _emit_call(helper, flags=()):
    """`out = _rt.helper(x, y, *flags)`, looped over the batch axes."""
    def emit(ctx, out, ins, eqn):
        extra = "".join(f", {bool(eqn.params[f])}" for f in flags)
        aval = eqn.outputs[0].aval
        nbatch = eqn.inputs[0].aval.ndim - 2
        if nbatch == 0:
            args = ", ".join(f"np.ascontiguousarray({i})" for i in ins)
            return [f"{out} = _rt.{helper}({args}{extra})"]
        idx, lines, indent = ctx.loops(ctx.dims(aval)[:nbatch], 0)
        at = ", ".join(idx)
        args = ", ".join(f"np.ascontiguousarray({i}[{at}])" for i in ins)
        return ([ctx.empty(out, eqn.outputs[0])] + lines
                + [" " * indent + f"{out}[{at}] = _rt.{helper}({args}{extra})"])

    return emit


def mT(x):
    return ops.swap_last(x)


def tril_mask(x, k=0):
    n = _size(ops.aval_of(x).shape[-1])
    return np.tri(n, n, k, dtype=bool)


def _size(d):
    from ..core.shapes import bind
    return bind(d)


def eye_like(x):
    n = _size(ops.aval_of(x).shape[-1])
    return np.eye(n, dtype=x.dtype)


def _phi(x):
    """The lower triangle with the diagonal halved."""
    n = _size(ops.aval_of(x).shape[-1])
    weights = np.tril(np.ones((n, n)), -1) + 0.5 * np.eye(n)
    return ops.mul(x, weights.astype(x.dtype))


def _symmetrise(x):
    return ops.mul(ops.add(x, mT(x)), 0.5)


def _outer_last(a, b):
    """a @ b^T for stacks of matrices."""
    return ops.matmul(a, mT(b))


# --------------------------------------------------------------- cholesky

def cholesky(a):
    return ops.bind(CHOLESKY, a)


def _cholesky_rule(avals, params, checks):
    (a,) = avals
    _square(a, "cholesky", checks)
    return [AVal(a.shape, a.dtype)]


def _cholesky_vjp(g, L, a):
    P = _phi(ops.matmul(mT(L), g))
    Y = solve_triangular(L, P, lower=True, trans=True)  # L^-T P
    S = mT(solve_triangular(L, mT(Y), lower=True, trans=True))  # L^-T P L^-1
    return [_symmetrise(S)]


def _cholesky_jvp(tangents, L, a):
    (da,) = tangents
    if da is None:
        return None
    Z = solve_triangular(L, _symmetrise(da), lower=True)  # L^-1 dA
    M = mT(solve_triangular(L, mT(Z), lower=True))  # L^-1 dA L^-T
    return ops.matmul(L, _phi(M))


CHOLESKY = _array_op("cholesky", _cholesky_rule, _batched(np.linalg.cholesky),
                     _emit_call("cholesky"), _cholesky_vjp, _cholesky_jvp)
CHOLESKY.batch = leading_batch_rule("cholesky")  # along the last two axes: the batch leads


# ------------------------------------------------------ triangular solves

def solve_triangular(a, b, lower, trans=False):
    """op(a)^-1 b for a triangular `a` (op: transpose when `trans`); b is (..., n, k)."""
    return ops.bind(SOLVE_TRIANGULAR, a, b, lower=bool(lower), trans=bool(trans))


def _solve_rule(name):
    def rule(avals, params, checks):
        a, b = avals
        n = _square(a, name, checks, complex_ok=name == "solve")
        _matrix(b, name, square=False, complex_ok=name == "solve")
        _same_dtype(avals, name)
        join(n, b.shape[-2], f"{name} (rows of b)", checks)
        batch = broadcast_shapes([a.shape[:-2], b.shape[:-2]], f"{name} (batch)", checks)
        if len(a.shape) != len(b.shape):
            raise ShapeError(f"{name}: a and b need the same batch axes")
        return [AVal(tuple(batch) + tuple(b.shape[-2:]), b.dtype)]

    return rule


def _tri_numpy(a, b, *, lower, trans):
    import scipy.linalg

    return scipy.linalg.solve_triangular(a, b, lower=lower, trans=1 if trans else 0)


def _triangle(x, lower):
    mask = tril_mask(x) if lower else ~tril_mask(x, -1)
    return ops.select(mask, x, ops.zeros_like(x))


def _tri_vjp(g, x, a, b, *, lower, trans):
    gb = solve_triangular(a, g, lower, not trans)
    ga = ops.neg(_outer_last(x, gb) if trans else _outer_last(gb, x))
    return [_triangle(ga, lower), gb]


def _tri_jvp(tangents, x, a, b, *, lower, trans):
    da, db = tangents
    rhs = ops.zeros_like(x) if db is None else db
    if da is not None:
        da = _triangle(da, lower)
        rhs = ops.sub(rhs, ops.matmul(mT(da) if trans else da, x))
    return solve_triangular(a, rhs, lower, trans)


def _batch_solve(prim):
    """Under vmap both operands batched (a solve's operands share their leading axes)."""
    def rule(size, args, dims, **params):
        return ops.bind(prim, *all_front(size, args, dims), **params), 0

    return rule


SOLVE_TRIANGULAR = _array_op("solve_triangular", _solve_rule("solve_triangular"),
                             _batched(_tri_numpy), _emit_call("solve_triangular",
                                                              ("lower", "trans")),
                             _tri_vjp, _tri_jvp)
SOLVE_TRIANGULAR.batch = _batch_solve(SOLVE_TRIANGULAR)


# ------------------------------------------------------------ general solve

def solve(a, b):
    """a^-1 b for b of shape (..., n, k)."""
    return ops.bind(SOLVE, a, b)


def _solve_vjp(g, x, a, b):
    gb = solve(mT(a), g)
    return [ops.neg(_outer_last(gb, x)), gb]


def _solve_jvp(tangents, x, a, b):
    da, db = tangents
    rhs = ops.zeros_like(x) if db is None else db
    if da is not None:
        rhs = ops.sub(rhs, ops.matmul(da, x))
    return solve(a, rhs)


SOLVE = _array_op("solve", _solve_rule("solve"), _batched(np.linalg.solve),
                  _emit_call("solve"), _solve_vjp, _solve_jvp)
SOLVE.batch = _batch_solve(SOLVE)


# ------------------------------------------------------------------ slogdet

def slogdet(a):
    packed = ops.bind(SLOGDET, a)
    n = packed.ndim - 1
    return _take_last(packed, 0, n), _take_last(packed, 1, n)


def _take_last(x, index, axis):
    starts = [index if k == axis else 0 for k in range(x.ndim)]
    stops = [index + 1 if k == axis else None for k in range(x.ndim)]
    return ops.squeeze(ops.static_slice(x, starts, stops, [1] * x.ndim), (axis,))


def _slogdet_rule(avals, params, checks):
    (a,) = avals
    _square(a, "slogdet", checks)
    return [AVal(tuple(a.shape[:-2]) + (2,), a.dtype)]


def _trace(x):
    return ops.reduce_sum(ops.diagonal(x), (x.ndim - 2,))


def _slogdet_numpy(a):
    sign, logabs = np.linalg.slogdet(a)
    return np.array([sign, logabs], dtype=a.dtype)


def _slogdet_vjp(g, out, a):
    g_logabs = _take_last(g, 1, g.ndim - 1)
    inv_t = solve(mT(a), ops.broadcast_to(eye_like(a), a.aval.shape))
    return [ops.mul(ops.expand_dims(g_logabs, (g_logabs.ndim, g_logabs.ndim + 1)), inv_t)]


def _slogdet_jvp(tangents, out, a):
    (da,) = tangents
    if da is None:
        return None
    dlog = _trace(solve(a, da))
    zero = ops.zeros_like(dlog)
    return ops.concatenate([ops.expand_dims(zero, (zero.ndim,)),
                            ops.expand_dims(dlog, (dlog.ndim,))], dlog.ndim)


SLOGDET = _array_op("slogdet", _slogdet_rule, _batched(_slogdet_numpy), _emit_call("slogdet"),
                    _slogdet_vjp, _slogdet_jvp)
SLOGDET.batch = leading_batch_rule("slogdet")


# --------------------------------------------------------------------- eigh

def eigh(a):
    packed = ops.bind(EIGH, a)
    return _eigh_unpack(packed)


def _eigh_unpack(packed):
    axis = packed.ndim - 2
    n = _size(ops.aval_of(packed).shape[-1])
    w = _take_last(packed, 0, axis)
    starts = [1 if k == axis else 0 for k in range(packed.ndim)]
    stops = [n + 1 if k == axis else None for k in range(packed.ndim)]
    v = ops.static_slice(packed, starts, stops, [1] * packed.ndim)
    return w, v


def _eigh_rule(avals, params, checks):
    (a,) = avals
    n = _square(a, "eigh", checks, complex_ok=True)
    from ..core.shapes import bind
    return [AVal(tuple(a.shape[:-2]) + (bind(n) + 1, n), a.dtype)]


def _eigh_numpy(a):
    w, v = np.linalg.eigh(a)
    return np.concatenate([w[None, :], v], axis=0)


def _gaps(w):
    """F[i, j] = 1 / (w_j - w_i) off the diagonal, 0 on it."""
    diff = ops.sub(ops.expand_dims(w, (w.ndim - 1,)), ops.expand_dims(w, (w.ndim,)))
    off = ~np.eye(_size(ops.aval_of(w).shape[-1]), dtype=bool)
    safe = ops.select(off, diff, ops.ones_like(diff))
    return ops.select(off, ops.div(1.0, safe), ops.zeros_like(diff))


def _eigh_vjp(g, packed, a):
    """V (diag(gw) + F o (V^T gV)) V^T, symmetrised; for a Hermitian matrix
    conj(V) (...) V^T made Hermitian (the transpose of the JVP under JAX's pairing)."""
    w, v = _eigh_unpack(packed)
    gw, gv = _eigh_unpack(g)
    w, gw = _re(w), _re(gw)  # real values packed with complex vectors
    inner = ops.add(ops.mul(ops.expand_dims(gw, (gw.ndim,)), eye_like(a)),
                    ops.mul(_gaps(w), ops.matmul(mT(v), gv)))
    return [_hermitise(ops.matmul(ops.matmul(cj(v), inner), mT(v)))]


def _eigh_jvp(tangents, packed, a):
    (da,) = tangents
    if da is None:
        return None
    w, v = _eigh_unpack(packed)
    m = ops.matmul(ops.matmul(mH(v), _hermitise(da)), v)
    dw = ops.diagonal(m)
    if _is_complex(dw):  # the eigenvalues are real: Re(diag(V^H dA V))
        dw = ops.convert(ops.real(dw), dw.dtype)
    dv = ops.matmul(v, ops.mul(_gaps(_re(w)), m))
    return ops.concatenate([ops.expand_dims(dw, (dw.ndim - 1,)), dv], dv.ndim - 2)


def _is_complex(x):
    return ops.is_complex(ops.aval_of(x).dtype)


def cj(x):
    """conj for complex values; real ones as they are (no equation)."""
    return ops.conj(x) if _is_complex(x) else x


def mH(x):
    return cj(mT(x))


def _re(x):
    return ops.real(x) if _is_complex(x) else x


def _hermitise(x):
    return ops.mul(ops.add(x, mH(x)), 0.5)


EIGH = _array_op("eigh", _eigh_rule, _batched(_eigh_numpy), _emit_call("eigh"),
                 _eigh_vjp, _eigh_jvp)
EIGH.batch = leading_batch_rule("eigh")


# ---------------------------------------------------------------------- svd

def svd(a):
    """(U, s, Vt) of the reduced SVD (full_matrices=False)."""
    return _svd_unpack(ops.bind(SVD, a), a.aval.shape[-2])


def _svd_unpack(packed, m):
    m = _size(m)
    axis = packed.ndim - 1
    width = _size(ops.aval_of(packed).shape[-1])

    def columns(start, stop):
        starts = [start if k == axis else 0 for k in range(packed.ndim)]
        stops = [stop if k == axis else None for k in range(packed.ndim)]
        return ops.static_slice(packed, starts, stops, [1] * packed.ndim)

    return mT(columns(0, m)), _take_last(packed, m, axis), columns(m + 1, width)


def _svd_rule(avals, params, checks):
    (a,) = avals
    _matrix(a, "svd", complex_ok=True)
    from ..core.shapes import bind
    m, n = bind(a.shape[-2]), bind(a.shape[-1])
    return [AVal(tuple(a.shape[:-2]) + (min(m, n), m + 1 + n), a.dtype)]


def _svd_numpy(a):
    u, s, vt = np.linalg.svd(a, full_matrices=False)
    return np.concatenate([u.T, s[:, None], vt], axis=1)


def _svd_vjp(g, packed, a):
    """The transpose of `_svd_jvp` under JAX's pairing Re(sum(ct * t)) (Townsend
    2016 for real matrices; conjugates and the phase term for complex ones)."""
    m = a.aval.shape[-2]
    u, s, vt = _svd_unpack(packed, m)
    gu, gs, gvt = _svd_unpack(g, m)
    s, gs = _re(s), _re(gs)
    v, gv = mH(vt), mH(gvt)
    f = _gaps(ops.mul(s, s))  # 1 / (s_j^2 - s_i^2)
    s_row = ops.expand_dims(s, (s.ndim - 1,))  # multiplies columns: X S
    s_col = ops.expand_dims(s, (s.ndim,))  # multiplies rows: S X
    inv_s = ops.expand_dims(ops.div(1.0, s), (s.ndim - 1,))
    ut_gu = ops.matmul(mT(u), gu)
    vt_gv = ops.matmul(mT(v), gv)
    core = ops.add(ops.mul(ops.mul(f, ops.sub(ut_gu, mH(ut_gu))), s_row),
                   ops.mul(s_col, ops.mul(f, ops.sub(vt_gv, mH(vt_gv)))))
    core = ops.add(core, ops.mul(ops.expand_dims(gs, (gs.ndim,)), eye_like(s)))
    if _is_complex(u):  # dU's phase term i Im(diag(U^H dA V)) / s
        phase = ops.div(ops.imag(ops.diagonal(ut_gu)), s)
        core = ops.add(core, _diag_matrix(ops.make_complex(ops.zeros_like(phase), phase), s))
    out = ops.matmul(ops.matmul(cj(u), core), cj(vt))
    gu_proj = ops.sub(gu, ops.matmul(cj(u), ut_gu))  # (I - conj(U) U^T) gU
    out = ops.add(out, ops.matmul(ops.mul(gu_proj, inv_s), cj(vt)))
    gv_h = mH(gv)
    gv_proj = ops.sub(gv_h, ops.matmul(ops.matmul(gv_h, cj(v)), mT(v)))  # gV^H (I - conj(V V^H))
    out = ops.add(out, ops.matmul(ops.mul(cj(u), inv_s), gv_proj))
    return [out]


def _diag_matrix(d, like):
    return ops.mul(ops.expand_dims(d, (d.ndim,)), eye_like(like))


def _svd_jvp(tangents, packed, a):
    """JAX's rule: dS = U^H dA V; ds = Re(diag(dS)); dU, dV from the gaps F
    (and, for complex matrices, dU's phase term i Im(diag(dS)) / s)."""
    (da,) = tangents
    if da is None:
        return None
    m = a.aval.shape[-2]
    u, s, vt = _svd_unpack(packed, m)
    s = _re(s)
    v = mH(vt)
    dp = ops.matmul(ops.matmul(mH(u), da), v)
    ds = ops.diagonal(dp)
    f = _gaps(ops.mul(s, s))
    s_row = ops.expand_dims(s, (s.ndim - 1,))
    s_col = ops.expand_dims(s, (s.ndim,))
    inv_s = ops.expand_dims(ops.div(1.0, s), (s.ndim - 1,))
    inner = ops.mul(f, ops.add(ops.mul(dp, s_row), ops.mul(s_col, mH(dp))))
    if _is_complex(dp):
        phase = ops.div(ops.imag(ds), s)
        inner = ops.add(inner, _diag_matrix(ops.make_complex(ops.zeros_like(phase), phase), s))
        ds = ops.convert(ops.real(ds), ds.dtype)
    du = ops.matmul(u, inner)
    da_v = ops.matmul(da, v)
    du = ops.add(du, ops.mul(ops.sub(da_v, ops.matmul(u, ops.matmul(mH(u), da_v))), inv_s))
    dv = ops.matmul(v, ops.mul(f, ops.add(ops.mul(s_col, dp), ops.mul(mH(dp), s_row))))
    dah_u = ops.matmul(mH(da), u)
    dv = ops.add(dv, ops.mul(ops.sub(dah_u, ops.matmul(v, ops.matmul(vt, dah_u))), inv_s))
    return ops.concatenate([mT(du), ops.expand_dims(ds, (ds.ndim,)), mH(dv)], ds.ndim)


SVD = _array_op("svd", _svd_rule, _batched(_svd_numpy), _emit_call("svd"), _svd_vjp, _svd_jvp)
SVD.batch = leading_batch_rule("svd")


# ---------------------------------------------------------------------- eig

def eig(a):
    """(w, V) of a general complex matrix (stack): unit-norm eigenvector columns."""
    return _eigh_unpack(ops.bind(EIG, a))


def _eig_rule(avals, params, checks):
    (a,) = avals
    n = _square(a, "eig", checks, complex_ok=True)
    if not np.issubdtype(a.dtype, np.complexfloating):
        raise TracerTypeError(f"eig: the matrix must be complex (np.linalg.eig converts), "
                              f"got {a.dtype}")
    from ..core.shapes import bind
    return [AVal(tuple(a.shape[:-2]) + (bind(n) + 1, n), a.dtype)]


def _eig_numpy(a):
    w, v = np.linalg.eig(a)
    return np.concatenate([w[None, :], v], axis=0).astype(a.dtype)


def _unit_norm_part(v, dv):
    """Re(diag(V^H dV)) per column: the change of each column's norm, which the
    tangent of a unit-norm eigenvector must not have."""
    return ops.real(ops.reduce_sum(ops.mul(ops.conj(v), dv), (v.ndim - 2,)))


def _eig_jvp(tangents, packed, a):
    """dw = diag(M), dV = V (F o M) minus its norm change, M = V^-1 dA V
    (Magnus 1985; the eigenvalues' rule is JAX's)."""
    (da,) = tangents
    if da is None:
        return None
    w, v = _eigh_unpack(packed)
    m = solve(v, ops.matmul(da, v))
    dw = ops.diagonal(m)
    dv = ops.matmul(v, ops.mul(_gaps(w), m))
    dv = ops.sub(dv, ops.mul(v, ops.expand_dims(_unit_norm_part(v, dv), (dv.ndim - 2,))))
    return ops.concatenate([ops.expand_dims(dw, (dw.ndim - 1,)), dv], dv.ndim - 2)


def _eig_vjp(g, packed, a):
    """The transpose of the JVP under JAX's pairing Re(sum(ct * t)):
    V^-T (diag(gw) + F o (V^T G0)) V^T, G0 = gV - conj(V) diag(Re(diag(gV^T V)))."""
    w, v = _eigh_unpack(packed)
    gw, gv = _eigh_unpack(g)
    norm_part = ops.real(ops.reduce_sum(ops.mul(gv, v), (v.ndim - 2,)))
    g0 = ops.sub(gv, ops.mul(ops.conj(v), ops.expand_dims(norm_part, (v.ndim - 2,))))
    inner = ops.add(ops.mul(ops.expand_dims(gw, (gw.ndim,)), eye_like(a)),
                    ops.mul(_gaps(w), ops.matmul(mT(v), g0)))
    return [solve(mT(v), ops.matmul(inner, mT(v)))]


EIG = _array_op("eig", _eig_rule, _batched(_eig_numpy), _emit_call("eig"), _eig_vjp, _eig_jvp)
EIG.batch = leading_batch_rule("eig")
