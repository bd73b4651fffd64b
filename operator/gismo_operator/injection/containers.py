"""Builders for the agent container and for the Ray container's additions.

One builder per object, as KubeRay's ray-operator builds pods: each returns a fresh dict and never
mutates its input, so a half-built patch can never leak into the admitted pod. Cost: a few small
dicts per admission.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from gismo.contract import AGENT_COMMAND, AGENT_GID, AGENT_UID, SOCKET_DIR, SOCKET_VOLUME
from gismo_operator.constants import AGENT_CONTAINER, ENV_OWNER, POOL_VOLUME
from gismo_operator.injection.plan import InjectionPlan


def gismo_mounts(plan: InjectionPlan) -> list[dict[str, Any]]:
    """The pool device/file and the socket directory, mounted where GISMO_DEVICE/GISMO_SOCKET say."""
    return [
        {"name": POOL_VOLUME, "mountPath": plan.device_path},
        {"name": SOCKET_VOLUME, "mountPath": SOCKET_DIR},
    ]


def agent_security_context() -> dict[str, Any]:
    """Least privilege: the agent maps a file/device it is given; it needs no capability at all."""
    return {
        "runAsNonRoot": True,
        "runAsUser": AGENT_UID,
        "runAsGroup": AGENT_GID,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


#: ``gismo health`` exits 0 once the agent serves its socket. As a startup probe of a native sidecar it
#: holds the Ray container back until the agent is ready, so Ray's first put already finds it.
#: Exec probes cost a Python start each, which is why there is no periodic readiness probe: after
#: start-up the client falls back to Ray on its own if the agent goes away.
AGENT_STARTUP_PROBE: dict[str, Any] = {
    "exec": {"command": ["gismo", "health"]},
    "periodSeconds": 1,
    "failureThreshold": 120,
    "timeoutSeconds": 5,
}


def agent_owner_env() -> dict[str, Any]:
    """GISMO_OWNER from the pod's uid (downward API; the uid does not exist yet at admission).

    The agent reformats its region when the owner changes and recovers it when it does not, so the
    owner must name the pod, never a host: with hostNetwork the hostname is the node's, shared by
    every pod that lands there.
    """
    return {"name": ENV_OWNER, "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}}


def build_agent_container(plan: InjectionPlan) -> dict[str, Any]:
    """The agent: a native sidecar (``restartPolicy: Always``) unless the pool turns that off.

    As a native sidecar it starts before the Ray container and stops after it, and it does not
    keep a finished pod alive; as a plain container (old clusters without SidecarContainers) it
    has no restartPolicy field, which is invalid there.
    """
    container: dict[str, Any] = {
        "name": AGENT_CONTAINER,
        "image": plan.agent.image,
        "command": list(AGENT_COMMAND),
        "env": [*plan.env(), agent_owner_env()],
        "volumeMounts": gismo_mounts(plan),
        "securityContext": agent_security_context(),
        "startupProbe": copy.deepcopy(AGENT_STARTUP_PROBE),
    }
    if plan.agent.image_pull_policy:
        container["imagePullPolicy"] = plan.agent.image_pull_policy
    if plan.agent.resources:
        container["resources"] = copy.deepcopy(dict(plan.agent.resources))
    if plan.agent.native_sidecar:
        container["restartPolicy"] = "Always"
    return container


def merge_env(existing: Sequence[Mapping[str, Any]] | None, added: Sequence[Mapping[str, Any]]) -> list[Any]:
    """``existing`` with every variable of ``added`` set: same-named ones replaced in place, others appended.

    Replacing keeps one definition per name (Kubernetes would let the last win silently; a
    stale GISMO_REGION from a copied pod spec must not survive).
    """
    by_name = {e["name"]: e for e in added}
    result: list[Any] = []
    for entry in existing or ():
        name = entry.get("name")
        result.append(dict(by_name.pop(name)) if name in by_name else entry)  # shared, never mutated
    result.extend(dict(e) for e in added if e["name"] in by_name)
    return result


def merge_mounts(
    existing: Sequence[Mapping[str, Any]] | None, added: Sequence[Mapping[str, Any]], where: str
) -> list[Any]:
    """``existing`` plus ``added``; a mount path already taken by another volume is a clear error."""
    result = list(existing or ())  # entries shared with the input, never mutated
    taken = {m.get("mountPath"): m.get("name") for m in result}
    for mount in added:
        owner = taken.get(mount["mountPath"])
        if owner == mount["name"]:
            continue
        if owner is not None:
            raise ValueError(
                f"{where}.volumeMounts: {mount['mountPath']!r} is already used by volume {owner!r}; "
                f"Gismo needs it for {mount['name']!r}"
            )
        result.append(dict(mount))
    return result


def extend_ray_container(container: Mapping[str, Any], plan: InjectionPlan, where: str) -> dict[str, Any]:
    """The Ray container (``containers[0]``) with the GISMO_* env and the two mounts added.

    A shallow copy: only ``env`` and ``volumeMounts`` are new lists; the rest is shared with the
    input and never mutated.
    """
    result = dict(container)
    result["env"] = merge_env(container.get("env"), plan.env())
    result["volumeMounts"] = merge_mounts(container.get("volumeMounts"), gismo_mounts(plan), where)
    return result
