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
from .array import _array_op, _same_dtype

# ------------------------------------------------------------------ helpers

def _matrix(aval, name, square=True):
    if aval.ndim < 2:
        raise ShapeError(f"{name}: expected a matrix (or a stack of them), got "
                         f"{format_shape(aval.shape)}")
    if not is_real_float(aval.dtype):
        raise TracerTypeError(f"{name}: only floating-point matrices are traced, got {aval.dtype}")


def _square(aval, name, checks):
    _matrix(aval, name)
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
        return ([f"{out} = np.empty({ctx.shape(aval)}, {ctx.dtype(aval)})"] + lines
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


# ------------------------------------------------------ triangular solves

def solve_triangular(a, b, lower, trans=False):
    """op(a)^-1 b for a triangular `a` (op: transpose when `trans`); b is (..., n, k)."""
    return ops.bind(SOLVE_TRIANGULAR, a, b, lower=bool(lower), trans=bool(trans))


def _solve_rule(name):
    def rule(avals, params, checks):
        a, b = avals
        n = _square(a, name, checks)
        _matrix(b, name, square=False)
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


SOLVE_TRIANGULAR = _array_op("solve_triangular", _solve_rule("solve_triangular"),
                             _batched(_tri_numpy), _emit_call("solve_triangular",
                                                              ("lower", "trans")),
                             _tri_vjp, _tri_jvp)


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


def _diagonal(x):
    """The main diagonal over the last two axes, as the last axis."""
    from ..core.shapes import bind
    i = np.arange(min(bind(x.aval.shape[-2]), bind(x.aval.shape[-1])))
    return ops.gather(x, [i, i], x.ndim - 2)


def _trace(x):
    d = _diagonal(x)
    return ops.reduce_sum(d, (d.ndim - 1,))


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
    n = _square(a, "eigh", checks)
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
    w, v = _eigh_unpack(packed)
    gw, gv = _eigh_unpack(g)
    inner = ops.add(ops.mul(ops.expand_dims(gw, (gw.ndim,)), eye_like(a)),
                    ops.mul(_gaps(w), ops.matmul(mT(v), gv)))
    return [_symmetrise(ops.matmul(ops.matmul(v, inner), mT(v)))]


def _eigh_jvp(tangents, packed, a):
    (da,) = tangents
    if da is None:
        return None
    w, v = _eigh_unpack(packed)
    m = ops.matmul(ops.matmul(mT(v), _symmetrise(da)), v)
    dw = _diagonal(m)
    dv = ops.matmul(v, ops.mul(_gaps(w), m))
    return ops.concatenate([ops.expand_dims(dw, (dw.ndim - 1,)), dv], dv.ndim - 2)


EIGH = _array_op("eigh", _eigh_rule, _batched(_eigh_numpy), _emit_call("eigh"),
                 _eigh_vjp, _eigh_jvp)


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
    _matrix(a, "svd")
    from ..core.shapes import bind
    m, n = bind(a.shape[-2]), bind(a.shape[-1])
    return [AVal(tuple(a.shape[:-2]) + (min(m, n), m + 1 + n), a.dtype)]


def _svd_numpy(a):
    u, s, vt = np.linalg.svd(a, full_matrices=False)
    return np.concatenate([u.T, s[:, None], vt], axis=1)


def _svd_vjp(g, packed, a):
    m = a.aval.shape[-2]
    u, s, vt = _svd_unpack(packed, m)
    gu, gs, gvt = _svd_unpack(g, m)
    v, gv = mT(vt), mT(gvt)
    s2 = ops.mul(s, s)
    f = _gaps(s2)  # 1 / (s_j^2 - s_i^2)
    s_row = ops.expand_dims(s, (s.ndim - 1,))  # multiplies columns: X S
    s_col = ops.expand_dims(s, (s.ndim,))  # multiplies rows: S X
    ut_gu = ops.matmul(mT(u), gu)
    vt_gv = ops.matmul(vt, gv)
    core = ops.add(ops.mul(ops.mul(f, ops.sub(ut_gu, mT(ut_gu))), s_row),
                   ops.mul(s_col, ops.mul(f, ops.sub(vt_gv, mT(vt_gv)))))
    core = ops.add(core, ops.mul(ops.expand_dims(gs, (gs.ndim,)), eye_like(s)))
    out = ops.matmul(ops.matmul(u, core), vt)
    inv_s = ops.div(1.0, s)
    gu_proj = ops.sub(gu, ops.matmul(u, ut_gu))  # (I - U U^T) gU
    out = ops.add(out, ops.matmul(ops.mul(gu_proj, ops.expand_dims(inv_s, (inv_s.ndim - 1,))),
                                  vt))
    gv_proj = ops.sub(gv, ops.matmul(v, vt_gv))  # (I - V V^T) gV
    out = ops.add(out, ops.matmul(ops.mul(u, ops.expand_dims(inv_s, (inv_s.ndim - 1,))),
                                  mT(gv_proj)))
    return [out]


def _svd_jvp(tangents, packed, a):
    (da,) = tangents
    if da is None:
        return None
    m = a.aval.shape[-2]
    u, s, vt = _svd_unpack(packed, m)
    v = mT(vt)
    dp = ops.matmul(ops.matmul(mT(u), da), v)
    ds = _diagonal(dp)
    f = _gaps(ops.mul(s, s))
    s_row = ops.expand_dims(s, (s.ndim - 1,))
    s_col = ops.expand_dims(s, (s.ndim,))
    inv_s = ops.expand_dims(ops.div(1.0, s), (s.ndim - 1,))
    du = ops.matmul(u, ops.mul(f, ops.add(ops.mul(dp, s_row), ops.mul(s_col, mT(dp)))))
    da_v = ops.matmul(da, v)
    du = ops.add(du, ops.mul(ops.sub(da_v, ops.matmul(u, ops.matmul(mT(u), da_v))), inv_s))
    dv = ops.matmul(v, ops.mul(f, ops.add(ops.mul(s_col, dp), ops.mul(mT(dp), s_row))))
    dat_u = ops.matmul(mT(da), u)
    dv = ops.add(dv, ops.mul(ops.sub(dat_u, ops.matmul(v, ops.matmul(vt, dat_u))), inv_s))
    return ops.concatenate([mT(du), ops.expand_dims(ds, (ds.ndim,)), mT(dv)], ds.ndim)


SVD = _array_op("svd", _svd_rule, _batched(_svd_numpy), _emit_call("svd"), _svd_vjp, _svd_jvp)
