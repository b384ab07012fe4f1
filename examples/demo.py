"""tracejit demo: the gradient of a loss with respect to its variables, compiled.

The question of every TensorFlow GradientTape tutorial, answered with plain
NumPy code and one fused Numba kernel per signature; the same as
`python -m tracejit demo`:

    python examples/demo.py
"""

from tracejit.demo import main

if __name__ == "__main__":
    main()
