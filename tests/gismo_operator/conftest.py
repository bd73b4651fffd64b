"""Fixtures for operator tests: ``cluster``, ``operator``, ``kopf_tuning`` (see operator_harness.py).

The harness lives in ``operator_harness.py`` so test modules can import its classes for type hints
(``from operator_harness import Cluster, OperatorHandle``) without importing a conftest by name.
"""

from __future__ import annotations

from operator_harness import cluster, kopf_tuning, operator

__all__ = ["cluster", "kopf_tuning", "operator"]
