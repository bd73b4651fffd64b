"""The free regions of one slice as a set the webhook picks from in O(log n), lowest index first.

Pure and in memory: a cache of what the API holds (the GismoRegion objects), never the truth. The
truth is decided by the API server when a region's object is created (AlreadyExists: taken), so a
stale set costs a 409 and a retry with the next index, never a double assignment.

Lowest index first keeps a slice's used regions packed at its start (a shrink can then give bytes
back) and makes the choice deterministic for tests. A heap of candidates with lazy deletion: an
index is pushed when it becomes free, popped when taken; duplicates and indexes that became held
meanwhile are skipped at pop time, so every operation is O(log n) amortized.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable


class FreeIndexes:
    """Indexes ``0 .. count-1`` minus those held (recorded in the API or being created)."""

    def __init__(self, count: int, held: Iterable[int] = ()) -> None:
        self.count = count
        self._held: set[int] = {i for i in held if i >= 0}
        self._heap: list[int] = [i for i in range(count) if i not in self._held]  # sorted: a heap

    def __len__(self) -> int:
        """How many indexes are free."""
        return self.count - sum(1 for i in self._held if i < self.count)

    def is_held(self, index: int) -> bool:
        return index in self._held

    @property
    def held(self) -> frozenset[int]:
        return frozenset(self._held)

    def _clean(self) -> None:
        heap = self._heap
        while heap and (heap[0] in self._held or heap[0] >= self.count):
            heapq.heappop(heap)

    def peek(self) -> int | None:
        """The index :meth:`take` would return, without taking it."""
        self._clean()
        return self._heap[0] if self._heap else None

    def take(self) -> int | None:
        """Take the lowest free index (now held); None when none is free."""
        self._clean()
        if not self._heap:
            return None
        index = heapq.heappop(self._heap)
        self._held.add(index)
        return index

    def hold(self, index: int) -> None:
        """Someone holds ``index`` (seen in the API, or the API said AlreadyExists)."""
        self._held.add(index)

    def give(self, index: int) -> None:
        """``index`` is free again."""
        if index in self._held:
            self._held.discard(index)
            if index < self.count:
                heapq.heappush(self._heap, index)

    def resize(self, count: int) -> None:
        """The slice now has ``count`` regions (indexes past it are never handed out)."""
        if count > self.count:
            for i in range(self.count, count):
                if i not in self._held:
                    heapq.heappush(self._heap, i)
        self.count = count
