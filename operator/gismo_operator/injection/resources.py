"""The resources Gismo adds: the agent's CPU and memory, and the pool's device-plugin resource.

QoS: Kubernetes puts a pod in Guaranteed only if every container (init and sidecar ones included)
has CPU and memory limits equal to its requests; one container without them drops the whole pod
to Burstable, losing CPU-manager pinning. So the agent gets requests = limits by default, small,
and for a BestEffort pod none at all (it stays BestEffort). A ResourceQuota on CPU or memory
refuses containers without requests; with them the quota admits the pod.

Memory for file-backed pools: the agent allocates its region's pages of the pool file (so that a
full tmpfs fails at start, not as SIGBUS on a store), and the kernel charges shared-memory pages
to the memory cgroup that allocated them: the agent's container. Its memory limit therefore holds
the region's bytes too, or the kernel would kill the agent when Ray fills the region.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from gismo.contract import BACKEND_DEVDAX
from gismo_operator.core.quantity import parse_bytes
from gismo_operator.injection.qos import BEST_EFFORT, qos_class


def agent_resources(
    pod: Mapping[str, Any],
    pool_resources: Mapping[str, Any] | None,
    *,
    backend: str,
    region_size: int,
    cpu: str,
    memory: str,
) -> dict[str, Any]:
    """The agent container's ``resources`` before the device-plugin resource is added.

    The pool's own ``agent.resources`` win as they are; otherwise requests = limits =
    ``cpu`` / ``memory`` (+ the region for file-backed pools), or nothing for a BestEffort pod.
    """
    if pool_resources:
        return copy.deepcopy(dict(pool_resources))
    if qos_class(pod) == BEST_EFFORT:
        return {}
    mem = parse_bytes(memory) + (0 if backend == BACKEND_DEVDAX else region_size)
    values = {"cpu": cpu, "memory": str(mem)}
    return {"requests": dict(values), "limits": dict(values)}


def with_device_resource(resources: Mapping[str, Any] | None, name: str) -> dict[str, Any]:
    """``resources`` plus 1 of the extended resource ``name`` in requests and limits (an extended
    resource must be the same in both); everything else shared with the input, never mutated."""
    out = dict(resources or {})
    out["requests"] = {**(out.get("requests") or {}), name: "1"}
    out["limits"] = {**(out.get("limits") or {}), name: "1"}
    return out
