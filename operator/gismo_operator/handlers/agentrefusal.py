"""Say where a user looks when a pod's agent refuses its region (``GismoAgentRefused``).

Ray still starts (the agent answers degraded, see gismo.daemon.degraded), so nothing else would tell
the user in Kubernetes. On every event of an injected Ray pod, the agent container's status is read
(:mod:`gismo_operator.core.agentrefusal`); a refusal gets one Warning Event on the pod and one on its
RayCluster, with the agent's own message, repeated only when the message changes (the agent is
restarted after each degraded spell and says the same again). It shows within the agent's
degraded retry interval (60 s by default) of the refusal: the kubelet publishes the message when the
degraded agent exits. No API call but the Events (the pod comes from kopf's watch).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from gismo.contract import ANN_REGION
from gismo_operator.constants import LABEL_CLUSTER, LABEL_IS_RAY_NODE, REASON_AGENT_REFUSED
from gismo_operator.context import current, raycluster_ref
from gismo_operator.core import agentrefusal

logger = logging.getLogger(__name__)


@kopf.on.event("", "v1", "pods", labels={LABEL_IS_RAY_NODE: "yes"}, annotations={ANN_REGION: kopf.PRESENT})
async def agent_refusal_event(event: Mapping[str, Any], body: kopf.Body, **_: Any) -> None:
    """Post GismoAgentRefused when the pod's agent container last exited refusing its region."""
    if event.get("type") == "DELETED":
        forget(dict(body))
        return
    report(dict(body))


def report(pod: Mapping[str, Any]) -> bool:
    """The Warnings for ``pod`` if its agent refused its region; True when it did.

    Once per pod and message: on the pod, and on its RayCluster naming the pod (so several pods of
    one cluster refusing by turns do not repeat each other's Events).
    """
    reason = agentrefusal.refusal(pod)
    if reason is None:
        return False
    meta = pod.get("metadata") or {}
    name, namespace = meta.get("name") or "", meta.get("namespace") or ""
    cluster = (meta.get("labels") or {}).get(LABEL_CLUSTER)
    ctx = current()
    message = agentrefusal.pod_message(name, reason)
    for key, involved, text in (
        (_pod_key(meta), {"apiVersion": "v1", "kind": "Pod", **pod}, message),
        (
            _cluster_key(meta),
            raycluster_ref(namespace, cluster or ""),
            agentrefusal.cluster_message(name, reason),
        ),
    ):
        if key is None or ctx.warned.get(key) == text:
            continue
        ctx.warned[key] = text
        if involved.get("kind") == "Pod":
            logger.warning("pod %s/%s: %s", namespace, name, message)
        ctx.post_event(involved, "Warning", REASON_AGENT_REFUSED, text)
    return True


def forget(pod: Mapping[str, Any]) -> None:
    """The pod is gone: drop what was remembered of its Warnings (bounded by the live pods)."""
    meta = pod.get("metadata") or {}
    ctx = current()
    for key in (_pod_key(meta), _cluster_key(meta)):
        if key is not None:
            ctx.warned.pop(key, None)


def _pod_key(meta: Mapping[str, Any]) -> tuple[str, str]:
    return (f"{meta.get('namespace')}/{meta.get('name')}/{meta.get('uid')}", REASON_AGENT_REFUSED)


def _cluster_key(meta: Mapping[str, Any]) -> tuple[str, str] | None:
    cluster = (meta.get("labels") or {}).get(LABEL_CLUSTER)
    if not cluster:
        return None
    return (f"{meta.get('namespace')}/{cluster}/pod:{meta.get('uid')}", REASON_AGENT_REFUSED)
