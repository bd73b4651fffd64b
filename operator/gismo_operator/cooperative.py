"""Background work that shares the event loop with admissions: small slices, admissions first.

Why: the operator answers admissions on the same event loop as its periodic sweep. A sweep round
over 10,000 regions (or 1,000 slices) is a few hundred milliseconds of CPU; handed to the loop in
chunks of a few milliseconds with a plain ``sleep(0)`` between them, every step of every admission
in that window queued behind a chunk (an admission takes ~6 steps: read, create, fence, answer...),
and the p99 at 200 admissions/s rose from ~10 ms to 50-170 ms while a round ran.

Two rules, both here so every background loop follows them:

- :func:`chunked` hands out items for at most :data:`SLICE_SECONDS` of work between two yields
  (measured, not counted: items differ in cost by 100x), so an admission step that becomes ready
  waits behind one short slice at most.
- :func:`pause` (the yield those loops use) gives way while the loop is busy: it returns only
  after a turn of the event loop in which the other ready callbacks took less than
  :data:`QUIET_SECONDS`, or after :data:`MAX_DEFER_SECONDS` whatever the load, so background work
  runs in the gaps between admissions and still progresses (~1/20 of the loop) when they never stop.

Cost: a background round takes longer in wall time under load (a round over 10,000 regions is
~0.2 s of CPU; at 200 admissions/s it finishes in about a second, under saturation in a few): the
default TTL and sweep interval leave 5 s of the 60 s release bound for it (:mod:`gismo_operator.settings`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from typing import TypeVar

T = TypeVar("T")

#: Seconds of work a background loop does between two yields (an admission step waits this long
#: at most behind it).
SLICE_SECONDS = 0.001
#: The clock is read once per this many items (reading it costs ~50 ns; an item 1-20 us).
CLOCK_EVERY = 8
#: A turn of the event loop in which the others' callbacks took less than this is "quiet".
QUIET_SECONDS = 0.0002
#: The longest :func:`pause` defers to a busy loop: background work keeps ~1 slice per this.
MAX_DEFER_SECONDS = 0.02


async def pause(max_defer: float = MAX_DEFER_SECONDS) -> None:
    """Yield to the event loop; while other callbacks keep it busy, keep yielding, for at most
    ``max_defer`` seconds. Each ``sleep(0)`` lets every callback already ready run once, so the time
    it takes is the others' work: near zero means nothing else wanted the loop."""
    deadline = time.perf_counter() + max_defer
    while True:
        before = time.perf_counter()
        await asyncio.sleep(0)
        after = time.perf_counter()
        if after - before < QUIET_SECONDS or after >= deadline:
            return


async def chunked(items: Iterable[T], budget: float | None = None) -> AsyncIterator[T]:
    """``items``, with a :func:`pause` after every ``budget`` seconds (default :data:`SLICE_SECONDS`)
    spent by the consumer and the iteration together."""
    budget = SLICE_SECONDS if budget is None else budget
    started = time.perf_counter()
    count = 0
    for item in items:
        yield item
        count += 1
        if count >= CLOCK_EVERY:
            count = 0
            if time.perf_counter() - started >= budget:
                await pause()
                started = time.perf_counter()
