"""GismoPool status computed from the pool's spec and its slices. Pure: no I/O, no clock reads.

Why pure: the status is a function of the API's state (the pool and the GismoSlices that name it),
so the same inputs always give the same status, restarts recompute it from scratch, and the
figures are unit-testable without a cluster. ``now`` and the previous status are parameters so
``lastTransitionTime`` only moves when a condition's status actually changes.

Slices are read leniently (:func:`slice_view`): a slice whose spec fails validation still holds its
bytes, so its offset/size are counted when they are readable and the pool is marked Degraded
naming it, rather than the bytes silently becoming free.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from gismo_operator.core import allocator
from gismo_operator.core.models import (
    Condition,
    GismoPoolSpec,
    GismoPoolStatus,
    GismoSliceSpec,
    describe_validation_error,
)
from gismo_operator.core.quantity import format_bytes

READY = "Ready"
DEGRADED = "Degraded"

#: Reasons (CamelCase, as metav1.Condition requires).
REASON_AVAILABLE = "Available"
REASON_FULL = "Full"
REASON_INVALID_SPEC = "InvalidSpec"
REASON_INCONSISTENT = "InconsistentSlices"
REASON_CONSISTENT = "AsExpected"

_MAX_MESSAGE = 1024


@dataclasses.dataclass(frozen=True)
class SliceView:
    """What the pool needs from one GismoSlice. ``error`` is set when its spec is invalid."""

    namespace: str
    name: str
    ray_cluster: str
    offset: int
    size: int
    regions: int
    error: str | None = None

    @property
    def key(self) -> str:
        """``namespace/name``, how messages name the slice."""
        return f"{self.namespace}/{self.name}"

    @property
    def extent(self) -> allocator.Extent:
        """The slice's byte range in the pool."""
        return allocator.Extent(self.offset, self.size)


def slice_view(body: Mapping[str, Any]) -> SliceView | None:
    """Read a GismoSlice body; None when not even offset and size are usable integers."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    namespace = str(meta.get("namespace") or "")
    name = str(meta.get("name") or "")
    error: str | None = None
    try:
        parsed = GismoSliceSpec.model_validate(spec)
    except ValidationError as exc:
        error = describe_validation_error(exc, prefix="spec")
    else:
        return SliceView(
            namespace, name, parsed.ray_cluster, parsed.offset, parsed.size, regions_in_use(body)
        )
    offset, size = spec.get("offset"), spec.get("size")
    if not (isinstance(offset, int) and isinstance(size, int) and offset >= 0 and size >= 0):
        return SliceView(namespace, name, str(spec.get("rayCluster") or ""), 0, 0, 0, error)
    return SliceView(
        namespace, name, str(spec.get("rayCluster") or ""), offset, size, regions_in_use(body), error
    )


def regions_in_use(body: Mapping[str, Any]) -> int:
    """The slice's regions in use: its status count (written by the region ledger from its
    GismoRegions), plus what a legacy ``spec.regions`` list still holds before its migration."""
    counted = (body.get("status") or {}).get("regionsInUse")
    legacy = (body.get("spec") or {}).get("regions")
    count = counted if isinstance(counted, int) and counted >= 0 else 0
    return count + (len(legacy) if isinstance(legacy, list) else 0)


class SliceViewCache:
    """The last view of each slice, by (namespace, name), with the uid and resourceVersion it was
    made from: an unchanged slice is not validated again.
    Bounded: :meth:`trim` forgets slices no longer listed once it holds twice as many as listed."""

    def __init__(self) -> None:
        self._views: dict[tuple[str, str], tuple[str, str, SliceView | None]] = {}

    def __len__(self) -> int:
        return len(self._views)

    def view(self, body: Mapping[str, Any]) -> SliceView | None:
        """:func:`slice_view`, memoized by the slice's uid and resourceVersion."""
        meta = body.get("metadata") or {}
        key = _key_of(body)
        uid, rv = meta.get("uid"), meta.get("resourceVersion")
        if not uid or not rv:  # emulators without resourceVersion: nothing to key a cache on
            return slice_view(body)
        hit = self._views.get(key)
        if hit is not None and hit[0] == uid and hit[1] == rv:
            return hit[2]
        view = slice_view(body)
        self._views[key] = (str(uid), str(rv), view)
        return view

    def trim(self, listed: Sequence[Mapping[str, Any]]) -> None:
        """Forget slices that are gone (only when the cache has grown well past the listed ones)."""
        if len(self._views) > 2 * len(listed) + 1024:
            keep = {_key_of(b) for b in listed}
            for key in [k for k in self._views if k not in keep]:
                del self._views[key]


