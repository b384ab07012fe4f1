"""SciPy on tracers: `scipy.special` functions and `scipy.stats` log-densities.

Most of `scipy.special` are ufuncs, so they reach `Tracer.__array_ufunc__`
like NumPy's: they are entries of the same `UFUNCS` table. SciPy's Python
functions (`logsumexp`, `softmax`, ...) and the distribution singletons'
methods (`scipy.stats.norm.logpdf`, ...) are rebound while tracing (see
numpy_build.rebind_while_tracing): a call with a tracer among its arguments
runs the composite here, any other call SciPy's own code. The distribution
methods are rebound on the singleton objects, so `from scipy.stats import
norm` sees them too; a Python function imported by name before tracing
(`from scipy.special import logsumexp`) keeps SciPy's code, which then runs
on tracers through NumPy's functions where it can.

SciPy's modules are slow to import (scipy.stats ~1.3 s), so this module
does not import them: when a thread opens a trace, the SciPy modules the
process has finished importing get their entries registered (user code can
only call those); a module still being imported, by any thread, is not read.
"""

from __future__ import annotations

import sys

import numpy as np

from ..core.errors import ShapeError, UnsupportedError, with_location
from ..core.shapes import bind as bind_dim
from ..primitives import linalg as L_
from ..primitives.array import polygamma
from ..trace import ops
from . import composites
from .api import LATE_REGISTRARS, UFUNCS, asarray, sum_
from .build import REBINDINGS, rebind_while_tracing

LOG_2PI = float(np.log(2.0 * np.pi))
SQRT_HALF = float(np.sqrt(0.5))


def _floats(*xs):
    return ops.promote(*xs, to_float=True)


def gammaln(x):
    (x,) = _floats(x)
    return ops.bind(ops.R["lgamma"], x)


def digamma(x):
    (x,) = _floats(x)
    return polygamma(x, 0)


def gamma(x):
    """sign * exp(gammaln): Gamma alternates sign between its poles below 0."""
    (x,) = _floats(x)
    odd = ops.eq(ops.remainder(ops.floor(x), 2.0), 1.0)
    sign = ops.select(ops.logical_and(ops.lt(x, 0.0), odd), -1.0, 1.0)
    return ops.mul(sign, ops.exp(gammaln(x)))


def erf(x):
    (x,) = _floats(x)
    return ops.bind(ops.R["erf"], x)


def erfc(x):
    (x,) = _floats(x)
    return ops.bind(ops.R["erfc"], x)


def ndtr(x):
    """The standard normal CDF, 0.5 * erfc(-x / sqrt 2) (accurate in both tails)."""
    return ops.mul(0.5, erfc(ops.mul(x, -SQRT_HALF)))


def log_ndtr(x):
    return ops.log(ndtr(x))


def xlogy(x, y):
    """x * log(y), and 0 where x == 0 and y == 0; d/dx is log(y) (as in JAX)."""
    x, y = _floats(x, y)
    both = ops.logical_and(ops.eq(x, 0.0), ops.eq(y, 0.0))
    return ops.mul(x, ops.log(ops.select(both, 1.0, y)))


def xlog1py(x, y):
    x, y = _floats(x, y)
    both = ops.logical_and(ops.eq(x, 0.0), ops.eq(y, -1.0))
    return ops.mul(x, ops.log1p(ops.select(both, 0.0, y)))


def betaln(a, b):
    return ops.sub(ops.add(gammaln(a), gammaln(b)), gammaln(ops.add(a, b)))


def logit(p):
    (p,) = _floats(p)
    return ops.sub(ops.log(p), ops.log1p(ops.neg(p)))


def register_special(special) -> None:
    UFUNCS.update(_special_ufuncs(special))
    for name, traced in SPECIAL_FUNCTIONS.items():
        rebind_while_tracing(special, name, traced)


