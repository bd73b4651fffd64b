"""A RayCluster's largest shape, and the slice it needs.

Slice size = (1 head + sum over worker groups of maxReplicas * numOfHosts) * region size: every
Ray pod the cluster can ever have at once gets a region, so scaling up never waits for the pool.
Pure functions of the RayCluster body (``ray.io/v1``; v1alpha1 has the same fields).
Cost: linear in the number of worker groups.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gismo.contract import ANN_REGION_SIZE
from gismo_operator.core.quantity import QuantityError, parse_bytes

#: KubeRay's CRD defaults maxReplicas to int32 max ("unbounded"). Taken literally it would ask for
#: an exabyte; it means "no maximum given", so replicas is the bound, as when the field is absent.
UNBOUNDED_REPLICAS = 2147483647


class ShapeError(ValueError):
    """The RayCluster cannot be sized; the message names the field."""


@dataclass(frozen=True)
class GroupShape:
    """One worker group: how many Ray pods it can have at most."""

    name: str
    pods: int


@dataclass(frozen=True)
class ClusterShape:
    """The largest number of Ray pods the cluster can run at once, by group."""

    groups: tuple[GroupShape, ...]

    @property
    def pods(self) -> int:
        """Head included."""
        return 1 + sum(g.pods for g in self.groups)


def _int_field(group: Mapping[str, Any], key: str, where: str) -> int | None:
    value = group.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ShapeError(f"{where}.{key}: expected a non-negative integer, got {value!r}")
    return value


def cluster_shape(raycluster: Mapping[str, Any]) -> ClusterShape:
    """Worker groups' maxReplicas (replicas when absent or unbounded) * numOfHosts (default 1)."""
    spec = raycluster.get("spec")
    if not isinstance(spec, Mapping):
        raise ShapeError("spec: the RayCluster has no spec")
    if not isinstance(spec.get("headGroupSpec"), Mapping):
        raise ShapeError("spec.headGroupSpec: missing (every RayCluster has a head)")
    groups = spec.get("workerGroupSpecs") or []
    if not isinstance(groups, list):
        raise ShapeError(f"spec.workerGroupSpecs: expected a list, got {type(groups).__name__}")
    shapes = []
    for i, group in enumerate(groups):
        where = f"spec.workerGroupSpecs[{i}]"
        if not isinstance(group, Mapping):
            raise ShapeError(f"{where}: expected an object, got {type(group).__name__}")
        max_replicas = _int_field(group, "maxReplicas", where)
        replicas = _int_field(group, "replicas", where) or 0
        hosts = _int_field(group, "numOfHosts", where)
        hosts = 1 if hosts is None else hosts
        bound = replicas if max_replicas is None or max_replicas == UNBOUNDED_REPLICAS else max_replicas
        shapes.append(GroupShape(name=str(group.get("groupName") or f"#{i}"), pods=bound * hosts))
    return ClusterShape(groups=tuple(shapes))


def region_size_for(raycluster: Mapping[str, Any], pool_region_size: int) -> int:
    """The pool's regionSize, or the cluster's ``gismo.io/region-size`` override (a multiple of it)."""
    annotations = (raycluster.get("metadata") or {}).get("annotations") or {}
    raw = annotations.get(ANN_REGION_SIZE)
    if raw is None:
        return pool_region_size
    where = f"metadata.annotations[{ANN_REGION_SIZE}]"
    try:
        size = parse_bytes(raw, where)
    except QuantityError as exc:
        raise ShapeError(str(exc)) from exc
    if size <= 0 or size % pool_region_size:
        raise ShapeError(
            f"{where}: {raw!r} must be a positive multiple of the pool's regionSize ({pool_region_size})"
        )
    return size


def slice_size(shape: ClusterShape, region_size: int) -> int:
    """Bytes the cluster's slice needs: one region per Ray pod of its largest shape."""
    return shape.pods * region_size
