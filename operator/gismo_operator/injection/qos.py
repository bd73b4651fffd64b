"""A pod's QoS class, computed by the rules Kubernetes applies (``pkg/apis/core/helper/qos``, as the
"Pod Quality of Service Classes" documentation describes them), after the API server's defaulting.

- Only ``cpu`` and ``memory`` count; init containers (sidecars included) count like containers;
  ephemeral containers do not.
- Defaulting first: a resource with a limit and no request gets the limit as its request.
- BestEffort: no container has any positive cpu/memory request or limit.
- Guaranteed: every container has cpu and memory limits, and every request equals its limit.
- Burstable: anything else.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

GUARANTEED, BURSTABLE, BEST_EFFORT = "Guaranteed", "Burstable", "BestEffort"
COUNTED = ("cpu", "memory")
_SUFFIX = {
    "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40),
    "Pi": Decimal(2**50), "Ei": Decimal(2**60), "n": Decimal("1e-9"), "u": Decimal("1e-6"),
    "m": Decimal("1e-3"), "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9),
    "T": Decimal(10**12), "P": Decimal(10**15), "E": Decimal(10**18),
}  # fmt: skip


def quantity(value: Any) -> Decimal:
    """A Kubernetes quantity as an exact number ("500m" == "0.5", "1Gi" == "1073741824")."""
    text = str(value).strip()
    for suffix in sorted(_SUFFIX, key=len, reverse=True):  # "Mi" before "M"
        if text.endswith(suffix):
            return Decimal(text[: -len(suffix)]) * _SUFFIX[suffix]
    return Decimal(text)


def _defaulted(resources: Mapping[str, Any]) -> tuple[dict[str, Decimal], dict[str, Decimal]]:
    limits = {k: quantity(v) for k, v in (resources.get("limits") or {}).items() if k in COUNTED}
    requests = {k: quantity(v) for k, v in (resources.get("requests") or {}).items() if k in COUNTED}
    for name, limit in limits.items():
        requests.setdefault(name, limit)
    return requests, limits


def qos_class(pod: Mapping[str, Any]) -> str:
    spec = pod.get("spec") or {}
    every = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    any_set = False
    guaranteed = True
    for container in every:
        requests, limits = _defaulted(container.get("resources") or {})
        if any(v > 0 for v in requests.values()) or any(v > 0 for v in limits.values()):
            any_set = True
        if set(limits) != set(COUNTED) or any(requests.get(k) != limits[k] for k in limits):
            guaranteed = False
    if not any_set:
        return BEST_EFFORT
    return GUARANTEED if guaranteed else BURSTABLE
