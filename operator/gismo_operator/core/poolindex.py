"""Every GismoSlice's view grouped by pool, kept up to date from the slice watch's events.

Why: a pool's status counts its slices and their regions in use, and every admission changes one
slice's count. Recomputing from a LIST of every slice made each refresh O(number of slices)
(1,000 slices in one pool: a LIST of 1,000 objects per refresh). Here an event costs one slice's
view, and a pool's figures are read in O(1): the regions in use are a running total, and the
layout (usage, faults), which only changes when a slice is added, removed or moves, is kept until
it does.

Correct across restarts and watch gaps because nothing here is durable: :meth:`PoolIndex.replace`
rebuilds everything from a full listing (the watch's initial list and every relist), and an event
replaces the slice's whole view (never a delta applied to an older one). Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from gismo_operator.core.models import GismoPoolSpec
from gismo_operator.core.status import Layout, SliceView, layout, slice_view

SliceKey = tuple[str, str]


def _key_of(body: Mapping[str, Any]) -> SliceKey:
    meta = body.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def _pool_of(body: Mapping[str, Any]) -> str | None:
    pool = (body.get("spec") or {}).get("pool")
    return pool if isinstance(pool, str) and pool else None


def _placement(view: SliceView) -> SliceView:
    """The part of a view the layout depends on (everything but the region count)."""
    return dataclasses.replace(view, regions=0)


@dataclasses.dataclass(frozen=True)
class PoolFigures:
    """A pool's figures from the index: its slices, their regions in use, and its layout."""

    slices: int
    regions: int
    layout: Layout


@dataclasses.dataclass
class _Pool:
    views: dict[SliceKey, SliceView] = dataclasses.field(default_factory=dict)
    regions: int = 0
    #: (capacity, region size) -> the layout computed for them; emptied when a placement changes.
    layouts: dict[tuple[int, int], Layout] = dataclasses.field(default_factory=dict)


class PoolIndex:
    """Slice views by pool with a running regions total per pool.

    ``synced`` is False until the first :meth:`replace` (a full listing): before that the index
    knows nothing and its readers must list instead.
    """

    def __init__(self, view: Callable[[Mapping[str, Any]], SliceView | None] = slice_view) -> None:
        self._view = view
        self._pool_of: dict[SliceKey, str] = {}
        self._pools: dict[str, _Pool] = {}
        self.synced = False

    def __len__(self) -> int:
        return len(self._pool_of)

    def pools(self) -> list[str]:
        """The pools at least one known slice names."""
        return list(self._pools)

    def _remove(self, key: SliceKey) -> None:
        pool = self._pool_of.pop(key, None)
        if pool is None:
            return
        entry = self._pools[pool]
        gone = entry.views.pop(key)
        entry.regions -= gone.regions
        entry.layouts.clear()
        if not entry.views:
            del self._pools[pool]

    def _put(self, key: SliceKey, pool: str, view: SliceView | None) -> None:
        """Record ``view`` as the slice's (after any move was removed). A slice whose offset and
        size are not even readable (``view`` None) is counted nowhere, as in a recount."""
        if view is None:
            self._remove(key)
            return
        entry = self._pools.setdefault(pool, _Pool())
        self._pool_of[key] = pool
        before = entry.views.get(key)
        entry.views[key] = view
        entry.regions += view.regions - (before.regions if before is not None else 0)
        if before is None or _placement(before) != _placement(view):
            entry.layouts.clear()

    def apply(self, type_: str | None, body: Mapping[str, Any]) -> list[str]:
        """Apply one watch event (ADDED, MODIFIED, DELETED); the pools whose figures it changes
        (the slice's pool, and the one it left)."""
        key = _key_of(body)
        before = self._pool_of.get(key)
        pool = _pool_of(body)
        if type_ == "DELETED" or pool is None or (before is not None and before != pool):
            self._remove(key)
        if type_ != "DELETED" and pool is not None:
            self._put(key, pool, self._view(body))
        return list(dict.fromkeys(p for p in (pool, before) if p is not None))

    def replace(self, bodies: Iterable[Mapping[str, Any]]) -> list[str]:
        """Rebuild from a full listing (the watch's first list, or a relist after a gap); the
        pools whose figures may have changed: those known before and those listed."""
        before = set(self._pools)
        self._pool_of, self._pools = {}, {}
        for body in bodies:
            pool = _pool_of(body)
            if pool is not None:
                self._put(_key_of(body), pool, self._view(body))
        self.synced = True
        return list(dict.fromkeys([*sorted(before), *self._pools]))

    def slices(self, pool: str) -> list[SliceView]:
        """The pool's slice views sorted by offset (O(n log n): for checks, not per event)."""
        entry = self._pools.get(pool)
        views = list(entry.views.values()) if entry is not None else []
        return sorted(views, key=lambda v: (v.offset, v.key))

    def counts(self, pool: str) -> tuple[int, int]:
        """(slices, regions in use) of the pool, O(1)."""
        entry = self._pools.get(pool)
        return (len(entry.views), entry.regions) if entry is not None else (0, 0)

    def figures(self, pool: str, spec: GismoPoolSpec) -> PoolFigures:
        """The pool's figures: O(1) unless a slice was placed, moved or removed since the last
        call with the same capacity and region size (then its layout is computed once)."""
        entry = self._pools.get(pool) or _Pool()
        shape_key = (spec.capacity, spec.region_size)
        shape = entry.layouts.get(shape_key)
        if shape is None:
            shape = layout(spec, self.slices(pool))
            if pool in self._pools:
                entry.layouts = {shape_key: shape}
        return PoolFigures(slices=len(entry.views), regions=entry.regions, layout=shape)
