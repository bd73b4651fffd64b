"""A cheap JSON patch (RFC 6902) between a pod and its injected form.

Why not ``jsonpatch.make_patch`` (what kopf uses for admission answers): it searches for a minimal
edit script over the whole pod, list moves included, and cost a few milliseconds per admission,
the largest single cost of the webhook. Injection only adds and replaces, so a structural walk
is enough: dicts are compared key by key, lists of equal length index by index, and anything
else that differs is replaced whole (``add`` on an existing member replaces it). Equal subtrees
are skipped with ``==``, which runs in C. The result is valid and applies to exactly ``new``.
Cost: linear in the size of the parts that differ.
"""

from __future__ import annotations

from typing import Any


def _token(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def json_patch(old: Any, new: Any, path: str = "") -> list[dict[str, Any]]:
    """Operations turning ``old`` into ``new``."""
    if old == new:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        ops: list[dict[str, Any]] = []
        for key in old:
            if key not in new:
                ops.append({"op": "remove", "path": f"{path}/{_token(key)}"})
        for key, value in new.items():
            sub = f"{path}/{_token(key)}"
            if key not in old:
                ops.append({"op": "add", "path": sub, "value": value})
            else:
                ops.extend(json_patch(old[key], value, sub))
        return ops
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new) and path:
        ops = []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            ops.extend(json_patch(a, b, f"{path}/{i}"))
        return ops
    if isinstance(old, list) and isinstance(new, list) and path and new[: len(old)] == old:
        return [{"op": "add", "path": f"{path}/-", "value": v} for v in new[len(old) :]]
    return [{"op": "replace", "path": path, "value": new}]
