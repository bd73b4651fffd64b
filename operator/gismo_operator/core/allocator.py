"""Byte-range placement: slices in a pool, regions in a slice. Pure functions, no I/O, no state.

Why pure: the durable state is the API server (GismoSlice objects and their ``spec.regions``);
the operator re-reads it and asks this module where the next range goes. Nothing here can go
stale or disagree with the API, and the same input always gives the same answer (property-tested).

Policy: first fit at the lowest aligned offset. Deterministic, and it keeps free space in few
large extents when clusters come and go in order. Existing allocations are taken as given, even
when they overlap or run past the end (a corrupted or hand-edited state): the free space is what
none of them covers inside the pool, so a bad entry can never make us hand out its bytes twice.
:func:`problems` reports such entries so the caller can surface them (pool ``Degraded``).

Cost: O(n log n) in the number of existing allocations (one sort); fine for thousands.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Extent:
    """A half-open byte range ``[offset, offset + size)``."""

    offset: int
    size: int

    def __post_init__(self) -> None:
        if self.offset < 0:
            raise ValueError(f"offset: must not be negative, got {self.offset}")
        if self.size < 0:
            raise ValueError(f"size: must not be negative, got {self.size}")

    @property
    def end(self) -> int:
        """One past the last byte."""
        return self.offset + self.size

    def overlaps(self, other: Extent) -> bool:
        """True when the two ranges share at least one byte (empty ranges share none)."""
        return self.offset < other.end and other.offset < self.end and self.size > 0 and other.size > 0


@dataclass(frozen=True)
class Usage:
    """What a space looks like given its allocations. ``allocated`` counts each byte once, even
    when allocations overlap, and ignores bytes past ``capacity``."""

    capacity: int
    allocated: int
    free: int
    largest_free_extent: int
    count: int


class NoSpace(Exception):
    """No free extent is large enough; the message says how much was asked for and what is left."""

    def __init__(self, requested: int, largest_free: int, free: int) -> None:
        super().__init__(
            f"no free extent of {requested} bytes (largest free extent {largest_free} bytes, "
            f"{free} bytes free in total)"
        )
        self.requested = requested
        self.largest_free = largest_free
        self.free = free


def _check_sizes(capacity: int, align: int = 1) -> None:
    if capacity < 0:
        raise ValueError(f"capacity: must not be negative, got {capacity}")
    if align <= 0:
        raise ValueError(f"align: must be positive, got {align}")


def _merged(used: Iterable[Extent], capacity: int) -> list[Extent]:
    """The union of ``used`` clipped to ``[0, capacity)``, as sorted, disjoint, non-adjacent extents."""
    out: list[Extent] = []
    for ext in sorted(e for e in used if e.size > 0):
        start, end = ext.offset, min(ext.end, capacity)
        if start >= end:
            continue
        if out and start <= out[-1].end:
            last = out[-1]
            if end > last.end:
                out[-1] = Extent(last.offset, end - last.offset)
        else:
            out.append(Extent(start, end - start))
    return out


def free_extents(capacity: int, used: Iterable[Extent]) -> list[Extent]:
    """The maximal free ranges of ``[0, capacity)`` not covered by any of ``used``, lowest first."""
    _check_sizes(capacity)
    free: list[Extent] = []
    cursor = 0
    for ext in _merged(used, capacity):
        if ext.offset > cursor:
            free.append(Extent(cursor, ext.offset - cursor))
        cursor = ext.end
    if cursor < capacity:
        free.append(Extent(cursor, capacity - cursor))
    return free


def usage(capacity: int, used: Sequence[Extent]) -> Usage:
    """Allocated, free and largest free extent of a space of ``capacity`` bytes."""
    free = free_extents(capacity, used)
    free_total = sum(e.size for e in free)
    return Usage(
        capacity=capacity,
        allocated=capacity - free_total,
        free=free_total,
        largest_free_extent=max((e.size for e in free), default=0),
        count=len(used),
    )


def _align_up(value: int, align: int) -> int:
    return -(-value // align) * align


def place(capacity: int, used: Iterable[Extent], size: int, align: int = 1) -> Extent:
    """Where a new range of ``size`` bytes goes: the lowest offset that is a multiple of ``align``
    and overlaps nothing in ``used``. Raises :class:`NoSpace` when nothing fits.

    ``align`` is the pool's ``regionSize`` for slices, so every slice (and every region in it) starts
    on a region boundary of the pool.
    """
    _check_sizes(capacity, align)
    if size <= 0:
        raise ValueError(f"size: must be positive, got {size}")
    free = free_extents(capacity, used)
    for ext in free:
        start = _align_up(ext.offset, align)
        if start + size <= ext.end:
            return Extent(start, size)
    largest = max((max(0, e.end - _align_up(e.offset, align)) for e in free), default=0)
    raise NoSpace(size, largest, sum(e.size for e in free))


def fits(capacity: int, used: Iterable[Extent], candidate: Extent) -> bool:
    """True when ``candidate`` lies inside the space and overlaps none of ``used``.

    Use it to grow a slice in place: ``fits(cap, others, Extent(slice.offset, new_size))``.
    """
    _check_sizes(capacity)
    if candidate.end > capacity:
        return False
    return not any(candidate.overlaps(e) for e in used)


def problems(capacity: int, used: Sequence[tuple[str, Extent]], align: int = 1) -> list[str]:
    """Human-readable faults in a set of named allocations: overlaps, ranges past the end,
    misaligned offsets. Empty when the state is sound. Messages name the allocations."""
    _check_sizes(capacity, align)
    out: list[str] = []
    for name, ext in used:
        if ext.end > capacity:
            out.append(f"{name} [{ext.offset}, {ext.end}) runs past the end of the space ({capacity} bytes)")
        if ext.offset % align:
            out.append(f"{name} starts at {ext.offset}, not a multiple of {align}")
    ordered = sorted(used, key=lambda item: (item[1], item[0]))
    # Sweep: compare each range with the ones still open (those whose end is past its offset).
    open_: list[tuple[str, Extent]] = []
    for name, ext in ordered:
        open_ = [(n, e) for n, e in open_ if e.end > ext.offset]
        for other_name, other in open_:
            if other.overlaps(ext):
                out.append(
                    f"{other_name} [{other.offset}, {other.end}) overlaps {name} [{ext.offset}, {ext.end})"
                )
        if ext.size > 0:
            open_.append((name, ext))
    return out


# --------------------------------------------------------------------------------------------------
# Regions inside a slice: fixed-size, so they are just indexes.


def region_extent(index: int, region_size: int) -> Extent:
    """The byte range of region ``index`` relative to the start of its slice."""
    if index < 0:
        raise ValueError(f"index: must not be negative, got {index}")
    if region_size <= 0:
        raise ValueError(f"regionSize: must be positive, got {region_size}")
    return Extent(index * region_size, region_size)


def free_region(region_count: int, taken: Iterable[int]) -> int | None:
    """The lowest region index in ``range(region_count)`` not in ``taken``, or None when all are taken.

    Lowest-first keeps the answer deterministic and lets a restarted operator rebuild the same view
    from the slice's ``spec.regions``.
    """
    if region_count < 0:
        raise ValueError(f"region_count: must not be negative, got {region_count}")
    busy = {i for i in taken if 0 <= i < region_count}
    for index in range(region_count):
        if index not in busy:
            return index
    return None


def region_usage(region_count: int, region_size: int, taken: Iterable[int]) -> Usage:
    """Usage of a slice seen as ``region_count`` regions of ``region_size`` bytes."""
    indexes = sorted({i for i in taken if 0 <= i < region_count})
    return usage(region_count * region_size, [region_extent(i, region_size) for i in indexes])
