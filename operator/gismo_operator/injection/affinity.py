"""Merge the pool's nodeSelector into a pod's own node affinity, never replacing it.

Kubernetes ORs ``nodeSelectorTerms`` and ANDs the match expressions inside one term. To require
"the pool's nodes AND whatever the pod already asked for", the pool's expressions are added to
every existing term (adding a separate term would OR it, letting the pod land off the pool).
Cost: linear in the number of terms.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any


def node_selector_expressions(node_selector: Mapping[str, str]) -> list[dict[str, Any]]:
    """``{label: value}`` as ``In`` match expressions, in a stable (sorted) order."""
    return [{"key": k, "operator": "In", "values": [v]} for k, v in sorted(node_selector.items())]


def merge_node_affinity(
    affinity: Mapping[str, Any] | None, node_selector: Mapping[str, str]
) -> dict[str, Any]:
    """The pod's affinity with the pool's nodes required; other affinity kinds are left as they are."""
    result: dict[str, Any] = copy.deepcopy(dict(affinity or {}))
    expressions = node_selector_expressions(node_selector)
    if not expressions:
        return result
    node_affinity = result.setdefault("nodeAffinity", {})
    required = node_affinity.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
    terms = required.get("nodeSelectorTerms") or [{}]
    merged_terms = []
    for term in terms:
        term = dict(term)
        present = list(term.get("matchExpressions") or [])
        term["matchExpressions"] = present + [e for e in expressions if e not in present]
        merged_terms.append(term)
    required["nodeSelectorTerms"] = merged_terms
    return result
