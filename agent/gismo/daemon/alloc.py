"""Data-area allocator: best fit over coalescing free extents.

Lives only in the owning agent's memory (the region's one writer); after a restart it is rebuilt
from the sealed slots, so it never needs to be crash-consistent itself.

Sizes are rounded to 64 bytes (a cache line: no two objects share a line, which matters once
coherence means per-line flushes); objects of ``LARGE`` bytes or more are page aligned and padded to
whole pages so that numpy/Arrow see aligned buffers and huge copies stay page aligned.
Cost: O(log n) search plus O(n) list insert/remove (a memmove; n = free extents, small in practice).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from ..contract import PAGE

ALIGN = 64
LARGE = 64 << 10


def _up(n: int, a: int) -> int:
    return (n + a - 1) & ~(a - 1)


class Allocator:
    """Hands out ``[offset, offset+size)`` extents of ``[start, start+size)``."""

    def __init__(self, start: int, size: int) -> None:
        if start % ALIGN or size <= 0:
            raise ValueError("allocator range must be 64-byte aligned and non-empty")
        self.start = start
        self.size = size - size % ALIGN
        self._by_size: list[tuple[int, int]] = []  # (size, offset), sorted
        self._start: dict[int, int] = {}  # offset -> size
        self._end: dict[int, int] = {}  # end -> offset
        self.used = 0
        self._insert(start, self.size)

    @classmethod
    def from_used(cls, start: int, size: int, used: Iterable[tuple[int, int]]) -> Allocator:
        """Rebuild after a restart from the extents in use; overlapping or out-of-range ones raise."""
        a = cls(start, size)
        a._by_size.clear()
        a._start.clear()
        a._end.clear()
        pos = start
        end = start + a.size
        for off, sz in sorted(used):
            if off < pos or off + sz > end or sz <= 0:
                raise ValueError(f"extent [{off}, {off + sz}) overlaps another or leaves the data area")
            if off > pos:
                a._insert(pos, off - pos)
            pos = off + sz
            a.used += sz
        if pos < end:
            a._insert(pos, end - pos)
        return a

    @staticmethod
    def rounded(n: int) -> tuple[int, int]:
        """(bytes actually taken, alignment) for a request of ``n`` bytes."""
        if n >= LARGE:
            return _up(n, PAGE), PAGE
        return _up(max(n, 1), ALIGN), ALIGN

    def alloc(self, n: int) -> tuple[int, int] | None:
        """Reserve room for ``n`` bytes; (offset, taken) or None when no extent fits."""
        need, align = self.rounded(n)
        i = bisect.bisect_left(self._by_size, (need, -1))
        while i < len(self._by_size):
            sz, off = self._by_size[i]
            a = _up(off, align)
            if a - off + need <= sz:
                self._remove(off, sz, i)
                if a > off:
                    self._insert(off, a - off)
                if a + need < off + sz:
                    self._insert(a + need, off + sz - a - need)
                self.used += need
                return a, need
            i += 1
        return None

    def free(self, off: int, n: int) -> None:
        """Return an extent obtained from alloc (``n`` = the taken size), merging with free neighbours."""
        if off < self.start or off + n > self.start + self.size or n <= 0:
            raise ValueError(f"free of [{off}, {off + n}) outside the data area")
        if off in self._start:
            raise ValueError(f"double free at {off}")
        self.used -= n
        prev = self._end.get(off)
        if prev is not None:
            psz = off - prev
            self._remove(prev, psz)
            off, n = prev, n + psz
        nsz = self._start.get(off + n)
        if nsz is not None:
            self._remove(off + n, nsz)
            n += nsz
        self._insert(off, n)

    @property
    def free_bytes(self) -> int:
        return self.size - self.used

    @property
    def largest_free(self) -> int:
        return self._by_size[-1][0] if self._by_size else 0

    @property
    def extents(self) -> int:
        return len(self._by_size)

    def _insert(self, off: int, sz: int) -> None:
        bisect.insort(self._by_size, (sz, off))
        self._start[off] = sz
        self._end[off + sz] = off

    def _remove(self, off: int, sz: int, index: int | None = None) -> None:
        if index is None:
            index = bisect.bisect_left(self._by_size, (sz, off))
        del self._by_size[index]
        del self._start[off]
        del self._end[off + sz]
