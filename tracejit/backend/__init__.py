"""Running a program: the NumPy interpreter, and the Numba path (schedule,
codegen, outline, runtime) with its checked disk cache (cache, store,
numba_cache, linking), the compile worker, and the per-signature dispatch
(compiler.py)."""
