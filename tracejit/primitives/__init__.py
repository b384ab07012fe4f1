"""The primitive records, by family; importing this package registers them all.

Each record (`tracejit.trace.registry.Primitive`) holds every rule of one op:
its shape and dtype rule, NumPy implementation, derivative rules (written with
`tracejit.trace.ops`, so an adjoint is IR) and Numba emission. Structured
control flow (`scan`, `while_loop`, `switch`) registers from `tracejit.control`,
since its rules need the transforms and the interpreter.
"""

from . import (  # noqa: F401, I001  (real/imag/conj/fft; LAPACK records)
    array,  # noqa: F401  (elementwise math, index maps, reductions, array ops)
    complex,
    conv,  # noqa: F401  (im2col and its adjoint)
    linalg,
    random,  # noqa: F401  (Threefry-2x32 draws)
)
