"""Unit and property tests of the data-area allocator."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gismo.daemon.alloc import LARGE, PAGE, Allocator


def test_alignment_and_rounding() -> None:
    a = Allocator(4096, 1 << 24)
    off, n = a.alloc(1) or (0, 0)
    assert off % 64 == 0 and n == 64
    off2, n2 = a.alloc(LARGE + 1) or (0, 0)
    assert off2 % PAGE == 0 and n2 % PAGE == 0 and n2 >= LARGE + 1
    assert a.used == n + n2


def test_free_coalesces_and_space_is_reused() -> None:
    a = Allocator(0, 1 << 20)
    exts = [a.alloc(1000) for _ in range(10)]
    assert all(e is not None for e in exts)
    for e in exts[::2]:
        assert e is not None
        a.free(*e)
    again = a.alloc(1000)
    assert again is not None and again[0] in {e[0] for e in exts[::2] if e}  # best fit reuses a hole
    a.free(*again)
    for e in exts[1::2]:
        assert e is not None
        a.free(*e)
    assert a.used == 0 and a.extents == 1 and a.largest_free == 1 << 20


def test_full_and_errors() -> None:
    a = Allocator(0, 4096)
    assert a.alloc(4097) is None
    e = a.alloc(4096)
    assert e == (0, 4096) and a.alloc(1) is None
    a.free(*e)
    with pytest.raises(ValueError):
        a.free(0, 64)  # double free
    with pytest.raises(ValueError):
        a.free(8192, 64)


def test_from_used_rebuilds_the_complement() -> None:
    a = Allocator.from_used(4096, 1 << 20, [(8192, 4096), (4096, 64)])
    assert a.used == 4096 + 64
    e = a.alloc(64)
    assert e is not None and e[0] == 4096 + 64
    with pytest.raises(ValueError):
        Allocator.from_used(0, 1 << 20, [(0, 128), (64, 128)])


def test_an_exact_fit_is_taken_and_a_misaligned_one_refused() -> None:
    a = Allocator(4096, 4 * LARGE)
    first, hole, last = (a.alloc(LARGE) or (0, 0)), (a.alloc(LARGE) or (0, 0)), (a.alloc(2 * LARGE) or (0, 0))
    assert a.largest_free == 0  # full
    a.free(*hole)
    assert a.alloc(LARGE) == hole  # exactly the hole: taken, not refused
    a.free(*hole)
    small = a.alloc(64) or (0, 0)  # now the hole has 64 bytes less, and no page-aligned LARGE room
    assert small[0] == hole[0] and a.alloc(LARGE) is None
    assert first[0] < hole[0] < last[0]


def test_a_gap_too_small_once_aligned_does_not_hide_one_that_fits() -> None:
    """The smallest free extent that is big enough loses its fit to page alignment; a larger one
    further on fits: the allocator must take that one, not refuse."""
    start = 4096
    gap = LARGE + 2048  # starts 64 bytes past a page: only LARGE - 1984 bytes once page aligned
    a = Allocator.from_used(start, 1 << 20, [(start, 64), (start + 64 + gap, 64)])
    assert not fits_somewhere({}, start + 64, start + 64 + gap, LARGE)
    got = a.alloc(LARGE)
    assert got is not None and got[0] >= start + 64 + gap + 64 and got[0] % PAGE == 0


def fits_somewhere(live: dict[int, int], start: int, end: int, n: int) -> bool:
    """Whether a request of ``n`` bytes fits a gap between the live extents (a model independent of
    the allocator's own free lists): ``n`` rounded as the allocator documents, the gap's start
    aligned up to 64 bytes (page for LARGE requests)."""
    need, align = (-(-n // PAGE) * PAGE, PAGE) if n >= LARGE else (-(-n // 64) * 64, 64)
    pos = start
    for off in [*sorted(live), end]:
        first = -(-pos // align) * align
        if first + need <= off:
            return True
        pos = max(pos, off + live.get(off, 0))
    return False


# Sizes: any, plus a few repeated ones, so that a freed extent is often exactly what the next request
# needs (the boundary case of "fits").
SIZES = st.one_of(st.integers(1, 300_000), st.sampled_from([64, 4096, LARGE, 3 * LARGE, 300_000]))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.booleans(), SIZES, st.integers(0, 10**6)), max_size=120))
def test_allocator_model(ops: list[tuple[bool, int, int]]) -> None:
    """Random alloc/free: extents never overlap, stay in range and aligned, and all space comes back."""
    size = 4 << 20
    a = Allocator(4096, size)
    live: dict[int, int] = {}
    for is_alloc, n, pick in ops:
        if is_alloc or not live:
            e = a.alloc(n)
            assert (e is not None) == fits_somewhere(
                live, 4096, 4096 + size, n
            )  # refuses exactly when nothing fits
            if e is None:
                continue
            off, taken = e
            assert taken >= n and off % (PAGE if n >= LARGE else 64) == 0
            assert off >= 4096 and off + taken <= 4096 + size
            for o, t in live.items():
                assert off + taken <= o or o + t <= off
            live[off] = taken
        else:
            off = sorted(live)[pick % len(live)]
            a.free(off, live.pop(off))
        assert a.used == sum(live.values())
    for off, taken in list(live.items()):
        a.free(off, taken)
    assert a.used == 0 and a.extents == 1
