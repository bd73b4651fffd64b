"""Store test fixtures: defined in storefix (importable by name; see its docstring)."""

from storefix import pool

__all__ = ["pool"]
