"""Which live Ray pods of opted-in clusters run without the agent: what failurePolicy Ignore let through.

The webhook admits every Ray pod it sees either injected or marked ``gismo.io/skipped`` (with an
Event saying why). A Ray pod of a cluster that has a GismoSlice and carries neither was never seen
by the webhook: it was created while the operator was down or unreachable (failurePolicy Ignore),
or before its cluster's slice existed. Pure functions of the listed objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gismo_operator.constants import LABEL_CLUSTER, LABEL_IS_RAY_NODE
from gismo_operator.injection import is_injected

#: At most this many pod names in a GismoSlice's status and a RayCluster's Event (the count is exact).
MAX_NAMES = 20
#: At most this many reported pods' uids in a GismoSlice's status (~40 KB): what makes "once" outlive
#: an operator restart. Past it (a cluster with more pods than that without the agent), the pods
#: not recorded may be reported again by a restarted operator.
MAX_REPORTED = 1000

ClusterKey = tuple[str, str]


def is_live(pod: Mapping[str, Any]) -> bool:
    """Not being deleted and not finished."""
    meta = pod.get("metadata") or {}
    phase = (pod.get("status") or {}).get("phase")
    return not meta.get("deletionTimestamp") and phase not in ("Succeeded", "Failed")


def not_injected(
    pods: Iterable[Mapping[str, Any]], clusters: Iterable[ClusterKey]
) -> dict[ClusterKey, list[Any]]:
    """Per (namespace, RayCluster) of ``clusters``: its live Ray pods the webhook never handled,
    sorted by name. Clusters without such pods map to an empty list."""
    out: dict[ClusterKey, list[Any]] = {key: [] for key in clusters}
    for pod in pods:
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        key = (meta.get("namespace") or "", labels.get(LABEL_CLUSTER) or "")
        if key in out and labels.get(LABEL_IS_RAY_NODE) == "yes" and is_live(pod) and not is_injected(pod):
            out[key].append(pod)
    for pods_of in out.values():
        pods_of.sort(key=lambda p: (p.get("metadata") or {}).get("name") or "")
    return out


def pod_message(pod_name: str, cluster: str) -> str:
    return (
        f"Ray pod {pod_name} of RayCluster {cluster} runs without the Gismo agent: the admission webhook "
        "never handled it (the operator was down or unreachable when it was created, and failurePolicy "
        "Ignore let it through, or it predates the cluster's GismoSlice); it uses Ray's own object store. "
        "Delete the pod to have it recreated with Gismo."
    )


def cluster_message(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_NAMES]) + (
        f" and {len(names) - MAX_NAMES} more" if len(names) > MAX_NAMES else ""
    )
    return (
        f"{len(names)} Ray pod(s) run without the Gismo agent (never handled by the admission webhook): "
        f"{shown}; delete them to have them recreated with Gismo"
    )


def slice_status(names: list[str], reported: list[str]) -> dict[str, Any]:
    """The GismoSlice status fields that show them, with the uids of those already reported."""
    return {
        "podsNotInjected": len(names), "podsNotInjectedNames": names[:MAX_NAMES],
        "podsNotInjectedReported": sorted(reported)[:MAX_REPORTED],
    }  # fmt: skip


def already_reported(status: Mapping[str, Any], names: list[str]) -> tuple[set[str], bool]:
    """What a GismoSlice's status says was reported before (perhaps by an operator that has since
    restarted): the pods' uids, and whether the RayCluster's Event was about exactly ``names``."""
    uids = {str(u) for u in status.get("podsNotInjectedReported") or () if isinstance(u, str)}
    same = (
        status.get("podsNotInjected") == len(names)
        and status.get("podsNotInjectedNames") == names[:MAX_NAMES]
    )
    return uids, bool(names) and same
