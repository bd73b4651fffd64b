"""The pure allocator: examples and hypothesis properties (no overlap, within capacity, freed space
is reusable, deterministic)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gismo_operator.core.allocator import (
    Extent,
    NoSpace,
    fits,
    free_extents,
    free_region,
    place,
    problems,
    region_extent,
    region_usage,
    usage,
)

GI = 1 << 30


def test_first_fit_lowest_aligned_offset() -> None:
    used = [Extent(0, 2 * GI), Extent(5 * GI, GI)]
    assert place(8 * GI, used, 3 * GI, align=GI) == Extent(2 * GI, 3 * GI)
    assert place(8 * GI, used, 2 * GI, align=GI) == Extent(2 * GI, 2 * GI)
    assert place(8 * GI, [*used, Extent(2 * GI, 3 * GI)], 2 * GI, align=GI) == Extent(6 * GI, 2 * GI)


def test_alignment_skips_unaligned_gap() -> None:
    # A free gap [1, 1Gi+1) is big enough but its first aligned offset leaves too little.
    used = [Extent(0, 1), Extent(GI + 1, GI - 1)]
    assert place(4 * GI, used, GI, align=GI) == Extent(2 * GI, GI)


def test_no_space_reports_figures() -> None:
    with pytest.raises(NoSpace) as info:
        place(4 * GI, [Extent(0, GI), Extent(2 * GI, GI)], 2 * GI, align=GI)
    assert info.value.largest_free == GI
    assert info.value.free == 2 * GI
    assert "no free extent of 2147483648 bytes" in str(info.value)


def test_usage_counts_overlaps_and_overhang_once() -> None:
    u = usage(10, [Extent(0, 4), Extent(2, 4), Extent(8, 5)])
    assert (u.allocated, u.free, u.largest_free_extent, u.count) == (8, 2, 2, 3)
    assert free_extents(10, [Extent(0, 4), Extent(2, 4), Extent(8, 5)]) == [Extent(6, 2)]


def test_empty_space() -> None:
    assert usage(0, []).largest_free_extent == 0
    u = usage(64 * GI, [])
    assert (u.allocated, u.free, u.largest_free_extent) == (0, 64 * GI, 64 * GI)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="size: must be positive"):
        place(10, [], 0)
    with pytest.raises(ValueError, match="align: must be positive"):
        place(10, [], 1, align=0)
    with pytest.raises(ValueError, match="offset: must not be negative"):
        Extent(-1, 1)


def test_fits_for_growing_in_place() -> None:
    others = [Extent(4 * GI, GI)]
    assert fits(8 * GI, others, Extent(0, 4 * GI))
    assert not fits(8 * GI, others, Extent(0, 5 * GI))
    assert not fits(8 * GI, [], Extent(6 * GI, 4 * GI))


def test_problems_names_culprits() -> None:
    found = problems(
        8,
        [("ns/a", Extent(0, 4)), ("ns/b", Extent(2, 2)), ("ns/c", Extent(6, 4)), ("ns/d", Extent(5, 1))],
        align=2,
    )
    assert any("ns/a" in p and "overlaps ns/b" in p for p in found)
    assert any("ns/c" in p and "runs past the end" in p for p in found)
    assert any("ns/d starts at 5, not a multiple of 2" in p for p in found)
    assert problems(8, [("a", Extent(0, 4)), ("b", Extent(4, 4))], align=4) == []


def test_regions() -> None:
    assert region_extent(3, GI) == Extent(3 * GI, GI)
    assert free_region(4, [0, 1, 3]) == 2
    assert free_region(4, [0, 1, 2, 3]) is None
    assert free_region(2, [5, -1]) == 0
    u = region_usage(4, GI, [0, 2, 2, 9])
    assert (u.allocated, u.free, u.largest_free_extent) == (2 * GI, 2 * GI, GI)


# --------------------------------------------------------------------------------------------------
# Properties

UNIT = 16  # small units keep hypothesis fast; the code is unit-agnostic


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[int, int, list[tuple[str, int]]]:
    """A capacity, an alignment, and a sequence of operations: ("alloc", size) or ("free", k)."""
    align = draw(st.sampled_from([1, 2, 4, UNIT]))
    capacity = draw(st.integers(min_value=0, max_value=64)) * UNIT
    ops = draw(
        st.lists(
            st.one_of(
                st.tuples(st.just("alloc"), st.integers(min_value=1, max_value=24 * UNIT)),
                st.tuples(st.just("free"), st.integers(min_value=0, max_value=1000)),
            ),
            max_size=40,
        )
    )
    return capacity, align, ops


def fits_somewhere(capacity: int, live: list[Extent], size: int, align: int) -> bool:
    """Whether some aligned offset holds ``size`` bytes clear of ``live``: each gap's first aligned
    offset is the only one to try (a later one in the same gap leaves less room)."""
    start = 0
    for offset, end in [*sorted((e.offset, e.end) for e in live), (capacity, capacity)]:
        first = -(-start // align) * align
        if first + size <= offset:
            return True
        start = max(start, end)
    return False


def run(capacity: int, align: int, ops: list[tuple[str, int]]) -> list[Extent | str]:
    """Apply the operations, checking the invariants after each step; return the trace."""
    live: list[Extent] = []
    trace: list[Extent | str] = []
    for op, arg in ops:
        if op == "free":
            if live:
                live.pop(arg % len(live))
            trace.append("free")
            continue
        try:
            got = place(capacity, live, arg, align=align)
        except NoSpace as exc:
            # Nothing fits: then no aligned offset can hold it (checked here independently of place).
            assert not fits_somewhere(capacity, live, arg, align), f"{arg} fits, yet place said NoSpace"
            assert exc.largest_free < arg
            trace.append("full")
            continue
        assert got.size == arg
        assert got.offset % align == 0
        assert got.end <= capacity, "never exceeds capacity"
        assert not any(got.overlaps(other) for other in live), "never overlaps"
        live.append(got)
        trace.append(got)
        u = usage(capacity, live)
        assert u.allocated == sum(e.size for e in live)
        assert u.allocated + u.free == capacity
        assert u.largest_free_extent <= u.free
    return trace


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_never_overlaps_never_exceeds(scenario: tuple[int, int, list[tuple[str, int]]]) -> None:
    run(*scenario)


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_deterministic(scenario: tuple[int, int, list[tuple[str, int]]]) -> None:
    assert run(*scenario) == run(*scenario)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(min_value=1, max_value=8), min_size=1, max_size=12),
    st.randoms(use_true_random=False),
)
def test_order_of_existing_allocations_does_not_matter(sizes: list[int], rnd: random.Random) -> None:
    capacity = sum(sizes) * UNIT + UNIT
    live: list[Extent] = []
    for s in sizes:
        live.append(place(capacity, live, s * UNIT, align=UNIT))
    shuffled = list(live)
    rnd.shuffle(shuffled)
    assert place(capacity, live, UNIT, align=UNIT) == place(capacity, shuffled, UNIT, align=UNIT)
    assert usage(capacity, live) == usage(capacity, shuffled)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=8), min_size=1, max_size=16), st.data())
def test_freed_space_is_reusable(sizes: list[int], data: st.DataObject) -> None:
    # Fill the space exactly; it is then full. Free any one allocation: the same size fits again,
    # exactly where the freed one was (lowest first fit), and the space is full again.
    capacity = sum(sizes) * UNIT
    live = [place(capacity, [], sizes[0] * UNIT, align=UNIT)]
    for s in sizes[1:]:
        live.append(place(capacity, live, s * UNIT, align=UNIT))
    assert usage(capacity, live).free == 0
    with pytest.raises(NoSpace):
        place(capacity, live, UNIT, align=UNIT)
    victim = live.pop(data.draw(st.integers(min_value=0, max_value=len(live) - 1)))
    again = place(capacity, live, victim.size, align=UNIT)
    assert again == victim
    assert usage(capacity, [*live, again]).free == 0


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=0, max_value=200),
    st.lists(st.tuples(st.integers(0, 220), st.integers(0, 60)), max_size=12),
    st.integers(1, 40),
    st.sampled_from([1, 2, 4, 8]),
)
def test_place_agrees_with_brute_force(
    capacity: int, raw: list[tuple[int, int]], size: int, align: int
) -> None:
    # Even with overlapping / overhanging inputs, place() returns the lowest aligned offset whose
    # range is inside the space and touches no byte of any existing allocation.
    used = [Extent(o, s) for o, s in raw]
    covered = {b for e in used for b in range(e.offset, e.end)}
    expected = next(
        (
            off
            for off in range(0, capacity - size + 1, align)
            if not any(b in covered for b in range(off, off + size))
        ),
        None,
    )
    if expected is None:
        with pytest.raises(NoSpace):
            place(capacity, used, size, align=align)
    else:
        assert place(capacity, used, size, align=align) == Extent(expected, size)
