"""The one way tests and harnesses wait for a state: poll a probe until it holds, with one bound.

Every harness (the store's agent and node processes, the operator against kmock, Ray clusters, the
demo) waits through these two functions, so there is one time bound, ``WAIT_LIMIT``, generous for a
loaded 2-core machine. The bound guards against hangs; it is never an assertion about speed: a test
waits for the state it needs (an agent serving, a slice recorded, an Event posted), then checks it.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: Seconds a wait polls before it fails (the one bound every harness uses).
WAIT_LIMIT = 30.0
#: Seconds between two probes.
PERIOD = 0.02


class WaitTimeout(AssertionError, TimeoutError):
    """The awaited state never held. An AssertionError (a test fails with the message) and a
    TimeoutError (for callers outside tests, such as the demo, that catch timeouts)."""


def _fail(what: str, limit: float, last: Any) -> WaitTimeout:
    return WaitTimeout(f"gave up after {limit:g} s waiting for {what} (last value: {last!r})")


def wait_until(probe: Callable[[], T], what: str, *, limit: float = WAIT_LIMIT, period: float = PERIOD) -> T:
    """Call ``probe()`` until it returns something truthy and return that value.

    ``what`` names the awaited state in the failure message ("agent 0 to serve"). Exceptions from
    the probe propagate at once (a probe that finds a dead process says so; it is not retried).
    """
    deadline = time.monotonic() + limit
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise _fail(what, limit, last)
        time.sleep(period)


async def wait_until_async(
    probe: Callable[[], Awaitable[T] | T], what: str, *, limit: float = WAIT_LIMIT, period: float = PERIOD
) -> T:
    """``wait_until`` for event loops: ``probe`` may be a coroutine function or a plain function."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while True:
        last: Any = probe()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last  # type: ignore[no-any-return]
        if loop.time() > deadline:
            raise _fail(what, limit, last)
        await asyncio.sleep(period)


__all__ = ["PERIOD", "WAIT_LIMIT", "WaitTimeout", "wait_until", "wait_until_async"]
