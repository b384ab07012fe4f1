"""Program -> Program transformations: the passes (passes.py) and their
pipeline (pipeline.py), reverse and forward mode (autodiff.py), and the
NaN/Inf checks (debug.py)."""
