"""RFC 7386 JSON merge patch, as the API server applies it: for the API stand-ins of the tests
(tests/gismo_operator/ledger_fakes.py) and the benchmarks (bench/apistub.py)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any


def merge_patch(target: Any, patch: Any) -> Any:
    """``target`` with ``patch`` merged in (``None`` deletes a key); neither argument is changed."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result