def _special_ufuncs(special) -> dict:
    return {
        special.expit: lambda x: composites.sigmoid(_floats(x)[0]), special.logit: logit,
        special.erf: erf, special.erfc: erfc, special.gammaln: gammaln, special.psi: digamma,
        special.gamma: gamma, special.ndtr: ndtr, special.log_ndtr: log_ndtr,
        special.xlogy: xlogy, special.xlog1py: xlog1py, special.betaln: betaln,
    }


def _polygamma(n, x):
    if np.ndim(n) or not float(n).is_integer() or n < 0:
        raise UnsupportedError(with_location(
            "scipy.special.polygamma: the order n must be a non-negative integer constant"))
    (x,) = _floats(x)
    return polygamma(x, int(n))


def _logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False):
    if b is not None or return_sign:
        raise UnsupportedError(with_location(
            "scipy.special.logsumexp with b= or return_sign= is not traced"))
    return composites.logsumexp(a, axis=axis, keepdims=keepdims)


def _softmax(x, axis=None):
    x = asarray(x)
    return composites.softmax(x, axis=tuple(range(x.ndim)) if axis is None else axis)


def _log_softmax(x, axis=None):
    x = asarray(x)
    return composites.log_softmax(x, axis=tuple(range(x.ndim)) if axis is None else axis)


def _multigammaln(a, d):
    d = int(d)
    total = ops.mul(ops.full_like(a, 0.25 * d * (d - 1) * np.log(np.pi)), 1.0)
    for j in range(d):
        total = ops.add(total, gammaln(ops.sub(a, 0.5 * j)))
    return total


SPECIAL_FUNCTIONS = {"logsumexp": _logsumexp, "softmax": _softmax,
                     "log_softmax": _log_softmax, "polygamma": _polygamma,
                     "multigammaln": _multigammaln}


# ------------------------------------------------------------- scipy.linalg

def _solve_triangular(a, b, trans=0, lower=False, unit_diagonal=False, **unused):
    if unit_diagonal or trans not in (0, 1, "N", "T"):
        raise UnsupportedError(with_location(
            "scipy.linalg.solve_triangular: unit_diagonal / conjugate trans are not traced"))
    a, b = _floats(asarray(a), asarray(b))
    vector = ops.aval_of(b).ndim == 1
    b2 = ops.expand_dims(b, (1,)) if vector else b
    x = L_.solve_triangular(a, b2, lower=lower, trans=trans in (1, "T"))
    return ops.squeeze(x, (1,)) if vector else x


def _cholesky(a, lower=False, **unused):
    (a,) = _floats(asarray(a))
    if not lower:  # the upper factor U = L^T of the same matrix (upper triangle read)
        return ops.swap_last(L_.cholesky(ops.swap_last(a)))
    return L_.cholesky(a)


LINALG_FUNCTIONS = {"solve_triangular": _solve_triangular, "cholesky": _cholesky}


def register_linalg(linalg) -> None:
    for name, traced in LINALG_FUNCTIONS.items():
        rebind_while_tracing(linalg, name, traced)


# --------------------------------------------------------------- scipy.stats
# Log-densities as in HIPS autograd's scipy.stats: location-scale families
# standardise z = (x - loc) / scale and subtract log(scale).

def _standard(x, loc, scale):
    x, loc, scale = _floats(x, loc, scale)
    return ops.div(ops.sub(x, loc), scale), ops.log(scale)


def _support(z, value, lower=0.0):
    """value where z > lower, -inf elsewhere (outside the support)."""
    return ops.select(ops.gt(z, lower), value, -np.inf)


def norm_logpdf(x, loc=0.0, scale=1.0):
    z, log_scale = _standard(x, loc, scale)
    return ops.sub(ops.sub(ops.mul(ops.integer_pow(z, 2), -0.5), log_scale), 0.5 * LOG_2PI)


def norm_cdf(x, loc=0.0, scale=1.0):
    return ndtr(_standard(x, loc, scale)[0])


