"""The region ledger's durability and concurrency, against a fake API that enforces resourceVersion
(:mod:`ledger_fakes`), and its one conflict-retry rule (:meth:`RegionLedger.retrying`)."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from typing import Any

import pytest
from ledger_fakes import NAME, NS, REGION, T0, TTL, Clock, FakeApi, assert_disjoint, claim_of, pod_for

from gismo_operator.core.assignment import Outcome
from gismo_operator.core.models import GismoSlice
from gismo_operator.ledger.regions import Conflict, RegionLedger, SliceGone, TooManyConflicts

# ------------------------------------------------------------------------------------------------
# The ledger against an API that enforces resourceVersion


async def test_fifty_concurrent_reservations_get_distinct_regions_and_are_durable() -> None:
    api = FakeApi()
    api.add_slice(64)
    ledger = RegionLedger(api, clock=Clock())
    got = await asyncio.gather(*(ledger.reserve(NS, NAME) for _ in range(50)))
    indexes = [r.index for r in got if r is not None]
    assert sorted(indexes) == list(range(50))
    assert sorted(r.index for r in api.regions()) == list(range(50))  # in the API, not just in memory
    assert len({r.token for r in got if r is not None}) == 50
    assert api.writes < 50  # group commit batched them


async def test_two_operator_instances_on_one_api_never_hand_out_the_same_region() -> None:
    api = FakeApi()
    api.add_slice(40)
    a, b = RegionLedger(api, clock=Clock()), RegionLedger(api, clock=Clock())
    got = await asyncio.gather(*(ledger.reserve(NS, NAME) for _ in range(20) for ledger in (a, b)))
    indexes = [r.index for r in got if r is not None]
    assert sorted(indexes) == list(range(40))
    assert api.conflicts > 0  # they did collide, and the 409s were retried
    assert len(api.regions()) == 40


async def test_every_write_is_reported_to_on_write_as_stored() -> None:
    api = FakeApi()
    api.add_slice(8)
    written: list[GismoSlice] = []
    ledger = RegionLedger(api, clock=Clock(), on_write=written.append)
    await ledger.reserve(NS, NAME)
    await ledger.reserve(NS, NAME)
    assert len(written) == api.writes == 2
    stored = GismoSlice.model_validate(api.slices[NS, NAME])
    assert written[-1].metadata.resource_version == stored.metadata.resource_version
    assert written[-1].spec == stored.spec


async def test_full_slice_answers_none_and_writes_nothing() -> None:
    api = FakeApi()
    api.add_slice(2)
    ledger = RegionLedger(api, clock=Clock())
    got = await asyncio.gather(*(ledger.reserve(NS, NAME) for _ in range(5)))
    assert sorted(r.index for r in got if r is not None) == [0, 1]
    assert got.count(None) == 3


async def test_a_stale_cache_costs_a_conflict_not_a_double_assignment() -> None:
    api = FakeApi()
    api.add_slice(4)
    ledger = RegionLedger(api, clock=Clock())
    first = await ledger.reserve(NS, NAME)
    assert first is not None
    other = RegionLedger(api, clock=Clock())  # someone else writes behind our cache's back
    second = await other.reserve(NS, NAME)
    assert second is not None and second.index == 1
    third = await ledger.reserve(NS, NAME)
    assert third is not None and third.index == 2
    assert api.conflicts == 1


async def test_conflicts_on_every_write_end_in_a_clear_error() -> None:
    api = FakeApi()
    api.add_slice(4)
    ledger = RegionLedger(api, clock=Clock(), max_attempts=3)

    async def always_conflict(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise Conflict("busy")

    api.write_slice = always_conflict  # type: ignore[method-assign]
    with pytest.raises(TooManyConflicts, match="3 conflicting writes"):
        await ledger.reserve(NS, NAME)


async def test_missing_slice_raises_slice_gone() -> None:
    ledger = RegionLedger(FakeApi(), clock=Clock())
    with pytest.raises(SliceGone):
        await ledger.reserve(NS, NAME)


async def test_a_restarted_instance_sees_every_assignment_and_double_assigns_nothing() -> None:
    api = FakeApi()
    api.add_slice(10)
    clock = Clock()
    old = RegionLedger(api, clock=clock)
    before = [await old.reserve(NS, NAME) for _ in range(4)]
    assert all(before)
    bound = before[0]
    assert bound is not None
    await old.bind(NS, NAME, claim_of(pod_for(bound, "u0")))
    del old  # the process dies; only the API remains
    new = RegionLedger(api, clock=clock)
    after = [await new.reserve(NS, NAME) for _ in range(6)]
    assert sorted(r.index for r in after if r is not None) == list(range(4, 10))
    assert await new.reserve(NS, NAME) is None


@pytest.mark.parametrize("crash_after_write", [True, False])
async def test_restart_at_any_instant_of_an_admission(crash_after_write: bool) -> None:
    """Crash between the durable write and the answer: the entry is kept until the sweep proves no pod
    took it. Crash before the write: nothing was recorded and nothing can be double-assigned."""
    api = FakeApi()
    api.add_slice(3)
    clock = Clock()
    old = RegionLedger(api, clock=clock, reservation_ttl=TTL)
    if crash_after_write:
        await old.reserve(NS, NAME)  # written; the webhook never answered (pod admitted without Gismo)
    new = RegionLedger(api, clock=clock, reservation_ttl=TTL)
    clock.now = T0 + TTL / 2
    taken = [r.index for r in [await new.reserve(NS, NAME) for _ in range(3)] if r is not None]
    assert len(taken) == (2 if crash_after_write else 3)
    assert_disjoint(api.regions())
    if crash_after_write:
        api.pods = []
        clock.now = T0 + TTL + dt.timedelta(seconds=1)
        result = await new.sweep(NS, NAME, NAME)
        assert result.released == (0,)


async def test_pod_deletion_frees_its_region_for_the_next_pod() -> None:
    api = FakeApi()
    api.add_slice(1)
    ledger = RegionLedger(api, clock=Clock())
    r = await ledger.reserve(NS, NAME)
    assert r is not None
    pod = pod_for(r, "u1", node="n1")
    api.pods.append(pod)
    assert await ledger.bind(NS, NAME, claim_of(pod)) is Outcome.BOUND
    assert api.regions()[0].node == "n1"
    assert await ledger.reserve(NS, NAME) is None
    api.pods.clear()
    assert await ledger.release(NS, NAME, claim_of(pod)) is Outcome.RELEASED
    assert api.regions() == []
    again = await ledger.reserve(NS, NAME)
    assert again is not None and again.index == 0


async def test_sweep_releases_a_bound_pod_that_vanished_and_keeps_live_ones() -> None:
    api = FakeApi()
    api.add_slice(4)
    clock = Clock()
    ledger = RegionLedger(api, clock=clock)
    r1, r2 = await ledger.reserve(NS, NAME), await ledger.reserve(NS, NAME)
    assert r1 is not None and r2 is not None
    p1, p2 = pod_for(r1, "u1"), pod_for(r2, "u2")
    api.pods = [p1, p2]
    result = await ledger.sweep(NS, NAME, NAME)  # binds both: their pods exist
    assert sorted(result.bound) == [0, 1]
    api.pods = [p2]  # p1 deleted while we missed the event
    result = await ledger.sweep(NS, NAME, NAME)
    assert result.released == (0,)
    assert [(r.index, r.pod_uid) for r in api.regions()] == [(1, "u2")]


async def test_sweep_retries_when_an_admission_writes_between_its_read_and_write() -> None:
    api = FakeApi()
    api.add_slice(4)
    clock = Clock()
    ledger = RegionLedger(api, clock=clock)
    stale = await ledger.reserve(NS, NAME)
    assert stale is not None
    clock.now = T0 + TTL * 2
    other = RegionLedger(api, clock=clock)

    def admission_sneaks_in() -> None:
        body = api.slices[NS, NAME]
        body["spec"]["regions"].append({"index": 3, "state": "Reserved", "reservedAt": clock.now.isoformat()})
        body["metadata"]["resourceVersion"] = str(next(api.rv))

    api.interfere.append(admission_sneaks_in)
    result = await other.sweep(NS, NAME, NAME)
    assert result.released == (0,)
    assert [r.index for r in api.regions()] == [3]  # the fresh reservation survived the retry
    assert api.conflicts == 1


async def test_dry_run_peek_writes_nothing() -> None:
    api = FakeApi()
    api.add_slice(2)
    ledger = RegionLedger(api, clock=Clock())
    peeked = await ledger.peek(NS, NAME)
    assert peeked is not None and peeked.index == 0
    assert api.writes == 0 and api.regions() == []


async def test_cancel_returns_an_unused_reservation() -> None:
    api = FakeApi()
    api.add_slice(2)
    ledger = RegionLedger(api, clock=Clock())
    r = await ledger.reserve(NS, NAME)
    assert r is not None
    await ledger.cancel(NS, NAME, r)
    assert api.regions() == []


async def test_write_spec_resizes_under_the_ledger_lock_and_retries_on_conflict() -> None:
    api = FakeApi()
    api.add_slice(2)
    ledger = RegionLedger(api, clock=Clock())
    assert await ledger.reserve(NS, NAME) is not None
    other = RegionLedger(api, clock=Clock())
    assert await other.reserve(NS, NAME) is not None  # our cache is now stale
    resized = await ledger.write_spec(NS, NAME, lambda s: {"size": 4 * REGION})
    assert resized.spec.size == 4 * REGION and resized.spec.region_count == 4
    assert [r.index for r in resized.spec.regions] == [0, 1]  # the other writer's entry survived
    assert api.conflicts == 1
    third = await ledger.reserve(NS, NAME)
    assert third is not None and third.index == 2
    unchanged = await ledger.write_spec(NS, NAME, lambda s: None)
    assert unchanged.spec.size == 4 * REGION


async def test_the_cached_slice_after_a_write_equals_what_the_api_stores() -> None:
    from gismo_operator.ledger.regions import after_write, parse_slice

    api = FakeApi()
    api.add_slice(8)
    ledger = RegionLedger(api, clock=Clock())
    for _ in range(3):
        assert await ledger.reserve(NS, NAME) is not None
    cached = ledger.cached(NS, NAME)
    assert cached == parse_slice(api.slices[NS, NAME])
    # An answer that disagrees on the slice itself (no precondition was possible) is parsed instead.
    changed = copy.deepcopy(api.slices[NS, NAME])
    changed["spec"]["size"] = 16 * REGION
    assert cached is not None
    assert after_write(cached, cached.spec.regions, changed).spec.size == 16 * REGION


async def test_a_slice_being_deleted_takes_no_new_pods_and_goes_once_its_last_region_is_free() -> None:
    api = FakeApi()
    api.add_slice(4)
    ledger = RegionLedger(api, clock=Clock())
    r = await ledger.reserve(NS, NAME)
    assert r is not None
    pod = pod_for(r, "u1")
    await ledger.bind(NS, NAME, claim_of(pod))
    api.delete_slice()
    ledger.forget(NS, NAME)
    with pytest.raises(SliceGone):
        await ledger.reserve(NS, NAME)
    assert await ledger.finalize_if_idle(NS, NAME) is False  # a pod still holds region 0
    assert (NS, NAME) in api.slices
    await ledger.release(NS, NAME, claim_of(pod))
    assert await ledger.finalize_if_idle(NS, NAME) is True
    assert (NS, NAME) not in api.slices


# ------------------------------------------------------------------------------------------------
# The one conflict-retry helper every ledger write goes through


async def test_retrying_rereads_after_each_conflict_and_drops_the_stale_cache() -> None:
    api = FakeApi()
    api.add_slice(regions=4)
    ledger = RegionLedger(api, reservation_ttl=TTL, clock=Clock())
    key = (NS, NAME)
    seen: list[str | None] = []

    async def attempt() -> str:
        current = await ledger._current(key)  # the cache, else one GET
        assert current is not None
        seen.append(current.metadata.resource_version)
        if len(seen) < 3:
            api.slices[key]["metadata"]["resourceVersion"] = str(next(api.rv))  # another writer
            raise Conflict("409")
        return "written"

    assert await ledger.retrying(key, attempt) == "written"
    assert ledger.conflicts == 2
    assert len(set(seen)) == 3, "each retry starts from a fresh read, never from the stale cache"
    assert ledger.cached(NS, NAME) is not None  # the last read stays cached


async def test_retrying_gives_up_after_max_attempts_with_a_clear_error() -> None:
    api = FakeApi()
    api.add_slice(regions=4)
    ledger = RegionLedger(api, reservation_ttl=TTL, clock=Clock(), max_attempts=3)
    calls: list[int] = []

    async def always() -> None:
        calls.append(1)
        await ledger._current((NS, NAME))
        raise Conflict("409")

    with pytest.raises(TooManyConflicts, match=f"GismoSlice {NS}/{NAME}: 3 conflicting writes"):
        await ledger.retrying((NS, NAME), always)
    assert len(calls) == 3 and ledger.conflicts == 3
    assert ledger.cached(NS, NAME) is None  # a 409 always leaves no stale body behind


async def test_retrying_drops_the_cache_and_stops_when_the_slice_is_gone() -> None:
    api = FakeApi()
    api.add_slice(regions=4)
    ledger = RegionLedger(api, reservation_ttl=TTL, clock=Clock())
    calls: list[int] = []

    async def gone() -> None:
        calls.append(1)
        await ledger._current((NS, NAME))
        raise SliceGone("404")

    with pytest.raises(SliceGone):
        await ledger.retrying((NS, NAME), gone)
    assert calls == [1] and ledger.cached(NS, NAME) is None


async def test_every_ledger_write_retries_through_the_one_helper(monkeypatch: pytest.MonkeyPatch) -> None:
    """reserve/bind/release (group commit), sweep, write_spec and finalize_if_idle all go through
    :meth:`RegionLedger.retrying`: a conflict in any of them is retried by the same rule."""
    api = FakeApi()
    api.add_slice(regions=4)
    ledger = RegionLedger(api, reservation_ttl=TTL, clock=Clock())
    through: list[str] = []
    real = ledger.retrying

    async def spy(key: Any, attempt: Any) -> Any:
        through.append(attempt.__qualname__.split(".")[1])
        return await real(key, attempt)

    monkeypatch.setattr(ledger, "retrying", spy)
    reservation = await ledger.reserve(NS, NAME)
    assert reservation is not None
    await ledger.bind(NS, NAME, claim_of(pod_for(reservation, "u1")))
    await ledger.sweep(NS, NAME, NAME)
    await ledger.write_spec(NS, NAME, lambda current: None)
    await ledger.finalize_if_idle(NS, NAME)
    assert through == ["_commit", "_commit", "sweep", "write_spec", "finalize_if_idle"]
