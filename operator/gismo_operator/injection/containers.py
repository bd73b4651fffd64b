"""Builders for the agent container and for the Ray container's additions.

One builder per object, as KubeRay's ray-operator builds pods: each returns a fresh dict and never
mutates its input, so a half-built patch can never leak into the admitted pod. Cost: a few small
dicts per admission.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from gismo.contract import (
    AGENT_COMMAND,
    AGENT_GID,
    AGENT_STARTUP_COMMAND,
    AGENT_TERMINATION_LOG,
    AGENT_UID,
    SOCKET_DIR,
    SOCKET_VOLUME,
)
from gismo_operator.constants import (
    AGENT_CONTAINER,
    CLIENT_DIR,
    CLIENT_VOLUME,
    ENV_OWNER,
    ENV_USER_PYTHONPATH,
    POOL_VOLUME,
)
from gismo_operator.injection.plan import InjectionPlan
from gismo_operator.injection.resources import with_device_resource


def gismo_mounts(plan: InjectionPlan) -> list[dict[str, Any]]:
    """The socket directory, and (hostPath access only) the pool device/file where GISMO_DEVICE says.

    With the device plugin the kubelet itself puts the device or file into each container that asks
    for the pool's resource, at the same path, so there is nothing to mount.
    """
    mounts = [{"name": SOCKET_VOLUME, "mountPath": SOCKET_DIR}]
    if not plan.uses_device_plugin:
        mounts.insert(0, {"name": POOL_VOLUME, "mountPath": plan.device_path})
    return mounts


def client_mount(read_only: bool) -> dict[str, Any]:
    """The delivered-client folder: written by the agent, read-only for the Ray container."""
    mount: dict[str, Any] = {"name": CLIENT_VOLUME, "mountPath": CLIENT_DIR}
    if read_only:
        mount["readOnly"] = True
    return mount


#: The agent's delivery step: it copies the pure-Python client into the shared folder before it
#: serves (so before its startup probe passes and the Ray container starts), see gismo.deliver.
AGENT_DELIVERY_ARGS: tuple[str, ...] = ("--deliver-to", CLIENT_DIR)

PYTHONPATH = "PYTHONPATH"


def with_client_on_python_path(env: Sequence[Mapping[str, Any]]) -> list[Any]:
    """``env`` whose ``PYTHONPATH`` ends with the delivered client folder, keeping the user's.

    The user's entry (a ``value`` or a ``valueFrom``) is renamed ``GISMO_USER_PYTHONPATH`` where it
    stands and followed by ``PYTHONPATH=$(GISMO_USER_PYTHONPATH):/gismo-client``: Kubernetes expands
    ``$(VAR)`` from variables defined earlier in the list, so both forms work, and later entries
    that reference ``$(PYTHONPATH)`` still see it defined before them. Without one, ``PYTHONPATH``
    is the folder alone. (A ``PYTHONPATH`` from the image's ``ENV`` is invisible to Kubernetes and
    is replaced: set it in the pod spec instead.) The user's folders keep precedence over ours.
    """
    result: list[Any] = []
    renamed = False
    for entry in env:
        if entry.get("name") != PYTHONPATH:
            result.append(entry)  # shared with the input, never mutated
            continue
        result.append({**entry, "name": ENV_USER_PYTHONPATH})
        result.append({"name": PYTHONPATH, "value": f"$({ENV_USER_PYTHONPATH}):{CLIENT_DIR}"})
        renamed = True
    if not renamed:
        result.append({"name": PYTHONPATH, "value": CLIENT_DIR})
    return result


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


#: ``gismo health --answering`` exits 0 once the agent answers on its socket, serving or degraded
#: (an agent that cannot serve its region answers "degraded: <why>" instead of exiting, and clients
#: fall back to Ray). As a native sidecar's startup probe it holds the Ray container back only until
#: the agent process answers, so Ray's first put already finds it, and never for a Gismo problem.
#: Exec probes cost a Python start each, which is why there is no periodic readiness probe: after
#: start-up the client falls back to Ray on its own if the agent goes away.
AGENT_STARTUP_PROBE: dict[str, Any] = {
    "exec": {"command": list(AGENT_STARTUP_COMMAND)},
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


def build_agent_container(plan: InjectionPlan, *, deliver_client: bool = True) -> dict[str, Any]:
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
        # A refusing agent writes why here; the kubelet puts it in the container's status when the
        # agent exits, where the operator finds it (GismoAgentRefused). Another crash shows the
        # end of the agent's log there instead.
        "terminationMessagePath": AGENT_TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if plan.agent.image_pull_policy:
        container["imagePullPolicy"] = plan.agent.image_pull_policy
    resources = copy.deepcopy(dict(plan.agent.resources or {}))
    if plan.uses_device_plugin:
        resources = with_device_resource(resources, plan.resource_name)
    if resources:
        container["resources"] = resources
    if plan.agent.native_sidecar:
        container["restartPolicy"] = "Always"
    if deliver_client:
        container["args"] = list(AGENT_DELIVERY_ARGS)
        container["volumeMounts"] = [*container["volumeMounts"], client_mount(read_only=False)]
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


def extend_ray_container(
    container: Mapping[str, Any], plan: InjectionPlan, where: str, *, deliver_client: bool = True
) -> dict[str, Any]:
    """The Ray container (``containers[0]``) with the GISMO_* env and Gismo's mounts added, plus the
    delivered client's mount and ``PYTHONPATH`` when ``deliver_client``, and (device plugin) the
    pool's resource in its requests and limits.

    A shallow copy: only ``env``, ``volumeMounts`` and ``resources`` are new; the rest is shared with
    the input and never mutated.
    """
    result = dict(container)
    result["env"] = merge_env(container.get("env"), plan.env())
    mounts = gismo_mounts(plan)
    if deliver_client:
        result["env"] = with_client_on_python_path(result["env"])
        mounts.append(client_mount(read_only=True))
    result["volumeMounts"] = merge_mounts(container.get("volumeMounts"), mounts, where)
    if plan.uses_device_plugin:
        # Extended resources never change a pod's QoS class (only CPU and memory count).
        result["resources"] = with_device_resource(container.get("resources"), plan.resource_name)
    return result