def norm_logcdf(x, loc=0.0, scale=1.0):
    return log_ndtr(_standard(x, loc, scale)[0])


def norm_sf(x, loc=0.0, scale=1.0):
    return ndtr(ops.neg(_standard(x, loc, scale)[0]))


def norm_logsf(x, loc=0.0, scale=1.0):
    return log_ndtr(ops.neg(_standard(x, loc, scale)[0]))


def t_logpdf(x, df, loc=0.0, scale=1.0):
    z, log_scale = _standard(x, loc, scale)
    (df,) = _floats(df)
    half = ops.mul(ops.add(df, 1.0), 0.5)
    norm_const = ops.sub(ops.sub(gammaln(half), gammaln(ops.mul(df, 0.5))),
                         ops.mul(ops.log(ops.mul(df, np.pi)), 0.5))
    tail = ops.mul(half, ops.log1p(ops.div(ops.integer_pow(z, 2), df)))
    return ops.sub(ops.sub(norm_const, log_scale), tail)


def gamma_logpdf(x, a, loc=0.0, scale=1.0):
    z, log_scale = _standard(x, loc, scale)
    (a,) = _floats(a)
    safe = ops.select(ops.gt(z, 0.0), z, ops.ones_like(z))
    value = ops.sub(ops.sub(ops.sub(xlogy(ops.sub(a, 1.0), safe), safe), gammaln(a)), log_scale)
    return _support(z, value)


def chi2_logpdf(x, df, loc=0.0, scale=1.0):
    return gamma_logpdf(x, ops.mul(_floats(df)[0], 0.5), loc, ops.mul(_floats(scale)[0], 2.0))


def beta_logpdf(x, a, b, loc=0.0, scale=1.0):
    z, log_scale = _standard(x, loc, scale)
    a, b = _floats(a, b)
    inside = ops.logical_and(ops.gt(z, 0.0), ops.lt(z, 1.0))
    safe = ops.select(inside, z, ops.full_like(z, 0.5))
    value = ops.add(xlogy(ops.sub(a, 1.0), safe), xlog1py(ops.sub(b, 1.0), ops.neg(safe)))
    value = ops.sub(ops.sub(value, betaln(a, b)), log_scale)
    return ops.select(inside, value, -np.inf)


def expon_logpdf(x, loc=0.0, scale=1.0):
    z, log_scale = _standard(x, loc, scale)
    return ops.select(ops.ge(z, 0.0), ops.sub(ops.neg(z), log_scale), -np.inf)


def laplace_logpdf(x, loc=0.0, scale=1.0):
    z, log_scale = _standard(x, loc, scale)
    return ops.sub(ops.sub(ops.neg(ops.abs_(z)), log_scale), float(np.log(2.0)))


def poisson_logpmf(k, mu, loc=0):
    k, mu = _floats(ops.sub(k, loc), mu)
    value = ops.sub(ops.sub(xlogy(k, mu), mu), gammaln(ops.add(k, 1.0)))
    return ops.select(ops.ge(k, 0.0), value, -np.inf)


def dirichlet_logpdf(x, alpha):
    """Components along the first axis of x, as scipy.stats.dirichlet."""
    x, alpha = _floats(asarray(x), asarray(alpha))
    if ops.aval_of(alpha).ndim != 1:
        raise ShapeError(with_location("dirichlet: alpha must be 1-D"))
    spread = ops.expand_dims(alpha, tuple(range(1, ops.aval_of(x).ndim)))
    log_b = ops.sub(sum_(gammaln(alpha)), gammaln(sum_(alpha)))
    return ops.sub(sum_(xlogy(ops.sub(spread, 1.0), x), 0), log_b)


