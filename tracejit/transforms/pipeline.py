"""The pass pipeline every program goes through before it is run or compiled.

What it removes is removed from the interpreter, the kernel and the compile at
once. With TRACEJIT_VERIFY=1 the IR is verified after every pass.
"""

from __future__ import annotations

import os

from ..core.ir import Program, verify
from . import passes


def verify_passes() -> bool:
    return os.environ.get("TRACEJIT_VERIFY", "").lower() in {"1", "true", "yes", "on"}


def run_passes(program: Program) -> Program:
    """Optimise `program`: fold, simplify, CSE and DCE, identities stripped, then again."""
    checked = verify_passes()
    for step in (passes.optimize, passes.strip_identities, passes.optimize):
        program = step(program)
        if checked:
            verify(program)
    return program
