"""NumPy's and SciPy's surface on tracers.

`api` is the base: the dispatch tables (ufuncs, `np.*` functions, array
methods) and the core functions. Each other module is an area of the surface
that registers its functions into those tables when imported here; none is
imported by `api`. `composites` (softmax, logsumexp, ...) sits below `scipy`
and `tracejit.nn`, which both use it.
"""

from . import (  # noqa: F401, I001  # noqa: F401, I001
    api,  # noqa: F401  (installs the dispatch hooks on tracers)
    build,
    composites,
    fft,
    index,
    linalg,
    random,
    scipy,
    shape,
    stats,
)
