"""Structured control flow: the `scan`, `while_loop` and `switch` records
(flow.py; their rules differentiate, optimise and interpret their bodies, so
they sit above the transforms and the backend) and the roller that turns a
Python loop unrolled by the trace back into a `scan` (rolling.py)."""

from . import batching  # noqa: F401, E402  (the vmap rules of the loops and branches)
