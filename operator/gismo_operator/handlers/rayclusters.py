"""RayCluster opt-in: reserve, resize and release the cluster's GismoSlice; report with Events.

A RayCluster opts in with the annotation ``gismo.io/pool: <pool>``. Its slice is a GismoSlice
named after it, in its namespace, owned by it (ownerReference, controller), sized for its largest
shape (see :mod:`gismo_operator.core.shape`). Problems (unknown pool, namespace not admitted, pool full,
bad shape) leave the cluster without a slice and say why in a Warning Event: its pods then start
without Gismo and Ray uses its own object store. The operator never writes a RayCluster (neither
status, which KubeRay owns, nor metadata: no finalizers, no annotations), so it reacts through
``on.event`` handlers (kopf persists nothing for them) and a periodic resync instead of kopf's
create/update handlers, timers or daemons, which would store state or finalizers on the cluster.

Slice placement is serialized per pool in this process and always computed from a fresh LIST of
the pool's slices (kopf peering keeps one operator active for these handlers). Region assignments
inside a slice are the ledger's job (:mod:`gismo_operator.ledger.regions`); a resize goes through the
ledger too: resourceVersion-checked, and a shrink is fenced against admissions (see the ledger).

API calls: GET/POST/DELETE gismoslices, LIST gismoslices (all namespaces), GET gismopools,
GET namespaces, LIST rayclusters (the sweep's resync), PATCH gismoslices (spec.size; metadata.finalizers),
LIST gismoregions (through the ledger: regions in use), POST events.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf
from pydantic import ValidationError

from gismo.contract import ANN_POOL
from gismo_operator import kube, metrics
from gismo_operator.constants import (
    ANNOTATION_PREFIX,
    REASON_INVALID_POOL,
    REASON_INVALID_SHAPE,
    REASON_NOT_ADMITTED,
    REASON_POOL_CHANGED,
    REASON_POOL_FULL,
    REASON_RESIZE_BLOCKED,
    REASON_SLICE_RELEASED,
    REASON_SLICE_RESERVED,
    REASON_SLICE_RESIZED,
    REASON_UNKNOWN_POOL,
)
from gismo_operator.context import current, raycluster_ref
from gismo_operator.core import allocator
from gismo_operator.core.models import (
    GismoPool,
    GismoSlice,
    describe_validation_error,
)
from gismo_operator.core.shape import ShapeError, cluster_shape, region_size_for, slice_size
from gismo_operator.core.slices import build_slice, extents_of_pool, owned_by
from gismo_operator.ledger.regions import SliceGone

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Wanted:
    """The slice a cluster should have."""

    pool: GismoPool
    size: int
    region_size: int


class NoSlice(Exception):
    """The cluster gets no (new or larger) slice; ``reason``/``message`` go into a Warning Event."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


# ------------------------------------------------------------------------------------------------
# Reconciliation


async def wanted_slice(raycluster: Mapping[str, Any], pool_name: str) -> Wanted:
    """Check the pool, the namespace and the shape; raise :class:`NoSlice` saying what is wrong."""
    namespace = raycluster["metadata"]["namespace"]
    pool_body = await current().get_pool(pool_name)
    if pool_body is None:
        raise NoSlice(
            REASON_UNKNOWN_POOL, f"metadata.annotations[{ANN_POOL}]: GismoPool {pool_name!r} does not exist"
        )
    try:
        pool = GismoPool.model_validate(pool_body)
    except ValidationError as exc:
        raise NoSlice(
            REASON_INVALID_POOL, f"GismoPool {pool_name}: {describe_validation_error(exc)}"
        ) from exc
    if pool.spec.namespace_selector is not None:
        ns_body = await current().client().get_or_none(kube.NAMESPACES, namespace)
        labels = ((ns_body or {}).get("metadata") or {}).get("labels") or {}
        if not pool.spec.admits_namespace(dict(labels)):
            raise NoSlice(
                REASON_NOT_ADMITTED,
                f"GismoPool {pool_name}: spec.namespaceSelector does not admit namespace {namespace!r}",
            )
    try:
        region_size = region_size_for(raycluster, pool.spec.region_size)
        size = slice_size(cluster_shape(raycluster), region_size)
    except ShapeError as exc:
        raise NoSlice(REASON_INVALID_SHAPE, str(exc)) from exc
    return Wanted(pool=pool, size=size, region_size=region_size)


async def _create_slice(raycluster: Mapping[str, Any], wanted: Wanted) -> dict[str, Any]:
    pool = wanted.pool.metadata.name or ""
    async with current().allocation_locks[pool]:
        others = await current().client().list(kube.SLICES)
        try:
            extent = allocator.place(
                wanted.pool.spec.capacity,
                extents_of_pool(pool, others, None),
                wanted.size,
                wanted.pool.spec.region_size,
            )
        except allocator.NoSpace as exc:
            metrics.count_allocation("slice", "full")
            raise NoSlice(REASON_POOL_FULL, f"GismoPool {pool}: {exc}") from exc
        body = build_slice(raycluster, pool, extent, wanted.region_size)
        created = await current().client().create(kube.SLICES, body)
    metrics.count_allocation("slice", "ok")
    return created


