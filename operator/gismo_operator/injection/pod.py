"""Assemble the injected pod from the per-object builders.

The result is a whole new pod body; the webhook turns the difference into the JSON patch it
answers with. Working on whole bodies keeps the builders pure and lets tests assert on the pod
the kubelet would see. Cost: copies of only the dicts and lists on the changed paths (metadata,
spec, the Ray container, the lists that grow); untouched parts are shared with the input, never
mutated. A deep copy of the pod was a measurable share of an admission.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from gismo.contract import ANN_REGION, ANN_SKIPPED
from gismo_operator.constants import AGENT_CONTAINER, ANN_DELIVER_CLIENT
from gismo_operator.injection.affinity import merge_node_affinity
from gismo_operator.injection.containers import build_agent_container, extend_ray_container
from gismo_operator.injection.plan import InjectionPlan
from gismo_operator.injection.volumes import (
    build_client_volume,
    build_pool_volume,
    build_socket_volume,
    merge_volumes,
)


class InjectionError(ValueError):
    """The pod cannot take the agent as it is; the message names the offending field."""


def is_injected(pod: Mapping[str, Any]) -> bool:
    """Whether Gismo already handled this pod: injected (agent or region annotation) or skipped.

    Webhook reinvocation (``reinvocationPolicy: IfNeeded``) and retried admissions must not add a
    second agent nor take a second region.
    """
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    if ANN_REGION in annotations or ANN_SKIPPED in annotations:
        return True
    spec = pod.get("spec") or {}
    names = {c.get("name") for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])}
    return AGENT_CONTAINER in names


def delivers_client(pod: Mapping[str, Any]) -> bool:
    """Whether the agent delivers the ``gismo`` client into this pod (annotation ``gismo.io/deliver-client``,
    default true). InjectionError for any value other than "true" or "false"."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(ANN_DELIVER_CLIENT, "true")
    if value not in ("true", "false"):
        raise InjectionError(
            f'metadata.annotations[{ANN_DELIVER_CLIENT}]: must be "true" or "false", got {value!r}'
        )
    return bool(value == "true")


def inject_pod(pod: Mapping[str, Any], plan: InjectionPlan) -> dict[str, Any]:
    """The pod with the agent, volumes, env, affinity and annotations added; unchanged if already injected.

    Unless the pod's ``gismo.io/deliver-client`` annotation is "false", the agent first delivers the
    ``gismo`` client into a shared emptyDir that the Ray container imports from (``PYTHONPATH``).

    The Ray container is ``containers[0]`` (KubeRay's rule): the agent never goes before it. As a
    native sidecar it is appended after the existing initContainers, so init steps the user
    wrote (e.g. waiting for the GCS) still run first; otherwise it becomes the last container.
    """
    if is_injected(pod):
        return copy.deepcopy(dict(pod))
    result = dict(pod)
    if not isinstance(pod.get("spec"), Mapping):
        raise InjectionError("spec: the pod has no spec")
    spec = result["spec"] = dict(pod["spec"])
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        raise InjectionError(
            "spec.containers: the pod has no containers (containers[0] must be the Ray container)"
        )

    containers = spec["containers"] = list(containers)
    deliver = delivers_client(pod)
    try:
        containers[0] = extend_ray_container(
            containers[0], plan, "spec.containers[0]", deliver_client=deliver
        )
        added = (
            [build_socket_volume()]
            if plan.uses_device_plugin
            else [build_pool_volume(plan), build_socket_volume()]
        )
        spec["volumes"] = merge_volumes(spec.get("volumes"), added)
        if deliver:
            spec["volumes"] = merge_volumes(spec["volumes"], [build_client_volume()])
    except ValueError as exc:
        raise InjectionError(str(exc)) from exc
    agent = build_agent_container(plan, deliver_client=deliver)
    if plan.agent.native_sidecar:
        spec["initContainers"] = [*(spec.get("initContainers") or []), agent]
    else:
        containers.append(agent)
    if plan.node_selector:
        spec["affinity"] = merge_node_affinity(spec.get("affinity"), plan.node_selector)

    metadata = result["metadata"] = dict(pod.get("metadata") or {})
    metadata["annotations"] = {**(metadata.get("annotations") or {}), **plan.annotations()}
    return result


def mark_skipped(pod: Mapping[str, Any], reason: str) -> dict[str, Any]:
    """The pod unchanged except for ``gismo.io/skipped: <reason>``: it runs on Ray's own object store.

    Copies only the pod, its metadata and annotations (the path that changes); the rest is shared
    with the input, never mutated, like :func:`inject_pod`'s result.
    """
    result = dict(pod)
    metadata = result["metadata"] = dict(pod.get("metadata") or {})
    metadata["annotations"] = {**(metadata.get("annotations") or {}), ANN_SKIPPED: reason}
    return result
