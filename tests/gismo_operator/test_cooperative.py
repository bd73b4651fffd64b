"""Background loops give way to admissions (:mod:`gismo_operator.cooperative`).

Nothing here times the code under test: the tests count turns of the event loop and make the
other side "busy" or "quiet" by how long its callbacks run (a busy turn spins for ten times the
quiet threshold; a quiet one returns at once).
"""

from __future__ import annotations

import asyncio

import pytest
from loop_neighbour import neighbour

from gismo_operator import cooperative

#: A busy turn spins ten times the quiet threshold.
BUSY = cooperative.QUIET_SECONDS * 10


async def test_pause_on_a_quiet_loop_takes_one_turn() -> None:
    async with neighbour() as other:
        before = other.turns
        await cooperative.pause(max_defer=60)
        during = other.turns - before
    assert during <= 50  # after the first quiet turn (a few more if the machine preempts us), not 60 s


async def test_pause_defers_until_the_busy_neighbour_goes_quiet() -> None:
    async with neighbour(busy_turns=20, busy_for=BUSY) as other:
        await cooperative.pause(max_defer=60)
        seen = other.busy
    assert seen == 20  # every busy turn ran before the background work went on


async def test_pause_goes_on_after_max_defer_when_the_loop_never_goes_quiet() -> None:
    async with neighbour(busy_turns=None, busy_for=BUSY) as other:
        async with asyncio.timeout(30):  # liveness: the deferral is bounded (0.01 s asked)
            await cooperative.pause(max_defer=0.01)
        assert other.busy >= 1


async def test_chunked_yields_after_each_budget_of_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """A zero budget ends a slice at every clock reading: one pause per CLOCK_EVERY items."""
    pauses = 0

    async def counting_pause(max_defer: float = cooperative.MAX_DEFER_SECONDS) -> None:
        nonlocal pauses
        pauses += 1

    monkeypatch.setattr(cooperative, "pause", counting_pause)
    items = [i async for i in cooperative.chunked(range(10 * cooperative.CLOCK_EVERY), budget=0.0)]
    assert items == list(range(10 * cooperative.CLOCK_EVERY)) and pauses == 10
    pauses = 0
    big = [i async for i in cooperative.chunked(range(10 * cooperative.CLOCK_EVERY), budget=3600.0)]
    assert len(big) == 10 * cooperative.CLOCK_EVERY and pauses == 0
