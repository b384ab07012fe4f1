"""Products and contractions on tracers: `np.dot`, `tensordot`, `einsum`, `inner`, `vdot`.

Every contraction lowers to transposes, reshapes and one (batched) `matmul`
primitive, so BLAS does the work and the derivatives come from matmul's rule.
NumPy's semantics are followed exactly; what cannot be (an einsum form this
module does not lower) raises instead of guessing.
"""

from __future__ import annotations

import string

import numpy as np

from ..core.errors import ShapeError, UnsupportedError, with_location
from ..core.shapes import bind as bind_dim
from ..primitives import linalg as L_
from ..trace import ops
from .api import amax, amin, asarray, implements, ravel, sum_, tracer_methods


@implements(np.dot)
def dot(a, b, out=None):
    """NumPy's dot: a product for 0-d operands; for N-D, the last axis of `a`
    with the second-to-last of `b`, every other axis kept (not matmul's
    broadcasting of batch axes)."""
    if out is not None:
        raise UnsupportedError(with_location("np.dot(out=) is not supported while tracing"))
    a, b = asarray(a), asarray(b)
    if a.ndim == 0 or b.ndim == 0:
        return ops.mul(a, b)
    if b.ndim <= 2 and a.ndim <= 2 or b.ndim == 1:
        return ops.matmul(a, b)
    return tensordot(a, b, ((a.ndim - 1,), (b.ndim - 2,)))


@implements(np.tensordot)
def tensordot(a, b, axes=2):
    a, b = asarray(a), asarray(b)
    if isinstance(axes, (int, np.integer)):
        axes_a, axes_b = range(a.ndim - int(axes), a.ndim), range(int(axes))
    else:
        axes_a, axes_b = ((ax,) if isinstance(ax, (int, np.integer)) else ax for ax in axes)
    axes_a = [int(k) % a.ndim for k in axes_a]
    axes_b = [int(k) % b.ndim for k in axes_b]
    if len(axes_a) != len(axes_b):
        raise ShapeError(with_location("tensordot: the axes lists differ in length"))
    free_a = [k for k in range(a.ndim) if k not in axes_a]
    free_b = [k for k in range(b.ndim) if k not in axes_b]
    return contract(ops.transpose(a, free_a + axes_a), ops.transpose(b, axes_b + free_b),
                    len(free_a), len(axes_a))


def contract(a, b, n_free_a: int, n_inner: int, n_batch: int = 0):
    """a: (batch, free_a, inner), b: (batch, inner, free_b) -> (batch, free_a, free_b)
    by one matmul; a group of several axes is merged into one by a reshape."""
    fa = ops.aval_of(a).shape[n_batch:n_batch + n_free_a]
    fb = ops.aval_of(b).shape[n_batch + n_inner:]
    if n_inner == 0:  # an outer product
        a = ops.expand_dims(a, tuple(range(a.ndim, a.ndim + len(fb))))
        b = ops.expand_dims(b, tuple(range(n_batch, n_batch + len(fa))))
        return ops.mul(a, b)
    a2 = _group(a, n_batch, [fa, ops.aval_of(a).shape[n_batch + n_free_a:]])
    b2 = _group(b, n_batch, [ops.aval_of(b).shape[n_batch:n_batch + n_inner], fb])
    out = ops.matmul(a2, b2)
    return ops.reshape(out, tuple(ops.aval_of(out).shape[:-2]) + tuple(fa) + tuple(fb))


def _group(x, n_batch, groups):
    merged = []
    for dims in groups:
        if len(dims) == 1:
            merged.append(dims[0])
        else:
            merged.append(int(np.prod([bind_dim(d) for d in dims])))
    return ops.reshape(x, tuple(ops.aval_of(x).shape[:n_batch]) + tuple(merged))