async def _resize_slice(raycluster: Mapping[str, Any], existing: GismoSlice, wanted: Wanted) -> GismoSlice:
    """Grow in place when the bytes after the slice are free; shrink when no region past the end is used."""
    namespace, name = existing.metadata.namespace or "", existing.metadata.name or ""
    pool = existing.spec.pool
    async with current().allocation_locks[pool]:
        others = extents_of_pool(pool, await current().client().list(kube.SLICES), (namespace, name))

        def patch(current: GismoSlice, in_use: frozenset[int]) -> dict[str, Any] | None:
            if current.spec.size == wanted.size:
                return None
            if wanted.size > current.spec.size:
                grown = allocator.Extent(current.spec.offset, wanted.size)
                if not allocator.fits(wanted.pool.spec.capacity, others, grown):
                    raise NoSlice(
                        REASON_RESIZE_BLOCKED,
                        f"slice {name} stays at {current.spec.size} bytes: the "
                        f"{wanted.size - current.spec.size} bytes after it in GismoPool {pool} "
                        "are not free (recreate the cluster to move it)",
                    )
            else:
                count = wanted.size // current.spec.region_size
                if any(i >= count for i in in_use):
                    return None  # regions past the new end are in use: shrink later (next resync)
            return {"size": wanted.size}

        result: GismoSlice = await current().ledger.write_spec(namespace, name, patch)
    return result


def settlement(meta: Mapping[str, Any]) -> tuple[Any, ...]:
    """What a settled reconcile of the cluster depended on: its generation (the shape), its gismo.io
    annotations and the generation of the pool they name, as cached from the pool watch (the
    generation, not the resourceVersion: the pool's status changes with every slice, its spec
    rarely)."""
    annotations = meta.get("annotations") or {}
    pool = current().pools.get(str(annotations.get(ANN_POOL) or "")) or {}
    return (
        meta.get("generation"),
        tuple(sorted((k, v) for k, v in annotations.items() if k.startswith(ANNOTATION_PREFIX))),
        (pool.get("metadata") or {}).get("generation"),
    )


def settled_with(raycluster: Mapping[str, Any], slices: Mapping[tuple[Any, Any], Mapping[str, Any]]) -> bool:
    """Whether a forced reconcile of the cluster would find nothing to do: it settled at what it is
    now (:func:`settlement`) and ``slices`` (listed by the caller after it settled) hold its slice,
    owned by it and not being deleted. The sweep skips such clusters: with 1,000 of them, the GET
    and shape check each were most of a round. A slice deleted or replaced meanwhile shows in the
    listing, so the cluster is reconciled then."""
    meta = raycluster.get("metadata") or {}
    uid = meta.get("uid")
    if not uid or current().settled.get(uid) != settlement(meta):
        return False
    body = slices.get((meta.get("namespace"), meta.get("name")))
    if body is None or not owned_by(body, uid):
        return False
    slice_meta, spec = body.get("metadata") or {}, body.get("spec") or {}
    pool = (meta.get("annotations") or {}).get(ANN_POOL)
    return not slice_meta.get("deletionTimestamp") and spec.get("pool") == pool


