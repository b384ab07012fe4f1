"""Tracing: `Tracer`, `Builder` and `bind` (tracer.py), the primitive record and
its registry (registry.py), and the functional op layer with NumPy's type
promotion (ops.py). The records themselves register from `tracejit.primitives`."""
