"""A neighbour task on the event loop, for tests of code that must give way to others.

It takes a turn of the loop whenever it can and counts them; for its first ``busy_turns`` turns
(all of them with ``busy_turns=None``) it spins ``busy_for`` seconds, so the code under test sees
a loop that others keep busy. Tests count turns; nothing here times the code under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator


@dataclasses.dataclass
class Neighbour:
    turns: int = 0  # turns taken so far
    busy: int = 0  # of which spent spinning


@contextlib.asynccontextmanager
async def neighbour(*, busy_turns: int | None = 0, busy_for: float = 0.0) -> AsyncIterator[Neighbour]:
    """Run a :class:`Neighbour` for the duration of the block (it has taken one turn on entry)."""
    seen = Neighbour()
    stop = False

    async def run() -> None:
        while not stop:
            if busy_turns is None or seen.busy < busy_turns:
                end = time.perf_counter() + busy_for
                while time.perf_counter() < end:
                    pass
                seen.busy += 1
            await asyncio.sleep(0)
            seen.turns += 1

    task = asyncio.create_task(run())
    await asyncio.sleep(0)
    try:
        yield seen
    finally:
        stop = True
        await task