@implements(np.inner)
def inner(a, b):
    a, b = asarray(a), asarray(b)
    if a.ndim == 0 or b.ndim == 0:
        return ops.mul(a, b)
    return tensordot(a, b, ((a.ndim - 1,), (b.ndim - 1,)))


@implements(np.vdot)
def vdot(a, b):
    """sum(conj(a) * b) over the flattened arrays (NumPy conjugates the first)."""
    return ops.matmul(ops.conj(ravel(a)), ravel(b))


@implements(np.matmul)
def matmul(a, b, **unused):
    return ops.matmul(a, b)


# ------------------------------------------------------------------- einsum

@implements(np.einsum)
def einsum(subscripts, *operands, optimize=None, **unused):
    if unused:
        raise UnsupportedError(with_location("np.einsum(out=/dtype=) is not traced"))
    if not isinstance(subscripts, str):  # the sublist form: op, [0, 1], op, [1, 2], [0, 2]
        subscripts, operands = _from_sublists((subscripts,) + operands)
    operands = [asarray(x) for x in operands]
    inputs, output = _parse(subscripts.replace(" ", ""), operands)
    terms = [_single(x, spec, _needed(inputs[:k] + inputs[k + 1:], output))
             for k, (x, spec) in enumerate(zip(operands, inputs))]
    x, spec = terms[0]
    for k, (y, spec_y) in enumerate(terms[1:], start=1):
        keep = set(output) | {c for s in inputs[k + 1:] for c in s}
        x, spec = _pair(x, spec, y, spec_y, keep)
    x, spec = _single(x, spec, output)
    return ops.transpose(x, [spec.index(c) for c in output])


def _from_sublists(args):
    """einsum(a, [0, 1], b, [1, 2], [0, 2]) as ("ab,bc->ac", [a, b]); Ellipsis is '...'."""
    output = args[-1] if len(args) % 2 else None  # an odd count ends with the output
    pairs = args[:-1] if len(args) % 2 else args
    operands, sublists = list(pairs[0::2]), list(pairs[1::2])

    def letters(sublist):
        out = []
        for k in sublist:
            if k is Ellipsis:
                out.append("...")
            elif isinstance(k, (int, np.integer)) and 0 <= int(k) < 52:
                out.append(string.ascii_letters[int(k)])
            else:
                raise ValueError(with_location(
                    f"np.einsum: subscript {k!r} in a sublist must be an int in [0, 52) or ..."))
        return "".join(out)

    spec = ",".join(letters(sub) for sub in sublists)
    if output is not None:
        spec += "->" + letters(output)
    return spec, operands


def _parse(subscripts, operands):
    lhs, arrow, rhs = subscripts.partition("->")
    inputs = lhs.split(",")
    if len(inputs) != len(operands):
        raise ShapeError(with_location(
            f"np.einsum: {len(inputs)} operand specs for {len(operands)} operands"))
    free = [c for c in string.ascii_uppercase + string.ascii_lowercase if c not in subscripts]
    rank = max((x.ndim - len(s.replace("...", "")) for x, s in zip(operands, inputs)
                if "..." in s), default=0)
    ellipsis = "".join(free[:rank])
    expanded = []
    for x, spec in zip(operands, inputs):
        if "..." in spec:
            n = x.ndim - len(spec.replace("...", ""))
            spec = spec.replace("...", ellipsis[rank - n:])
        if len(spec) != x.ndim or not spec.isalpha():
            raise ShapeError(with_location(
                f"np.einsum: subscripts {spec!r} do not fit an operand of {x.ndim} dims"))
        expanded.append(spec)
    if arrow:
        output = rhs.replace("...", ellipsis)
    else:
        counts = {c: "".join(expanded).count(c) for c in "".join(expanded)}
        output = ellipsis + "".join(sorted(c for c, n in counts.items()
                                           if n == 1 and c not in ellipsis))
    return expanded, output


def _needed(others, output):
    return set(output) | {c for s in others for c in s}


