"""Report Ray pods of opted-in clusters that run without the agent (``GismoNotInjected``).

Each round (at start-up, then with every sweep round, so within SWEEP_INTERVAL of the operator being
up, 25 s by default and never above 60 s: see settings) lists the Ray pods once and, for each live
pod of a cluster with a GismoSlice that the webhook never handled (:mod:`gismo_operator.core.notinjected`):
a Warning Event on the pod and one on its RayCluster (once: repeated only when the set changes), the
counter ``gismo_pods_not_injected_reported_total`` (once per pod) and the gauge ``gismo_pods_not_injected``
(per cluster), and the slice's status ``podsNotInjected`` / ``podsNotInjectedNames``.

"Once" outlives the operator process: the slice's status also lists the uids of the pods whose Event
was posted (``podsNotInjectedReported``), and a RayCluster's Event is about the set of names the
status shows, so a restarted operator (or another replica) reads both back and posts nothing again.
The Events go before the status patch: an operator killed between the two posts them once more.

API calls: LIST pods (label ray.io/is-ray-node=yes), PATCH gismoslices/status (only on change), POST events.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from gismo_operator import kube, metrics
from gismo_operator.constants import LABEL_IS_RAY_NODE, REASON_NOT_INJECTED
from gismo_operator.context import current, raycluster_ref
from gismo_operator.core import notinjected

logger = logging.getLogger(__name__)


async def report_round(
    slices: Sequence[Mapping[str, Any]],
    rayclusters: Sequence[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]] | None = None,
) -> int:
    """One round over ``slices`` (and the listed ``rayclusters``, for the Events' uid); returns how many
    pods run without the agent. ``pods``: the Ray pods, when the caller listed them already."""
    ctx = current()
    client = ctx.client()
    uids = {
        ((rc.get("metadata") or {}).get("namespace"), (rc.get("metadata") or {}).get("name")):
        (rc.get("metadata") or {}).get("uid")
        for rc in rayclusters
    }  # fmt: skip
    by_cluster: dict[notinjected.ClusterKey, Mapping[str, Any]] = {}
    for body in slices:
        meta, spec = body.get("metadata") or {}, body.get("spec") or {}
        if not meta.get("deletionTimestamp"):
            by_cluster[(meta.get("namespace") or "", spec.get("rayCluster") or meta.get("name") or "")] = body
    if pods is None:
        pods = await client.list(kube.PODS, label_selector=f"{LABEL_IS_RAY_NODE}=yes")
    found = notinjected.not_injected(pods, by_cluster)
    total = 0
    for (namespace, cluster), missing in found.items():
        names = [(p.get("metadata") or {}).get("name") or "" for p in missing]
        total += len(names)
        metrics.set_not_injected(namespace, cluster, len(names))
        key = (namespace, cluster)
        body = by_cluster[key]
        have = body.get("status") or {}
        before, cluster_told = notinjected.already_reported(have, names)
        reported: list[str] = []
        for pod, pod_name in zip(missing, names, strict=True):
            message = notinjected.pod_message(pod_name, cluster)
            uid = (pod.get("metadata") or {}).get("uid") or ""
            reported.append(uid)
            if uid in ctx.reported_not_injected or uid in before:
                continue  # once per pod (this process, or one before it: the slice's status)
            ctx.reported_not_injected.add(uid)
            metrics.count_not_injected()
            logger.warning("%s", message)
            # Items of a LIST carry no kind: say it, so the Event's involvedObject is complete.
            ctx.post_event(
                {"apiVersion": "v1", "kind": "Pod", **pod}, "Warning", REASON_NOT_INJECTED, message
            )
        if names and ctx.reported_clusters.get(key) != names:  # once per set of pods
            ctx.reported_clusters[key] = names
            if not cluster_told:  # a previous operator process told it already
                ref = raycluster_ref(namespace, cluster, uids.get(key))
                ctx.post_event(ref, "Warning", REASON_NOT_INJECTED, notinjected.cluster_message(names))
        elif not names:
            ctx.reported_clusters.pop(key, None)
        want = notinjected.slice_status(names, reported)
        if any(have.get(k, 0 if k == "podsNotInjected" else []) != v for k, v in want.items()):
            name = (body.get("metadata") or {}).get("name") or cluster
            try:
                await client.patch_status(kube.SLICES, name, want, namespace)
            except kube.ApiError as exc:  # the next round tries again
                logger.warning("GismoSlice %s/%s: cannot record pods without Gismo: %s", namespace, name, exc)
    return total


async def report_now() -> int:
    """A round with fresh lists (start-up)."""
    client = current().client()
    slices = await client.list(kube.SLICES)
    return await report_round(slices, await client.list(kube.RAYCLUSTERS))
