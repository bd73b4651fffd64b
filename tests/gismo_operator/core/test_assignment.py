"""Region assignment: pure rules, and the ledger's durability/concurrency against a fake API.

The fake API behaves like a real API server where kmock does not: every write bumps
``metadata.resourceVersion`` and a write carrying a stale one gets a 409. It also yields to the
event loop inside each call, so concurrent coroutines really interleave between read and write.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import itertools
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gismo_operator.core import assignment
from gismo_operator.core.assignment import Outcome, PodClaim
from gismo_operator.core.models import GismoSlice, RegionAssignment
from gismo_operator.ledger.regions import SLICE_FINALIZER, Conflict, RegionLedger, SliceGone, TooManyConflicts

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
TTL = dt.timedelta(seconds=60)
NS, NAME = "default", "raycluster-kuberay"
REGION = 1 << 20


class FakeApi:
    """GismoSlices with real optimistic concurrency, and pods."""

    def __init__(self) -> None:
        self.slices: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: list[dict[str, Any]] = []
        self.rv = itertools.count(1)
        self.writes = 0
        self.conflicts = 0
        self.interfere: list[Any] = []  # callables run just before a write is applied

    def add_slice(self, regions: int, namespace: str = NS, name: str = NAME) -> None:
        self.slices[namespace, name] = {
            "apiVersion": "gismo.io/v1alpha1",
            "kind": "GismoSlice",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "resourceVersion": str(next(self.rv)),
                "finalizers": [SLICE_FINALIZER],
            },
            "spec": {
                "pool": "pool-a",
                "rayCluster": name,
                "offset": 0,
                "size": regions * REGION,
                "regionSize": REGION,
                "regions": [],
            },
        }

    async def read_slice(self, namespace: str, name: str) -> dict[str, Any] | None:
        await asyncio.sleep(0)
        body = self.slices.get((namespace, name))
        return copy.deepcopy(body) if body is not None else None

    async def write_slice(
        self, namespace: str, name: str, spec: Mapping[str, Any], resource_version: str | None
    ) -> dict[str, Any]:
        await asyncio.sleep(0)
        while self.interfere:
            self.interfere.pop(0)()
        body = self.slices.get((namespace, name))
        if body is None:
            raise SliceGone(name)
        if resource_version != body["metadata"]["resourceVersion"]:
            self.conflicts += 1
            raise Conflict(name)
        body["spec"].update(copy.deepcopy(dict(spec)))
        body["metadata"]["resourceVersion"] = str(next(self.rv))
        GismoSlice.model_validate(body)  # what the CRD schema would refuse
        self.writes += 1
        await asyncio.sleep(0)
        return copy.deepcopy(body)

    async def list_cluster_pods(self, namespace: str, cluster: str) -> list[dict[str, Any]]:
        await asyncio.sleep(0)
        return copy.deepcopy(self.pods)

    async def write_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str | None
    ) -> dict[str, Any]:
        await asyncio.sleep(0)
        body = self.slices.get((namespace, name))
        if body is None:
            raise SliceGone(name)
        if resource_version != body["metadata"]["resourceVersion"]:
            self.conflicts += 1
            raise Conflict(name)
        body["metadata"]["finalizers"] = list(finalizers)
        body["metadata"]["resourceVersion"] = str(next(self.rv))
        if body["metadata"].get("deletionTimestamp") and not finalizers:
            del self.slices[namespace, name]
        return copy.deepcopy(body)

    def delete_slice(self, namespace: str = NS, name: str = NAME) -> None:
        """What the API server does on DELETE of an object with finalizers."""
        body = self.slices[namespace, name]
        body["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        body["metadata"]["resourceVersion"] = str(next(self.rv))

    def regions(self) -> list[RegionAssignment]:
        return GismoSlice.model_validate(self.slices[NS, NAME]).spec.regions


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


def pod_for(reservation: Any, uid: str, node: str | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"worker-{uid}",
            "uid": uid,
            "annotations": {
                "gismo.io/region": str(reservation.index),
                "gismo.io/reservation": reservation.token,
            },
        },
        "spec": {"nodeName": node} if node else {},
    }


def claim_of(pod: dict[str, Any]) -> PodClaim:
    claim = PodClaim.from_pod(pod)
    assert claim is not None
    return claim


def assert_disjoint(regions: list[RegionAssignment]) -> None:
    indexes = [r.index for r in regions]
    assert len(indexes) == len(set(indexes))


# ------------------------------------------------------------------------------------------------
# Pure rules


def test_reserve_takes_the_lowest_free_index_and_stops_when_full() -> None:
    regions: list[RegionAssignment] = []
    got = []
    for _ in range(3):
        regions, entry = assignment.reserve(regions, 3, T0)
        assert entry is not None
        got.append(entry.index)
    assert got == [0, 1, 2]
    assert assignment.reserve(regions, 3, T0) == (regions, None)


def test_reservations_in_the_same_instant_get_distinct_tokens() -> None:
    regions: list[RegionAssignment] = []
    tokens = set()
    for _ in range(5):
        regions, entry = assignment.reserve(regions, 10, T0)
        assert entry is not None and entry.reserved_at is not None
        tokens.add(assignment.reservation_token(entry.reserved_at))
    assert len(tokens) == 5


def test_bind_then_release_only_by_the_owner() -> None:
    regions, entry = assignment.reserve([], 4, T0)
    assert entry is not None and entry.reserved_at is not None
    mine = PodClaim(index=entry.index, reservation=entry.reserved_at, uid="u1", name="p1")
    stranger = PodClaim(index=entry.index, reservation=T0 - TTL, uid="u2", name="p2")
    assert assignment.bind(regions, 4, stranger)[1] is Outcome.CONFLICT
    regions, outcome = assignment.bind(regions, 4, mine)
    assert outcome is Outcome.BOUND and regions[0].pod_uid == "u1" and regions[0].state == "Bound"
    assert assignment.bind(regions, 4, mine)[1] is Outcome.UNCHANGED
    scheduled = PodClaim(index=entry.index, reservation=entry.reserved_at, uid="u1", name="p1", node="n1")
    regions, outcome = assignment.bind(regions, 4, scheduled)
    assert outcome is Outcome.BOUND and regions[0].node == "n1"
    assert assignment.bind(regions, 4, mine)[1] is Outcome.UNCHANGED  # a later event without node keeps it
    assert assignment.release(regions, stranger)[1] is Outcome.NOT_FOUND
    assert assignment.release(regions, mine) == ([], Outcome.RELEASED)


def test_sweep_releases_gone_pods_and_expired_reservations_and_binds_claimed_ones() -> None:
    regions: list[RegionAssignment] = []
    entries = []
    for _ in range(4):
        regions, entry = assignment.reserve(regions, 8, T0)
        assert entry is not None
        entries.append(entry)
    gone = PodClaim(index=0, reservation=entries[0].reserved_at, uid="gone")
    regions, _ = assignment.bind(regions, 8, gone)
    alive = PodClaim(index=1, reservation=entries[1].reserved_at, uid="alive")
    regions, _ = assignment.bind(regions, 8, alive)
    late = PodClaim(index=2, reservation=entries[2].reserved_at, uid="late")  # reserved, pod now exists
    adopted = PodClaim(index=5, reservation=None, uid="orphan")  # running pod whose entry vanished
    # entries[3]: reserved, never became a pod
    result = assignment.sweep(regions, 8, [alive, late, adopted], T0 + TTL + dt.timedelta(seconds=1), TTL)
    assert sorted(result.released) == [0, 3]
    assert sorted(result.bound) == [2, 5]
    assert {r.index: r.pod_uid for r in result.regions} == {1: "alive", 2: "late", 5: "orphan"}
    fresh = assignment.sweep(regions, 8, [alive], T0 + TTL, TTL)
    assert 3 in {r.index for r in fresh.regions}  # not yet expired


def test_sweep_reports_a_pod_claiming_a_region_held_by_another() -> None:
    regions, entry = assignment.reserve([], 2, T0)
    assert entry is not None
    regions, _ = assignment.bind(regions, 2, PodClaim(index=0, reservation=entry.reserved_at, uid="a"))
    intruder = PodClaim(index=0, reservation=T0 - TTL, uid="b")
    result = assignment.sweep(regions, 2, [PodClaim(index=0, reservation=None, uid="a"), intruder], T0, TTL)
    assert result.conflicts == (intruder,)
    assert [r.pod_uid for r in result.regions] == ["a"]


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("reserve"), st.integers(0, 0)),
            st.tuples(st.just("bind"), st.integers(0, 15)),
            st.tuples(st.just("release"), st.integers(0, 15)),
            st.tuples(st.just("tick"), st.integers(0, 90)),
            st.tuples(st.just("sweep"), st.integers(0, 15)),
        ),
        max_size=60,
    ),
    count=st.integers(1, 8),
)
def test_no_index_is_ever_held_twice_whatever_the_sequence(ops: list[tuple[str, int]], count: int) -> None:
    regions: list[RegionAssignment] = []
    now = T0
    pods: dict[str, PodClaim] = {}  # live pods by uid
    issued: list[RegionAssignment] = []
    uid = itertools.count()
    for op, arg in ops:
        if op == "reserve":
            regions, entry = assignment.reserve(regions, count, now)
            if entry is not None:
                issued.append(entry)
        elif op == "bind" and issued:
            entry = issued[arg % len(issued)]
            claim = PodClaim(index=entry.index, reservation=entry.reserved_at, uid=f"u{next(uid)}")
            regions, outcome = assignment.bind(regions, count, claim)
            if outcome in (Outcome.BOUND, Outcome.ADOPTED):
                pods[claim.uid] = claim
        elif op == "release" and pods:
            claim = list(pods.values())[arg % len(pods)]
            del pods[claim.uid]
            regions, _ = assignment.release(regions, claim)
        elif op == "tick":
            now += dt.timedelta(seconds=arg)
        elif op == "sweep":
            regions = assignment.sweep(regions, count, list(pods.values()), now, TTL).regions
        assert_disjoint(regions)
        assert all(0 <= r.index < count for r in regions)
        # every live pod's region is recorded as its own, so no two live pods share one
        held = {r.index: r.pod_uid for r in regions}
        for claim in pods.values():
            assert held.get(claim.index) == claim.uid


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


def test_a_pod_of_an_earlier_slice_at_another_offset_is_not_adopted() -> None:
    from gismo_operator.core.assignment import Geometry

    claim = PodClaim(index=1, reservation=None, uid="old", offset=5 * REGION)
    assert assignment.bind([], 4, claim, Geometry(offset=0, region_size=REGION))[1] is Outcome.CONFLICT
    same = PodClaim(index=1, reservation=None, uid="old", offset=REGION)
    assert assignment.bind([], 4, same, Geometry(offset=0, region_size=REGION))[1] is Outcome.ADOPTED