def _key_of(body: Mapping[str, Any]) -> tuple[str, str]:
    meta = body.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def slices_of_pool(
    pool: str,
    bodies: Sequence[Mapping[str, Any]],
    view: Callable[[Mapping[str, Any]], SliceView | None] | None = None,
) -> list[SliceView]:
    """The views of the slices among ``bodies`` whose ``spec.pool`` is ``pool``, sorted by offset.
    ``view`` replaces :func:`slice_view` (a caller's memoized version of it)."""
    view_of = view or slice_view
    views = []
    for body in bodies:
        if (body.get("spec") or {}).get("pool") != pool:
            continue
        view_ = view_of(body)
        if view_ is not None:
            views.append(view_)
    return sorted(views, key=lambda v: (v.offset, v.key))


def holders(slices: Sequence[SliceView]) -> list[str]:
    """``namespace/rayCluster`` of every slice, sorted and unique: who keeps a pool in use."""
    return sorted({f"{s.namespace}/{s.ray_cluster or s.name}" for s in slices})


def _condition(
    type_: str,
    status: str,
    reason: str,
    message: str,
    generation: int | None,
    now: dt.datetime,
    previous: Sequence[Condition],
) -> Condition:
    since = now
    for old in previous:
        if old.type == type_ and old.status == status:
            since = old.last_transition_time
    return Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message[:_MAX_MESSAGE],
        observed_generation=generation,
        last_transition_time=since,
    )


@dataclasses.dataclass(frozen=True)
class Layout:
    """What a pool's slice extents make of its space: usage and faults. It changes only when a
    slice is added, removed or moves, never when its region count does (every admission), so a
    caller may keep it until the slice set changes (:class:`~gismo_operator.core.poolindex.PoolIndex`)."""

    use: allocator.Usage
    faults: tuple[str, ...]


def layout(spec: GismoPoolSpec, slices: Sequence[SliceView]) -> Layout:
    """The usage and faults of ``slices`` in a pool of ``spec`` (O(n log n) in the slices)."""
    named = [(s.key, s.extent) for s in slices]
    use = allocator.usage(spec.capacity, [e for _, e in named])
    faults = allocator.problems(spec.capacity, named, align=spec.region_size)
    faults += [f"{s.key} is invalid: {s.error}" for s in slices if s.error]
    return Layout(use, tuple(faults))


def pool_status(
    spec: GismoPoolSpec,
    slices: Sequence[SliceView],
    *,
    generation: int | None,
    now: dt.datetime,
    previous: GismoPoolStatus | None = None,
) -> GismoPoolStatus:
    """The status of a valid pool given the slices that reference it."""
    return pool_status_of(
        spec,
        layout(spec, slices),
        slices=len(slices),
        regions=sum(s.regions for s in slices),
        generation=generation,
        now=now,
        previous=previous,
    )


