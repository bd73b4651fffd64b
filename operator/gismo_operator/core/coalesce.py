"""Coalesced background work per key: at most one run in flight and one pending per key.

Use: the GismoPool status is recomputed after every GismoSlice change, and under a burst of
admissions every admission changes a slice. Recomputing once per event would do the same work
hundreds of times a second and compete with admissions for the CPU. :class:`Coalescer` turns any
number of requests for a key into few runs, while still guaranteeing the last run starts *after*
the last request (so a run that reads the API state converges to the truth):

- a request for an idle key schedules a run ``delay`` seconds later (debounce: the requests of that
  interval all merge into that one run);
- a request while the key's run is waiting to start merges into it (nothing more happens);
- a request while the key's run is executing marks the key pending: exactly one more run follows
  (after ``delay``), however many requests arrived meanwhile;
- with ``min_interval``, runs of *all* keys start at least that many seconds apart (a budget
  for the whole process): a key waiting for its turn keeps merging requests, so the number of
  runs per second stays bounded however many keys change (the GismoSlice status with 1,000
  slices, each changed once every few seconds, would otherwise cost one write per admission);
- a run that raises is logged and retried (pending again) after a backoff growing up to
  ``max_backoff``, so a transient API error does not leave the result stale.

Runs of different keys are independent. Everything lives in the event loop of the first request
(asyncio tasks belong to one loop); :meth:`close` cancels what is scheduled (operator shutdown).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

K = TypeVar("K")


class Coalescer(Generic[K]):
    """Runs ``fn(key)`` in the background for :meth:`request` calls, coalesced per key."""

    def __init__(
        self,
        fn: Callable[[K], Awaitable[object]],
        *,
        delay: float = 0.2,
        max_backoff: float = 30.0,
        min_interval: float = 0.0,
        what: str = "background refresh",
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """``sleep`` and ``clock`` (default: the event loop's time) are the waits' time source
        (tests drive them by hand instead of timing anything)."""
        self.fn = fn
        self.delay = delay
        self.min_interval = min_interval
        self._next_start = 0.0  # clock time before which no run may start (min_interval)
        self._sleep = sleep
        self._clock = clock
        self.max_backoff = max_backoff
        self.what = what
        self._tasks: dict[K, asyncio.Task[None]] = {}
        self._pending: set[K] = set()
        self._running: set[K] = set()
        self.runs = 0  # completed or failed runs (tests, diagnostics)

    def request(self, key: K) -> None:
        """Ask for a run of ``fn(key)`` that starts after this call. Never blocks, never raises."""
        task = self._tasks.get(key)
        if task is not None and not task.done():
            if key in self._running:
                self._pending.add(key)  # merged with every other request made during this run
            return  # waiting to start: this request is covered by that run
        self._tasks[key] = asyncio.get_running_loop().create_task(self._loop(key))

    def busy(self, key: K) -> bool:
        """Whether a run of ``key`` is scheduled or executing."""
        task = self._tasks.get(key)
        return task is not None and not task.done()

    async def idle(self) -> None:
        """Wait until no run is scheduled or executing (tests; shutdown with a final flush)."""
        while True:
            tasks = [t for t in self._tasks.values() if not t.done()]
            if not tasks:
                return
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        """Cancel everything scheduled or executing."""
        tasks = [t for t in self._tasks.values() if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._pending.clear()
        self._running.clear()

    async def _turn(self) -> None:
        """Wait for this run's slot: slots are handed out in order, ``min_interval`` apart. Until
        the run starts, requests for its key merge into it (the key is not running yet)."""
        if self.min_interval <= 0:
            return
        now = self._clock() if self._clock is not None else asyncio.get_running_loop().time()
        start = max(now, self._next_start)
        self._next_start = start + self.min_interval
        if start > now:
            await self._sleep(start - now)

    async def _loop(self, key: K) -> None:
        failures = 0
        try:
            while True:
                wait = self.delay if failures == 0 else min(self.max_backoff, self.delay * 2**failures)
                if wait > 0:
                    await self._sleep(wait)
                await self._turn()
                self._pending.discard(key)
                self._running.add(key)
                try:
                    await self.fn(key)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # retried: the result must converge
                    failures += 1
                    self._pending.add(key)
                    logger.warning("%s of %s failed (retrying): %s", self.what, key, exc)
                else:
                    failures = 0
                finally:
                    self._running.discard(key)
                    self.runs += 1
                if key not in self._pending:
                    return
        finally:
            self._running.discard(key)
            if self._tasks.get(key) is asyncio.current_task():
                del self._tasks[key]
