"""The GismoSlice status writes that follow admissions (:func:`gismo_operator.context.slice_status_writer`):
coalesced per slice, bounded in all, always with the latest counts, and never lost.

No timing: the writer's waits go through a gate the test opens, and the waits it asked for are
recorded (a frozen clock makes the spacing of the turns exact)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest
from ledger_fakes import NS, FakeApi

from gismo_operator.context import SLICE_STATUS_DELAY, SLICE_STATUS_RATE, slice_status_writer
from gismo_operator.ledger.regions import RegionLedger


class StatusApi(FakeApi):
    """The fake API, recording every slice status write."""

    def __init__(self) -> None:
        super().__init__()
        self.status_writes: list[tuple[str, dict[str, Any]]] = []

    async def write_slice_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.status_writes.append((name, dict(status)))
        await super().write_slice_status(namespace, name, status)


class GatedTime:
    """A frozen clock and a sleep that waits for the test to open the gate (and records how long
    it was asked to wait)."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.asked: list[float] = []

    def clock(self) -> float:
        return 1000.0

    async def sleep(self, seconds: float) -> None:
        self.asked.append(seconds)
        await self.gate.wait()


def setup(
    slices: list[str], regions: int, time: GatedTime | None = None
) -> tuple[StatusApi, RegionLedger, GatedTime, Any]:
    api = StatusApi()
    for name in slices:
        api.add_slice(regions, name=name)
    time = time or GatedTime()
    writer: Any = None
    ledger = RegionLedger(api, on_change=lambda key: writer.request(key))
    writer = slice_status_writer(ledger, sleep=time.sleep, clock=time.clock)
    return api, ledger, time, writer


async def test_n_admissions_into_one_slice_cost_one_status_write_with_the_final_counts() -> None:
    api, ledger, time, writer = setup(["s"], regions=64)
    results = await asyncio.gather(*(ledger.reserve(NS, "s") for _ in range(40)))
    assert all(r is not None for r in results)
    assert api.status_writes == []  # nothing written on the admission path
    time.gate.set()
    await writer.idle()
    assert api.status_writes == [
        ("s", {"regionsTotal": 64, "regionsInUse": 40, "regionsBound": 0, "regionsReserved": 40})
    ]
    assert api.slices[NS, "s"]["status"]["regionsInUse"] == 40
    # A change after that write gets its own write (the last figures are never lost).
    time.gate.clear()
    assert await ledger.reserve(NS, "s") is not None
    time.gate.set()
    await writer.idle()
    assert [w[1]["regionsInUse"] for w in api.status_writes] == [40, 41]
    # One debounce per write; the clock is frozen, so the second write also waits one turn.
    assert time.asked == [SLICE_STATUS_DELAY, SLICE_STATUS_DELAY, pytest.approx(1 / SLICE_STATUS_RATE)]
    await ledger.close()


async def test_many_slices_take_turns_and_each_gets_one_write_with_its_final_counts() -> None:
    names = [f"s{i}" for i in range(6)]
    api, ledger, time, writer = setup(names, regions=8)
    for _ in range(3):  # admissions spread over the slices, as with 1,000 slices in a pool
        for name in names:
            assert await ledger.reserve(NS, name) is not None
    assert api.status_writes == []
    time.gate.set()
    await writer.idle()
    assert sorted(api.status_writes) == [
        (n, {"regionsTotal": 8, "regionsInUse": 3, "regionsBound": 0, "regionsReserved": 3}) for n in names
    ]
    # After each slice's debounce, the turns are handed out 1/SLICE_STATUS_RATE apart (the first
    # starts at once): six writes take 5 intervals whatever the number of admissions.
    turns = sorted(w for w in time.asked if w != SLICE_STATUS_DELAY)
    assert turns == pytest.approx([k / SLICE_STATUS_RATE for k in range(1, len(names))])
    await ledger.close()


class TurnTime(GatedTime):
    """The debounces end at once; the first wait for a turn sets ``waiting`` and holds there."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.asked.append(seconds)
        if seconds == SLICE_STATUS_DELAY:
            return
        self.waiting.set()
        await self.gate.wait()


async def test_a_change_while_a_slice_waits_for_its_turn_merges_into_that_write() -> None:
    api, ledger, time, writer = setup(["a", "b"], regions=8, time=TurnTime())
    assert isinstance(time, TurnTime)
    assert await ledger.reserve(NS, "a") is not None
    assert await ledger.reserve(NS, "b") is not None
    await asyncio.wait_for(time.waiting.wait(), 30)  # a guard against a hang, not a timing
    assert [w[0] for w in api.status_writes] == ["a"]  # "b" waits for its turn
    for _ in range(3):  # "b" changes while waiting: merged into that write, not a second one
        assert await ledger.reserve(NS, "b") is not None
    time.gate.set()
    await writer.idle()
    assert api.status_writes[1:] == [
        ("b", {"regionsTotal": 8, "regionsInUse": 4, "regionsBound": 0, "regionsReserved": 4})
    ]
    await ledger.close()