def _single(x, spec, keep):
    """Take diagonals of repeated letters and sum letters nobody needs."""
    for c in dict.fromkeys(spec):
        while spec.count(c) > 1:
            first, second = spec.index(c), spec.index(c, spec.index(c) + 1)
            from .shape import diagonal  # lazily: numpy_shape imports this module
            x = diagonal(x, 0, first, second)
            spec = spec.replace(c, "", 2) + c
    summed = [k for k, c in enumerate(spec) if c not in keep]
    if summed:
        x = ops.reduce_sum(x, tuple(summed))
        spec = "".join(c for c in spec if c in keep)
    return x, spec


def _pair(x, sx, y, sy, keep):
    """Contract two operands: batch letters (both, kept), inner (both, not kept)."""
    x, sx = _single(x, sx, keep | set(sy))
    y, sy = _single(y, sy, keep | set(sx))
    batch = [c for c in sx if c in sy and c in keep]
    inner = [c for c in sx if c in sy and c not in keep]
    free_x = [c for c in sx if c not in sy]
    free_y = [c for c in sy if c not in sx]
    x = ops.transpose(x, [sx.index(c) for c in batch + free_x + inner])
    y = ops.transpose(y, [sy.index(c) for c in batch + inner + free_y])
    # batch letters of size 1 on one side broadcast, as in NumPy: matmul does that
    out = contract(x, y, len(free_x), len(inner), len(batch))
    return out, "".join(batch + free_x + free_y)


# ------------------------------------------------------------ np.linalg

def _square_matrix(a, name, square=True, complex_ok=False):
    a = asarray(a)
    if a.ndim < 2:
        raise ShapeError(with_location(f"np.linalg.{name}: expected a matrix, got {a.ndim}-D"))
    if ops.is_complex(a.dtype) and complex_ok:
        return a
    if ops.is_complex(a.dtype):
        raise UnsupportedError(with_location(
            f"np.linalg.{name} of a complex matrix is not traced (real matrices only)"))
    return a if np.issubdtype(a.dtype, np.floating) else ops.convert(a, np.float64)


def _as_columns(a, b):
    """NumPy's solve: b is a vector (..., n) only when it is 1-D, else (..., n, k).
    Returns (a, b as (..., n, k) with a's batch, undo)."""
    a, b = ops.promote(a, asarray(b), to_float=True)
    vector = b.ndim == 1
    if vector:
        b = ops.expand_dims(b, (1,))
    batch = broadcast_batch(a, b)
    a = ops.broadcast_to(a, batch + tuple(ops.aval_of(a).shape[-2:]))
    b = ops.broadcast_to(b, batch + tuple(ops.aval_of(b).shape[-2:]))
    return a, b, (lambda x: ops.squeeze(x, (x.ndim - 1,))) if vector else (lambda x: x)


def broadcast_batch(*xs):
    from ..core.shapes import broadcast_shapes
    from ..trace.tracer import current_builder
    checks = current_builder().checks if current_builder() else None
    return tuple(broadcast_shapes([ops.aval_of(x).shape[:-2] for x in xs], "linalg (batch)",
                                  checks))


@implements(np.linalg.cholesky)
def cholesky(a, upper=False):
    L = L_.cholesky(_square_matrix(a, "cholesky"))
    return ops.swap_last(L) if upper else L


@implements(np.linalg.solve)
def solve(a, b):
    a, b, undo = _as_columns(_square_matrix(a, "solve"), b)
    return undo(L_.solve(a, b))


@implements(np.linalg.inv)
def inv(a):
    a = _square_matrix(a, "inv")
    n = bind_dim(ops.aval_of(a).shape[-1])
    return L_.solve(a, ops.broadcast_to(np.eye(n, dtype=a.dtype), ops.aval_of(a).shape))


@implements(np.linalg.slogdet)
def slogdet(a):
    return _SlogdetResult(*L_.slogdet(_square_matrix(a, "slogdet")))


