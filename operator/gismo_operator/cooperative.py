"""Long loops that share the event loop: a bounded number of items between two yields.

Why: the operator serves admissions on the same event loop as its periodic sweep, and a sweep of
a 10,000-region slice compares every entry; run in one go, that held every admission for tens of
milliseconds (~100 ms on a loaded machine). Yielding every :data:`CHUNK` items bounds the wait of
an admission by the cost of one chunk.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import TypeVar

T = TypeVar("T")

#: Items a loop handles between two yields (a few milliseconds of work at most).
CHUNK = 500


async def chunked(items: Iterable[T], size: int = CHUNK) -> AsyncIterator[T]:
    """``items``, yielding to the event loop after every ``size`` of them."""
    count = 0
    for item in items:
        yield item
        count += 1
        if count >= size:
            count = 0
            await asyncio.sleep(0)
