"""A RayCluster's GismoSlice as a body: built, owned, placed among the pool's other slices (pure).

The reconciler (:mod:`gismo_operator.handlers.rayclusters`) writes what these return; nothing here
calls the API.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gismo_operator.constants import COMPONENT, LABEL_CLUSTER, LABEL_MANAGED_BY, SLICE_FINALIZER
from gismo_operator.core import allocator, status
from gismo_operator.core.models import API_VERSION, SLICE_KIND, GismoSlice, name_label


def owner_reference(raycluster: Mapping[str, Any]) -> dict[str, Any]:
    """The RayCluster as the slice's controller owner, so garbage collection follows the cluster.

    No ``blockOwnerDeletion``: setting it needs ``update`` on ``rayclusters/finalizers``, and
    nothing must wait for the slice when a cluster goes.
    """
    meta = raycluster.get("metadata") or {}
    return {
        "apiVersion": raycluster.get("apiVersion") or "ray.io/v1",
        "kind": "RayCluster",
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "controller": True,
    }


def build_slice(
    raycluster: Mapping[str, Any], pool: str, extent: allocator.Extent, region_size: int
) -> dict[str, Any]:
    """The GismoSlice of a RayCluster: same name and namespace, owned by it, no regions yet."""
    meta = raycluster.get("metadata") or {}
    body = {
        "apiVersion": API_VERSION,
        "kind": SLICE_KIND,
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "labels": {LABEL_MANAGED_BY: COMPONENT, LABEL_CLUSTER: name_label(str(meta.get("name") or ""))},
            "finalizers": [SLICE_FINALIZER],
            "ownerReferences": [owner_reference(raycluster)] if meta.get("uid") else [],
        },
        "spec": {
            "pool": pool,
            "rayCluster": meta.get("name"),
            "offset": extent.offset,
            "size": extent.size,
            "regionSize": region_size,
            "regions": [],
        },
    }
    GismoSlice.model_validate(body)  # a bug here must fail loudly, not write a bad object
    return body


def owned_by(slice_body: Mapping[str, Any], uid: str | None) -> bool:
    """Whether the slice belongs to the RayCluster with ``uid`` (no uid known: by name only)."""
    refs = (slice_body.get("metadata") or {}).get("ownerReferences") or []
    if uid is None or not refs:
        return True
    return any(r.get("uid") == uid for r in refs if r.get("kind") == "RayCluster")


def extents_of_pool(
    pool: str, bodies: list[dict[str, Any]], skip: tuple[str, str] | None
) -> list[allocator.Extent]:
    """The extents the pool's slices occupy (all but ``skip``, the one being resized)."""
    return [v.extent for v in status.slices_of_pool(pool, bodies) if (v.namespace, v.name) != skip]
