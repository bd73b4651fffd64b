"""Builders for the pod volumes Gismo adds: the pool (hostPath), the agent socket (emptyDir) and the
delivered client (emptyDir)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gismo.contract import SOCKET_VOLUME
from gismo_operator.constants import CLIENT_VOLUME, CLIENT_VOLUME_SIZE, POOL_VOLUME
from gismo_operator.injection.plan import HOSTPATH_TYPES, InjectionPlan


def build_pool_volume(plan: InjectionPlan) -> dict[str, Any]:
    """The appliance as the node sees it: a char device for devdax, a tmpfs file for shm.

    The hostPath ``type`` makes the kubelet refuse to start the pod on a node where the path is
    not what the pool says (e.g. a node without the device), instead of silently creating an
    empty directory there.
    """
    return {"name": POOL_VOLUME, "hostPath": {"path": plan.device_path, "type": HOSTPATH_TYPES[plan.backend]}}


def build_socket_volume() -> dict[str, Any]:
    """A pod-private directory for the agent's Unix socket, shared by the agent and Ray."""
    return {"name": SOCKET_VOLUME, "emptyDir": {}}


def build_client_volume() -> dict[str, Any]:
    """The folder the agent copies the ``gismo`` client into for the Ray container (size-bounded)."""
    return {"name": CLIENT_VOLUME, "emptyDir": {"sizeLimit": CLIENT_VOLUME_SIZE}}


def merge_volumes(
    existing: Sequence[Mapping[str, Any]] | None, added: Sequence[Mapping[str, Any]]
) -> list[Any]:
    """``existing`` (e.g. KubeRay's ``shared-mem``) plus ``added``; a name clash is a clear error."""
    result = list(existing or ())  # entries shared with the input, never mutated
    names = {v.get("name"): v for v in result}
    for volume in added:
        if volume["name"] in names:
            if names[volume["name"]] == volume:
                continue
            raise ValueError(
                f"spec.volumes: a volume named {volume['name']!r} already exists and is not Gismo's"
            )
        result.append(dict(volume))
    return result
