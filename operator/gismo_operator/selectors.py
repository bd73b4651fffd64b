"""Label selector matching (``metav1.LabelSelector`` semantics), for a pool's namespaceSelector.

Pure; Kubernetes semantics: requirements are ANDed, an empty selector matches everything, and a
missing selector (None) means "no restriction" here (the pool admits every namespace).
Cost: linear in the number of requirements.
"""

from __future__ import annotations

from collections.abc import Mapping

from gismo_operator.models import LabelSelector


def matches(selector: LabelSelector | None, labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` satisfy ``selector``."""
    if selector is None:
        return True
    for key, value in selector.match_labels.items():
        if labels.get(key) != value:
            return False
    for req in selector.match_expressions:
        present = req.key in labels
        if req.operator == "In" and not (present and labels[req.key] in req.values):
            return False
        if req.operator == "NotIn" and present and labels[req.key] in req.values:
            return False
        if req.operator == "Exists" and not present:
            return False
        if req.operator == "DoesNotExist" and present:
            return False
    return True
