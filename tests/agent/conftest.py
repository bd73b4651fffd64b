"""Tests of the `gismo` distribution (its source is agent/gismo): tests/agent mirrors its packages.

The folder is not called tests/gismo on purpose: pytest puts tests/ on sys.path (for tests/test_*.py),
and a tests/gismo folder would then shadow the editable-installed gismo package in every process a
test spawns. Store fixtures are defined in storefix (importable by name; see its docstring).
"""

from storefix import pool

__all__ = ["pool"]
