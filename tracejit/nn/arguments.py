"""Constructor arguments remembered, so `model.save` can write a model as data.

Every subclass of `Layer`, `Loss` and `Optimizer` is registered here by name
(`CLASSES`; `load_model` constructs only tracejit.nn's own) and remembers the
arguments its outermost constructor was called with (`_config`).
"""

from __future__ import annotations

import functools

CLASSES: dict[str, type] = {}


def capture_init(cls) -> None:
    """Register `cls` and make `cls(...)` remember its outermost constructor
    arguments (`_config`)."""
    CLASSES.setdefault(cls.__name__, cls)
    init = cls.__dict__.get("__init__")
    if init is None or getattr(init, "_captures", False):
        return

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):  # noqa: N807 - the wrapped constructor
        if "_config" not in self.__dict__:
            object.__setattr__(self, "_config", (type(self).__name__, args, kwargs))
        init(self, *args, **kwargs)

    __init__._captures = True
    cls.__init__ = __init__