@implements(np.linalg.det)
def det(a):
    sign, logabsdet = L_.slogdet(_square_matrix(a, "det"))
    return ops.mul(sign, ops.exp(logabsdet))


@implements(np.linalg.eigh)
def eigh(a, UPLO="L"):
    """NumPy's eigh: the symmetric matrix read from one triangle of `a` (UPLO).

    Complex (Hermitian) matrices too. Derivatives follow JAX: the gradient with
    respect to `a` is symmetrised ((G + G^T) / 2; Hermitian for complex `a`),
    which is the exact one when `a` is symmetric. For an `a`
    that is not, NumPy's values depend on one triangle only, and the exact
    derivative of that function puts everything in that triangle; build the
    symmetric matrix yourself to get it: `eigh(np.tril(a) + np.tril(a, -1).T)`."""
    a = _square_matrix(a, "eigh", complex_ok=True)
    if _uplo(UPLO, "eigh") == "U":  # the upper triangle, read as the lower one of a^H
        a = ops.conj(ops.swap_last(a)) if ops.is_complex(a.dtype) else ops.swap_last(a)
    w, v = L_.eigh(a)
    return _EighResult(ops.real(w) if ops.is_complex(w.dtype) else w, v)


def _uplo(UPLO, name):
    """'L' or 'U' as NumPy reads them (either case); anything else raises as NumPy does."""
    uplo = UPLO.upper() if isinstance(UPLO, str) else UPLO
    if uplo not in ("L", "U"):
        raise ValueError(with_location(f"np.linalg.{name}: UPLO must be 'L' or 'U', got "
                                       f"{UPLO!r}"))
    return uplo


@implements(np.linalg.eig)
def eig(a):
    """Eigenvalues and unit-norm right eigenvectors of a general matrix (stack).

    The results are always complex, as in JAX (NumPy returns real arrays when
    every eigenvalue of a real input is real: a type that depends on the
    values). The order is LAPACK's for complex matrices. Derivatives: the
    eigenvalues' is JAX's; the eigenvectors' keeps their norm (as autograd's)
    and assumes distinct eigenvalues; a column's phase is arbitrary, so only
    phase-free functions of V (|V|, V diag(w) V^-1, ...) have meaningful ones."""
    a = asarray(a)
    if a.ndim < 2:
        raise ShapeError(with_location(f"np.linalg.eig: expected a matrix, got {a.ndim}-D"))
    if not ops.is_complex(a.dtype):
        real = a.dtype if np.issubdtype(a.dtype, np.floating) else np.float64
        a = ops.convert(a, np.result_type(real, np.complex64))
    w, v = L_.eig(a)
    return _EigResult(w, v)


@implements(np.linalg.eigvals)
def eigvals(a):
    return eig(a)[0]


@implements(np.linalg.eigvalsh)
def eigvalsh(a, UPLO="L"):
    return eigh(a, UPLO)[0]


@implements(np.linalg.svd)
def svd(a, full_matrices=True, compute_uv=True, hermitian=False):
    a = _square_matrix(a, "svd", complex_ok=True)
    u, s, vt = L_.svd(a)
    s = ops.real(s) if ops.is_complex(s.dtype) else s  # packed with complex vectors
    if not compute_uv:
        return s
    m, n = (bind_dim(d) for d in ops.aval_of(a).shape[-2:])
    if full_matrices and m != n:
        raise UnsupportedError(with_location(
            "np.linalg.svd(full_matrices=True) of a non-square matrix is not traced (the "
            "extra singular vectors have no derivative)", hint="pass full_matrices=False"))
    return _SVDResult(u, s, vt)


