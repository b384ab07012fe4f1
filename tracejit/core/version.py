"""tracejit's version (kept apart so the cache can key on it without importing the package)."""

__version__ = "0.1.0"