def pool_status_of(
    spec: GismoPoolSpec,
    shape: Layout,
    *,
    slices: int,
    regions: int,
    generation: int | None,
    now: dt.datetime,
    previous: GismoPoolStatus | None = None,
) -> GismoPoolStatus:
    """The status of a valid pool from its layout and its slice and region counts (O(1) in the
    number of slices but for the faults message)."""
    prev_conditions = previous.conditions if previous else []
    use, faults = shape.use, list(shape.faults)
    if use.largest_free_extent >= spec.region_size:
        ready = _condition(
            READY,
            "True",
            REASON_AVAILABLE,
            f"{format_bytes(use.free)} of {format_bytes(spec.capacity)} free in {slices} slice(s); "
            f"largest free extent {format_bytes(use.largest_free_extent)}",
            generation,
            now,
            prev_conditions,
        )
    else:
        ready = _condition(
            READY,
            "True",
            REASON_FULL,
            f"no free extent of one region ({format_bytes(spec.region_size)}) left: new RayClusters "
            f"run without Gismo until a slice is released",
            generation,
            now,
            prev_conditions,
        )
    if faults:
        degraded = _condition(
            DEGRADED, "True", REASON_INCONSISTENT, "; ".join(faults), generation, now, prev_conditions
        )
    else:
        degraded = _condition(
            DEGRADED,
            "False",
            REASON_CONSISTENT,
            "slices are disjoint and inside the pool",
            generation,
            now,
            prev_conditions,
        )
    return GismoPoolStatus(
        observed_generation=generation,
        conditions=[ready, degraded],
        capacity=format_bytes(spec.capacity),
        allocated=format_bytes(use.allocated),
        free=format_bytes(use.free),
        largest_free_extent=format_bytes(use.largest_free_extent),
        capacity_bytes=spec.capacity,
        allocated_bytes=use.allocated,
        free_bytes=use.free,
        largest_free_extent_bytes=use.largest_free_extent,
        slices=slices,
        regions=regions,
        ready=ready.status,
    )


def invalid_pool_status(
    message: str,
    slices: Sequence[SliceView] | tuple[int, int],
    *,
    generation: int | None,
    now: dt.datetime,
    previous: GismoPoolStatus | None = None,
) -> GismoPoolStatus:
    """The status of a pool whose spec does not validate (it slipped past the webhook, e.g. while
    the operator was down): not Ready, with the validation message; figures are left out.
    ``slices``: the slices, or their (slice count, regions in use)."""
    count, regions = slices if isinstance(slices, tuple) else (len(slices), sum(s.regions for s in slices))
    prev_conditions = previous.conditions if previous else []
    ready = _condition(READY, "False", REASON_INVALID_SPEC, message, generation, now, prev_conditions)
    degraded = _condition(DEGRADED, "True", REASON_INVALID_SPEC, message, generation, now, prev_conditions)
    return GismoPoolStatus(
        observed_generation=generation,
        conditions=[ready, degraded],
        slices=count,
        regions=regions,
        ready=ready.status,
    )


def check_pool_change(
    new_spec: GismoPoolSpec, old_spec: GismoPoolSpec | None, slices: list[SliceView]
) -> list[str]:
    """Problems with changing a pool from ``old_spec`` to ``new_spec`` given its slices (pure).

    The model already checked the spec on its own (multiples, regionSize ≤ capacity).
    """
    problems: list[str] = []
    if slices:
        end = max(s.extent.end for s in slices)
        allocated = sum(s.size for s in slices)
        if new_spec.capacity < end:
            problems.append(
                f"spec.capacity: {format_bytes(new_spec.capacity)} is below what is allocated: slices "
                f"occupy {format_bytes(allocated)} and reach byte {end} ({format_bytes(end)}); slices "
                f"cannot move, release them first ({', '.join(holders(slices))})"
            )
        if old_spec is not None and new_spec.backend != old_spec.backend:
            problems.append(
                f"spec.backend: cannot change from {old_spec.backend.type}:{old_spec.backend.path} to "
                f"{new_spec.backend.type}:{new_spec.backend.path} while {len(slices)} slice(s) use the "
                f"pool ({', '.join(holders(slices))})"
            )
    return problems