async def reconcile(raycluster: Mapping[str, Any], *, force: bool = False) -> None:
    """Bring the cluster's slice in line with its annotation and shape. Idempotent.

    ``force`` ignores the memo of already-settled generations (the periodic resync uses it).
    """
    meta = raycluster.get("metadata") or {}
    namespace, name, uid = meta.get("namespace"), meta.get("name"), meta.get("uid")
    if not namespace or not name:
        return
    annotations = meta.get("annotations") or {}
    pool_name = annotations.get(ANN_POOL)
    if not force and uid and current().settled.get(uid) == settlement(meta):
        return
    current().settled.pop(uid or "", None)
    involved = raycluster_ref(namespace, name, uid)

    existing_body = await current().client().get_or_none(kube.SLICES, name, namespace)
    if existing_body is not None and (existing_body.get("metadata") or {}).get("deletionTimestamp"):
        # The previous slice of this name waits for its pods to go (finalizer); a new one can only
        # be created after that, by a later event or the periodic resync.
        logger.info("RayCluster %s/%s: previous GismoSlice still being released", namespace, name)
        return
    if existing_body is not None and not owned_by(existing_body, uid):
        existing_body = None  # a leftover of an earlier cluster with this name: the sweep removes it
    if not pool_name:
        if existing_body is not None:
            await release_slice(namespace, name, uid, why="the gismo.io/pool annotation was removed")
        if uid:
            current().settled[uid] = settlement(meta)
        return

    settled = True
    try:
        if existing_body is not None:
            existing = GismoSlice.model_validate(existing_body)
            if existing.spec.pool != pool_name:
                raise NoSlice(
                    REASON_POOL_CHANGED,
                    f"metadata.annotations[{ANN_POOL}]: changed to {pool_name!r}, but the slice is in pool "
                    f"{existing.spec.pool!r}; remove the annotation to release it, then set the new pool",
                )
            wanted = await wanted_slice(raycluster, pool_name)
            if wanted.region_size != existing.spec.region_size:
                raise NoSlice(
                    REASON_RESIZE_BLOCKED,
                    f"region size {wanted.region_size} differs from the slice's {existing.spec.region_size}; "
                    "it only takes effect for a new slice (recreate the cluster)",
                )
            if wanted.size != existing.spec.size:
                resized = await _resize_slice(raycluster, existing, wanted)
                if resized.spec.size != wanted.size:
                    settled = False  # a shrink waits for regions past the new end: a later round
                if resized.spec.size != existing.spec.size:
                    current().post_event(
                        involved,
                        "Normal",
                        REASON_SLICE_RESIZED,
                        f"GismoSlice {name}: {existing.spec.size} -> {resized.spec.size} bytes "
                        f"({resized.spec.region_count} regions)",
                    )
        else:
            wanted = await wanted_slice(raycluster, pool_name)
            try:
                created = await _create_slice(raycluster, wanted)
            except kube.Conflict:
                return  # created meanwhile by another event of this cluster: the next event settles it
            spec = created.get("spec") or {}
            current().post_event(
                involved,
                "Normal",
                REASON_SLICE_RESERVED,
                f"GismoSlice {name} in pool {pool_name}: {spec.get('size')} bytes at offset "
                f"{spec.get('offset')} ({wanted.size // wanted.region_size} regions "
                f"of {wanted.region_size} bytes)",
            )
    except NoSlice as problem:
        logger.warning("RayCluster %s/%s: %s", namespace, name, problem.message)
        current().warn_once(
            involved, problem.reason, problem.message + "; the cluster runs without Gismo where needed"
        )
        return
    except SliceGone:
        return
    current().clear_warnings(namespace, name)
    if uid and settled:
        current().settled[uid] = settlement(meta)


async def release_slice(namespace: str, name: str, uid: str | None, *, why: str) -> bool:
    """Delete the cluster's slice (if it is this cluster's). Its bytes return to the pool when the
    object is gone: at once if no pod holds a region, else when the last such pod is deleted
    (the ``gismo.io/regions-in-use`` finalizer, removed by :meth:`RegionLedger.finalize_if_idle`)."""
    client = current().client()
    body = await client.get_or_none(kube.SLICES, name, namespace)
    if body is None or not owned_by(body, uid):
        return False
    meta = body.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        await current().ledger.finalize_if_idle(namespace, name)
        return False
    await client.delete(kube.SLICES, name, namespace, uid=meta.get("uid"))
    current().ledger.forget(namespace, name)
    await current().ledger.finalize_if_idle(namespace, name)
    metrics.count_release("slice")
    logger.info("GismoSlice %s/%s released: %s", namespace, name, why)
    current().post_event(
        raycluster_ref(namespace, name, uid), "Normal", REASON_SLICE_RELEASED, f"GismoSlice {name}: {why}"
    )
    return True


# ------------------------------------------------------------------------------------------------
# kopf handlers


@kopf.on.event(kube.RAYCLUSTERS.group, kube.RAYCLUSTERS.version, kube.RAYCLUSTERS.plural)
async def raycluster_event(event: Mapping[str, Any], body: kopf.Body, **_: Any) -> None:
    """Every RayCluster change (and the initial listing): reconcile; on deletion, release."""
    raw = dict(body)
    meta = raw.get("metadata") or {}
    if event.get("type") == "DELETED":
        current().settled.pop(meta.get("uid") or "", None)
        current().clear_warnings(meta.get("namespace") or "", meta.get("name") or "")
        await release_slice(
            meta["namespace"], meta["name"], meta.get("uid"), why="the RayCluster was deleted"
        )
        return
    try:
        await reconcile(raw)
    except kube.ApiError as exc:  # transient: the next event or the resync retries
        logger.warning("RayCluster %s/%s: %s", meta.get("namespace"), meta.get("name"), exc)


@kopf.on.event(kube.POOLS.group, kube.POOLS.version, kube.POOLS.plural)
async def pool_seen(event: Mapping[str, Any], body: kopf.Body, name: str | None, **_: Any) -> None:
    """Keep the pool cache the webhook and reconciler read from."""
    if name:
        current().remember_pool(None if event.get("type") == "DELETED" else dict(body), name)