@implements(np.linalg.pinv)
def pinv(a, rcond=None, hermitian=False, *, rtol=None):
    """The Moore-Penrose inverse by the SVD: singular values at or below
    rcond * max(s) count as zero (NumPy's default rcond: max(m, n) * eps)."""
    a = _square_matrix(a, "pinv", square=False)
    m, n = (bind_dim(d) for d in ops.aval_of(a).shape[-2:])
    cutoff = rcond if rcond is not None else rtol
    if cutoff is None:
        cutoff = max(m, n) * np.finfo(a.dtype).eps
    u, s, vt = L_.svd(a)
    big = ops.gt(s, ops.mul(amax(s, -1, keepdims=True), cutoff))
    inv_s = ops.select(big, ops.div(1.0, ops.select(big, s, ops.ones_like(s))), ops.zeros_like(s))
    return ops.matmul(ops.mul(ops.swap_last(vt), ops.expand_dims(inv_s, (inv_s.ndim - 1,))),
                      ops.swap_last(u))


def _named(name, fields):
    from collections import namedtuple
    return namedtuple(name, fields)


_SlogdetResult = _named("SlogdetResult", "sign logabsdet")
_EighResult = _named("EighResult", "eigenvalues eigenvectors")
_EigResult = _named("EigResult", "eigenvalues eigenvectors")
_SVDResult = _named("SVDResult", "U S Vh")


@implements(np.linalg.norm)
def norm(x, ord=None, axis=None, keepdims=False):
    """np.linalg.norm: every vector ord, and matrix ords None/'fro'/'nuc'/1/-1/2/-2/inf/-inf."""
    x = asarray(x)
    if not ops.is_inexact(x.dtype):
        x = ops.convert(x, np.float64)
    if axis is None and ord is None:
        return _keep(ops.norm_root(sum_(ops.abs2(x))), x, tuple(range(x.ndim)), keepdims)
    if axis is None:
        axis = tuple(range(x.ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    axes = tuple(int(a) % x.ndim for a in axes)
    if len(axes) == 1:
        return _keep(_vector_norm(x, ord, axes[0]), x, axes, keepdims)
    if len(axes) != 2:
        raise ShapeError(with_location("np.linalg.norm: axis must name 1 or 2 axes"))
    return _keep(_matrix_norm(x, ord, axes), x, axes, keepdims)


def _keep(out, x, axes, keepdims):
    return ops.expand_dims(out, tuple(sorted(axes))) if keepdims else out


def _vector_norm(x, ord, axis):
    absx = ops.abs_(x)
    if ord is None or ord == 2:
        return ops.norm_root(sum_(ops.abs2(x), axis))
    if ord == np.inf:
        return amax(absx, axis)
    if ord == -np.inf:
        return amin(absx, axis)
    if ord == 0:
        return sum_(ops.convert(ops.ne(x, 0.0), absx.dtype), axis)
    if ord == 1:
        return sum_(absx, axis)
    if isinstance(ord, str):
        raise ValueError(with_location(f"np.linalg.norm: invalid ord {ord!r} for vectors"))
    return ops.norm_root(sum_(ops.power(absx, float(ord)), axis), float(ord))


def _matrix_norm(x, ord, axes):
    row, col = axes
    if ord in (None, "fro"):
        return ops.norm_root(sum_(ops.abs2(x), axes))
    if ord in (1, -1, np.inf, -np.inf):
        summed, pick = (row, col) if ord in (1, -1) else (col, row)
        sums = sum_(ops.abs_(x), summed, keepdims=True)
        reduce = amax if ord > 0 else amin
        return ops.squeeze(reduce(sums, pick, keepdims=True), tuple(sorted(axes)))
    if ord in (2, -2, "nuc"):
        rest = [k for k in range(x.ndim) if k not in axes]
        s = svd(ops.transpose(x, rest + [row, col]), compute_uv=False)
        if ord == "nuc":
            return sum_(s, -1)
        return (amax if ord == 2 else amin)(s, -1)
    raise ValueError(with_location(f"np.linalg.norm: invalid ord {ord!r} for matrices"))


tracer_methods(dot=lambda self, b: dot(self, b))
