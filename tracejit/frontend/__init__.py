"""The user's entry points: `function` and the transforms (api.py), `Variable`
(variables.py), the eager and traced `GradientTape` (eager.py, tape.py)."""