def mvn_logpdf(x, mean=None, cov=1, allow_singular=False):
    """Through the Cholesky factor: -(d log 2 pi + log det + Mahalanobis) / 2."""
    x = asarray(x)
    cov = asarray(cov)
    dim = bind_dim(ops.aval_of(cov).shape[0]) if ops.aval_of(cov).ndim else (
        bind_dim(ops.aval_of(x).shape[-1]) if ops.aval_of(x).ndim else 1)
    if ops.aval_of(x).ndim == 0:
        x = ops.expand_dims(x, (0,))
    if ops.aval_of(x).ndim == 1:
        x = ops.expand_dims(x, (1,) if dim == 1 else (0,))
    squeeze = [k for k, d in enumerate(ops.aval_of(x).shape[:-1]) if bind_dim(d) == 1]
    centred = x if mean is None else ops.sub(x, mean)
    (centred,) = _floats(centred)
    if ops.aval_of(cov).ndim < 2:  # a scalar variance or a diagonal
        variances = ops.broadcast_to(_floats(cov)[0], (dim,))
        maha = sum_(ops.div(ops.integer_pow(centred, 2), variances), -1)
        logdet = sum_(ops.log(variances))
    else:
        cov, centred = _floats(cov, centred)
        chol = L_.cholesky(cov)
        z = L_.solve_triangular(chol, ops.swap_last(centred), lower=True)
        maha = sum_(ops.integer_pow(z, 2), 0)
        from .shape import diagonal
        logdet = ops.mul(sum_(ops.log(diagonal(chol))), 2.0)
    out = ops.mul(ops.add(ops.add(maha, logdet), dim * LOG_2PI), -0.5)
    return ops.squeeze(out, squeeze) if squeeze else out


def _density(logpdf):
    return lambda *args, **kwargs: ops.exp(logpdf(*args, **kwargs))


DISTRIBUTIONS = {
    "norm": {"logpdf": norm_logpdf, "pdf": _density(norm_logpdf), "cdf": norm_cdf,
             "logcdf": norm_logcdf, "sf": norm_sf, "logsf": norm_logsf},
    "t": {"logpdf": t_logpdf, "pdf": _density(t_logpdf)},
    "gamma": {"logpdf": gamma_logpdf, "pdf": _density(gamma_logpdf)},
    "chi2": {"logpdf": chi2_logpdf, "pdf": _density(chi2_logpdf)},
    "beta": {"logpdf": beta_logpdf, "pdf": _density(beta_logpdf)},
    "expon": {"logpdf": expon_logpdf, "pdf": _density(expon_logpdf)},
    "laplace": {"logpdf": laplace_logpdf, "pdf": _density(laplace_logpdf)},
    "poisson": {"logpmf": poisson_logpmf, "pmf": _density(poisson_logpmf)},
    "dirichlet": {"logpdf": dirichlet_logpdf, "pdf": _density(dirichlet_logpdf)},
    "multivariate_normal": {"logpdf": mvn_logpdf, "pdf": _density(mvn_logpdf)},
}

def register_stats(stats) -> None:
    for dist, methods in DISTRIBUTIONS.items():
        for method, traced in methods.items():
            rebind_while_tracing(getattr(stats, dist), method, traced)


_REGISTER = {"scipy.special": register_special, "scipy.linalg": register_linalg,
             "scipy.stats": register_stats}
_registered: set = set()


def register_imported() -> None:
    """Register the entries of every SciPy module this process has finished
    importing. A module another thread (or this one, further up the stack) is
    still importing is already in sys.modules, partly initialised: reading it
    would find names missing, so it is left for a trace opened after its import
    completes."""
    for name, register in _REGISTER.items():
        module = sys.modules.get(name)
        if name not in _registered and module is not None and imported(module):
            _registered.add(name)
            register(module)


def imported(module) -> bool:
    """False while the module's code is still running (importlib marks its spec)."""
    return not getattr(getattr(module, "__spec__", None), "_initializing", False)


REBINDINGS.before_install.append(register_imported)
LATE_REGISTRARS.append(register_imported)
