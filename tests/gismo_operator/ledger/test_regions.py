"""The region ledger (one GismoRegion object per region held) against a fake API that enforces
resourceVersion, AlreadyExists and delete preconditions (:mod:`ledger_fakes`): distinct and durable
regions under concurrency and across operator processes, restarts and crashes at every step of a
reservation, release with and without a garbage collector, never falsely full, migration of
slices written by earlier operators, and a seeded churn with restarts."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import random
from typing import Any

import pytest
from ledger_fakes import (
    NAME,
    NS,
    REGION,
    T0,
    TTL,
    Clock,
    Crash,
    FakeApi,
    Process,
    assert_disjoint,
    claim_of,
    pod_for,
    refuse_invalid_metadata,
)
from loop_neighbour import neighbour

from gismo import poolrules
from gismo_operator import cooperative
from gismo_operator.constants import LABEL_CLUSTER, LABEL_SLICE
from gismo_operator.core.assignment import Outcome, reservation_token
from gismo_operator.core.models import name_label, region_name
from gismo_operator.ledger.regions import Listing, RegionLedger, Reservation, SliceGone, TooManyConflicts

GRACE = dt.timedelta(seconds=5)


def ledger_on(api: FakeApi, clock: Clock, **kwargs: Any) -> RegionLedger:
    return RegionLedger(api, clock=clock, reservation_ttl=TTL, reclaim_grace=GRACE, **kwargs)


def one_slice(
    regions: int, *, legacy: list[dict[str, Any]] | None = None, name: str = NAME, **kwargs: Any
) -> tuple[FakeApi, Clock, RegionLedger]:
    """The setup of most tests: a fake API holding one slice of ``regions`` regions (``legacy``: as
    an earlier operator wrote it), a clock, and one operator process's ledger on them."""
    api = FakeApi()
    api.add_slice(regions, name=name, legacy=legacy)
    clock = Clock()
    return api, clock, ledger_on(api, clock, **kwargs)


async def reserve_and_probe(
    ledger: RegionLedger, api: FakeApi, probes: list[tuple[Reservation, bool]]
) -> Reservation | None:
    """Reserve, and at the instant the answer is given (no await in between) record whether the API
    holds exactly that reservation: durability is checked when each reservation is answered."""
    got = await ledger.reserve(NS, NAME)
    if got is not None:
        held = api.holders().get(got.index)
        probes.append((got, held is not None and held.reserved_at == got.entry.reserved_at))
    return got


# ------------------------------------------------------------------------------------------------
# Distinct and durable


async def test_fifty_concurrent_reservations_are_distinct_and_durable_when_each_is_answered() -> None:
    api, _, ledger = one_slice(64)
    probes: list[tuple[Reservation, bool]] = []
    got = await asyncio.gather(*(reserve_and_probe(ledger, api, probes) for _ in range(50)))
    assert sorted(r.index for r in got if r is not None) == list(range(50))
    assert len(probes) == 50 and all(durable for _, durable in probes)
    assert len({r.token for r in got if r is not None}) == 50
    assert sorted(api.holders()) == list(range(50))


async def test_two_operator_processes_into_one_slice_never_share_a_region() -> None:
    api, clock, _ = one_slice(40)
    a, b = ledger_on(api, clock), ledger_on(api, clock)
    probes: list[tuple[Reservation, bool]] = []
    got = await asyncio.gather(
        *(reserve_and_probe(ledger, api, probes) for _ in range(25) for ledger in (a, b))
    )
    indexes = [r.index for r in got if r is not None]
    assert sorted(indexes) == list(range(40))  # 40 distinct, 10 told "full"
    assert got.count(None) == 10
    assert a.already_exists + b.already_exists > 0  # they did collide; AlreadyExists moved them on
    assert all(durable for _, durable in probes)
    assert len(api.holders()) == 40


async def test_bytes_written_per_reservation_do_not_grow_with_the_slice() -> None:
    per_admission = []
    for size in (10, 1000):
        api, _, ledger = one_slice(size + 1)
        for _ in range(size):
            assert await ledger.reserve(NS, NAME) is not None
        before = api.bytes_written
        assert await ledger.reserve(NS, NAME) is not None
        per_admission.append(api.bytes_written - before)
    assert per_admission[1] <= per_admission[0] + 8  # the index has more digits, nothing else


async def test_a_full_slice_answers_none_and_holds_nothing_more() -> None:
    api, _, ledger = one_slice(2)
    got = await asyncio.gather(*(ledger.reserve(NS, NAME) for _ in range(5)))
    assert sorted(r.index for r in got if r is not None) == [0, 1]
    assert got.count(None) == 3
    assert sorted(api.holders()) == [0, 1]


async def test_a_missing_slice_raises_slice_gone() -> None:
    with pytest.raises(SliceGone):
        await ledger_on(FakeApi(), Clock()).reserve(NS, NAME)


async def test_a_region_taken_behind_the_cache_costs_an_already_exists_not_a_double_assignment() -> None:
    api, clock, _ = one_slice(4)
    ledger, other = ledger_on(api, clock), ledger_on(api, clock)
    assert (await ledger.reserve(NS, NAME)).index == 0  # type: ignore[union-attr]
    assert (await other.reserve(NS, NAME)).index == 1  # type: ignore[union-attr]
    third = await ledger.reserve(NS, NAME)  # its cache thinks 1 is free
    assert third is not None and third.index == 2
    assert ledger.already_exists == 1


async def test_every_index_taken_by_others_ends_in_a_clear_error_not_a_loop() -> None:
    api, _, ledger = one_slice(100, max_attempts=3)
    await ledger.reserve(NS, NAME)  # loaded
    for i in range(1, 100):  # another process takes everything, unseen by our cache
        api.regions_by_name[NS, region_name(NAME, i)] = {
            **api.regions_by_name[NS, region_name(NAME, 0)],
            "metadata": {"name": region_name(NAME, i), "labels": {}, "uid": f"x{i}", "resourceVersion": "1"},
        }
    with pytest.raises(TooManyConflicts, match="3 regions taken in a row"):
        await ledger.reserve(NS, NAME)


async def test_dry_run_peek_writes_nothing() -> None:
    api, _, ledger = one_slice(2)
    peeked = await ledger.peek(NS, NAME)
    assert peeked is not None and peeked.index == 0
    assert api.writes == 0 and api.holders() == {}


async def test_cancel_gives_an_unused_reservation_back() -> None:
    api, _, ledger = one_slice(2)
    r = await ledger.reserve(NS, NAME)
    assert r is not None
    await ledger.cancel(NS, NAME, r)
    assert api.holders() == {}
    again = await ledger.reserve(NS, NAME)
    assert again is not None and again.index == 0


# ------------------------------------------------------------------------------------------------
# Restarts and crashes


async def test_a_restarted_process_sees_every_assignment_and_double_assigns_nothing() -> None:
    api, clock, _ = one_slice(10)
    old = ledger_on(api, clock)
    before = [await old.reserve(NS, NAME) for _ in range(4)]
    assert all(before)
    api.pods = [pod_for(before[0], "u0")]
    await old.bind(NS, NAME, claim_of(api.pods[0]))
    del old  # the process dies; only the API remains
    new = ledger_on(api, clock)
    after = [await new.reserve(NS, NAME) for _ in range(6)]
    assert sorted(r.index for r in after if r is not None) == list(range(4, 10))
    assert await new.reserve(NS, NAME) is None


@pytest.mark.parametrize("point", ["create_region", "create_region:applied", "read_slice"])
async def test_a_crash_inside_the_commit_then_a_restart_loses_and_doubles_nothing(point: str) -> None:
    """Kill the process at each step of a reservation while others are answered around it:
    before the create reaches the API, after it was stored but before its answer, and between the
    create and the fence read. Every answered reservation stays held; the restarted process hands
    out none of them again; the reservation nobody was answered expires, nothing leaks."""
    api, clock, _ = one_slice(6)
    process = Process(api)
    old = RegionLedger(process, clock=clock, reservation_ttl=TTL, reclaim_grace=GRACE)
    answered: list[Reservation] = []
    for _ in range(2):
        r = await old.reserve(NS, NAME)
        assert r is not None
        answered.append(r)
    crashes = {"n": 0}

    def crash() -> None:
        crashes["n"] += 1
        if crashes["n"] == 1:
            raise Crash(point)

    api.hooks[point] = crash
    with pytest.raises(Crash):
        await old.reserve(NS, NAME)
    api.hooks.clear()
    with contextlib.suppress(Crash):
        await old.drain()  # what it had started dies with it
    assert process.dead
    del old
    new = ledger_on(api, clock)
    held_now = api.holders()
    for r in answered:  # nothing lost
        assert held_now[r.index].reserved_at == r.entry.reserved_at
    rest = [await new.reserve(NS, NAME) for _ in range(6)]
    got = [r.index for r in rest if r is not None]
    assert not {r.index for r in answered} & set(got)  # nothing doubled
    assert len(got) == len(set(got))
    orphan = 1 if point != "create_region" else 0  # stored, never answered
    assert len(got) == 4 - orphan
    # The orphan's pod never appears: it expires (on the spot, once the slice is full and it is
    # older than the grace), and is handed out again; every answered one is kept.
    clock.advance(GRACE.total_seconds() + 1)
    api.pods = [pod_for(r, f"u{i}") for i, r in enumerate([*answered, *[r for r in rest if r is not None]])]
    last = await new.reserve(NS, NAME)
    assert (last is not None) == bool(orphan)
    assert sorted(api.holders()) == list(range(6))


# ------------------------------------------------------------------------------------------------
# Binding and release


async def test_bind_makes_the_pod_the_owner_and_release_frees_the_region() -> None:
    api, _, ledger = one_slice(1)
    r = await ledger.reserve(NS, NAME)
    assert r is not None
    body = api.regions_by_name[NS, region_name(NAME, 0)]
    assert body["metadata"]["ownerReferences"][0]["kind"] == "GismoSlice"  # a reservation: the slice's
    pod = pod_for(r, "u1", node="n1")
    api.pods.append(pod)
    assert await ledger.bind(NS, NAME, claim_of(pod)) is Outcome.BOUND
    body = api.regions_by_name[NS, region_name(NAME, 0)]
    assert body["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": "worker-u1", "uid": "u1", "blockOwnerDeletion": False}
    ]
    assert body["spec"]["podUID"] == "u1" and body["spec"]["node"] == "n1"
    assert await ledger.bind(NS, NAME, claim_of(pod)) is Outcome.UNCHANGED  # no write for a no-op event
    assert await ledger.reserve(NS, NAME) is None
    api.pods.clear()
    assert await ledger.release(NS, NAME, claim_of(pod)) is Outcome.RELEASED
    assert api.holders() == {}
    again = await ledger.reserve(NS, NAME)
    assert again is not None and again.index == 0


async def test_release_never_deletes_a_region_rebound_to_another_pod_meanwhile() -> None:
    """Between the release's read and its delete, another process releases the region and gives it
    to a new pod (a new object of the same name): the delete's uid/resourceVersion preconditions
    make it fail (409), and the new holder keeps its region."""
    api, _, ledger = one_slice(1)
    r = await ledger.reserve(NS, NAME)
    assert r is not None
    gone = pod_for(r, "u-old")
    await ledger.bind(NS, NAME, claim_of(gone))
    key = (NS, region_name(NAME, 0))

    def rebound_meanwhile() -> None:
        old = api.regions_by_name.pop(key)
        new = copy.deepcopy(old)
        new["metadata"].update(uid="region-uid-new", resourceVersion=str(next(api.rv)))
        new["spec"].update(podUID="u-new", podName="worker-u-new")
        api.regions_by_name[key] = new

    api.interfere.append(rebound_meanwhile)
    assert await ledger.release(NS, NAME, claim_of(gone)) is Outcome.NOT_FOUND
    assert api.holders()[0].pod_uid == "u-new"
    assert api.conflicts == 1


async def test_a_pod_whose_reservation_expired_is_adopted_and_a_conflicting_one_is_reported() -> None:
    api, _, ledger = one_slice(2)
    r = await ledger.reserve(NS, NAME)
    assert r is not None
    pod = pod_for(r, "u1")
    await ledger.cancel(NS, NAME, r)  # as if it had expired before the pod was seen
    assert await ledger.bind(NS, NAME, claim_of(pod)) is Outcome.ADOPTED
    assert api.holders()[0].pod_uid == "u1"
    impostor = pod_for(r, "u2")
    assert await ledger.bind(NS, NAME, claim_of(impostor)) is Outcome.CONFLICT
    assert api.holders()[0].pod_uid == "u1"


# ------------------------------------------------------------------------------------------------
# Pods that vanish while the operator is down; never falsely full


@pytest.mark.parametrize("garbage_collector", [True, False])
async def test_regions_of_pods_deleted_while_down_are_free_for_the_next_pods(garbage_collector: bool) -> None:
    """With a garbage collector (a real cluster) the regions go with their pods; without one
    (kmock) the restarted process reclaims them on the spot when the slice looks full."""
    api, clock, _ = one_slice(4)
    old = ledger_on(api, clock)
    reservations = [await old.reserve(NS, NAME) for _ in range(4)]
    pods = [pod_for(r, f"u{i}") for i, r in enumerate(reservations)]
    api.pods = list(pods)
    for pod in pods:
        await old.bind(NS, NAME, claim_of(pod))
    del old  # down
    api.pods = pods[2:]  # two pods deleted while nobody watched
    if garbage_collector:
        assert api.gc() == 2
        assert sorted(api.holders()) == [2, 3]
    new = ledger_on(api, clock)
    got = [await new.reserve(NS, NAME) for _ in range(3)]
    assert sorted(r.index for r in got if r is not None) == [0, 1]  # not "full"
    assert got[2] is None  # really full now: 2 live pods + 2 new reservations
    assert sorted(api.holders()) == [0, 1, 2, 3]


async def test_a_reservation_whose_pod_never_appeared_is_reclaimed_only_after_the_grace() -> None:
    _, clock, ledger = one_slice(1)
    assert await ledger.reserve(NS, NAME) is not None  # its pod is still on its way
    clock.advance(GRACE.total_seconds() - 1)
    assert await ledger.reserve(NS, NAME) is None  # too young to take back
    clock.advance(2)
    again = await ledger.reserve(NS, NAME)
    assert again is not None and again.index == 0


async def test_the_periodic_sweep_releases_vanished_pods_without_a_garbage_collector() -> None:
    api, _, ledger = one_slice(4)
    r1, r2 = await ledger.reserve(NS, NAME), await ledger.reserve(NS, NAME)
    p1, p2 = pod_for(r1, "u1"), pod_for(r2, "u2")
    api.pods = [p1, p2]
    result = await ledger.sweep(NS, NAME, NAME)  # binds both: their pods exist
    assert sorted(result.bound) == [0, 1]
    assert {i: e.pod_uid for i, e in api.holders().items()} == {0: "u1", 1: "u2"}
    api.pods = [p2]  # p1's deletion event missed
    result = await ledger.sweep(NS, NAME, NAME)
    assert result.released == (0,)
    assert {i: e.pod_uid for i, e in api.holders().items()} == {1: "u2"}


async def test_a_sweep_of_a_large_slice_yields_to_the_event_loop_between_slices_of_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Admissions are served during a sweep: it gives way after every slice of work, not only at
    API calls (here it makes none: the listing is given and nothing is to be released). A zero
    budget makes every clock reading the end of a slice, so the count of yields is exact."""
    count = 1500
    api, _, ledger = one_slice(2 * count)
    api.write_delay = 0
    for _ in range(count):
        assert await ledger.reserve(NS, NAME) is not None
    regions = [ledger.parse_listed((NS, NAME), body) for body in await api.list_regions(NS, NAME)]
    listing = Listing(
        slice=api.slices[NS, NAME],
        regions=[h for h in regions if h is not None],
        pods=[],
        mark=ledger.sequence(),
    )
    monkeypatch.setattr(cooperative, "SLICE_SECONDS", 0.0)
    async with neighbour() as other:
        start = other.turns
        result = await ledger.sweep(NS, NAME, NAME, listing=listing)
        during = other.turns - start
    assert result.released == () and len(result.regions) == count
    # The entries are walked twice (listed, then kept): a yield per CLOCK_EVERY entries each time.
    assert during >= 2 * count // cooperative.CLOCK_EVERY
    again = await ledger.reserve(NS, NAME)  # the cache survives the sliced sweep
    assert again is not None and again.index == count


async def test_a_sweep_never_deletes_a_region_bound_between_its_list_and_its_delete() -> None:
    api, clock, ledger = one_slice(2)
    r = await ledger.reserve(NS, NAME)
    assert r is not None
    clock.now = T0 + TTL * 2  # expired as far as the sweep can tell
    other = ledger_on(api, clock)
    pod = pod_for(r, "late")

    def bound_meanwhile() -> None:
        body = api.regions_by_name[NS, region_name(NAME, 0)]
        body["spec"].update(state="Bound", podUID="late", podName="worker-late")
        body["metadata"]["resourceVersion"] = str(next(api.rv))

    api.interfere.append(bound_meanwhile)
    result = await other.sweep(NS, NAME, NAME)
    assert result.released == ()
    assert api.holders()[0].pod_uid == "late"
    assert pod  # the pod exists for whoever bound it


# ------------------------------------------------------------------------------------------------
# Slice lifecycle: resize fence, finalizer, migration


async def test_a_slice_being_deleted_takes_no_new_pods_and_goes_once_its_last_region_is_free() -> None:
    api, _, ledger = one_slice(4)
    r = await ledger.reserve(NS, NAME)
    assert r is not None
    pod = pod_for(r, "u1")
    await ledger.bind(NS, NAME, claim_of(pod))
    api.delete_slice()
    with pytest.raises(SliceGone):  # the fence: seen after the create, the region is given back
        await ledger.reserve(NS, NAME)
    await ledger.drain()
    assert sorted(api.holders()) == [0]
    assert await ledger.finalize_if_idle(NS, NAME) is False  # a pod still holds region 0
    assert (NS, NAME) in api.slices
    await ledger.release(NS, NAME, claim_of(pod))
    assert await ledger.finalize_if_idle(NS, NAME) is True
    assert (NS, NAME) not in api.slices


async def test_the_shrink_fence_puts_the_size_back_when_a_region_past_the_end_appears() -> None:
    api, clock, ledger = one_slice(4)
    other = ledger_on(api, clock)
    await other.reserve(NS, NAME)  # region 0
    assert await ledger.in_use(NS, NAME) == {0}

    original = api.write_slice

    async def write_then_race(namespace: str, name: str, spec: Any, rv: Any) -> dict[str, Any]:
        if spec.get("size") == 1 * REGION:
            # Region 1 is created after the shrink's listing and before its write: only the
            # listing after the write can see it.
            api.regions_by_name[NS, region_name(NAME, 1)] = {
                **api.regions_by_name[NS, region_name(NAME, 0)],
                "metadata": {
                    "name": region_name(NAME, 1),
                    "labels": api.regions_by_name[NS, region_name(NAME, 0)]["metadata"]["labels"],
                    "uid": "late",
                    "resourceVersion": str(next(api.rv)),
                },
                "spec": {**api.regions_by_name[NS, region_name(NAME, 0)]["spec"], "index": 1},
            }
        return await original(namespace, name, spec, rv)

    def shrink(current: Any, in_use: frozenset[int]) -> dict[str, Any] | None:
        return None if any(i >= 1 for i in in_use) else {"size": 1 * REGION}

    api.write_slice = write_then_race  # type: ignore[method-assign]
    written = await ledger.write_spec(NS, NAME, shrink)
    assert written.spec.size == 4 * REGION  # put back: region 1 lies past the shrunk end
    assert api.slices[NS, NAME]["spec"]["size"] == 4 * REGION
    # Without the race (region 1 gone again) the same shrink goes through.
    del api.regions_by_name[NS, region_name(NAME, 1)]
    api.write_slice = original  # type: ignore[method-assign]
    assert (await ledger.write_spec(NS, NAME, shrink)).spec.size == 1 * REGION


async def test_an_admission_that_sees_a_shrink_after_its_create_gives_the_region_back() -> None:
    api, _, ledger = one_slice(2)
    assert (await ledger.reserve(NS, NAME)).index == 0  # type: ignore[union-attr]

    def shrink_now() -> None:
        api.slices[NS, NAME]["spec"]["size"] = 1 * REGION
        api.slices[NS, NAME]["metadata"]["resourceVersion"] = str(next(api.rv))

    api.hooks["create_region:applied"] = shrink_now
    assert await ledger.reserve(NS, NAME) is None  # index 1 is past the new end: full
    api.hooks.clear()
    await ledger.drain()
    assert sorted(api.holders()) == [0]


def legacy_entries() -> list[dict[str, Any]]:
    return [
        {
            "index": 0,
            "state": "Bound",
            "podUID": "u0",
            "podName": "w0",
            "node": "n1",
            "reservedAt": "2026-01-01T00:00:00.000001+00:00",
        },
        {"index": 2, "state": "Reserved", "reservedAt": "2026-01-01T00:00:00.000002+00:00"},
    ]


async def test_a_slice_written_by_the_earlier_operator_is_migrated_once_and_keeps_working() -> None:
    api, clock, _ = one_slice(4, legacy=legacy_entries())
    old_pod = {"metadata": {"name": "w0", "uid": "u0", "annotations": {"gismo.io/region": "0"}}, "spec": {}}
    api.pods = [old_pod]  # the earlier operator's pod, still running
    ledger = ledger_on(api, clock)
    got = [await ledger.reserve(NS, NAME) for _ in range(3)]
    assert [r.index for r in got if r is not None] == [1, 3]  # 0 and 2 stay their holders'
    assert got[2] is None
    held = api.holders()
    assert held[0].pod_uid == "u0" and held[0].node == "n1"
    assert reservation_token(held[2].reserved_at) == "2026-01-01T00:00:00.000002+00:00"  # the pod's token
    assert api.slices[NS, NAME]["spec"]["regions"] == []
    owner = api.regions_by_name[NS, region_name(NAME, 0)]["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"]) == ("Pod", "u0")
    # A pod of the old operator still releases its region through the new ledger.
    assert await ledger.release(NS, NAME, claim_of(old_pod)) is Outcome.RELEASED


async def test_migration_interrupted_after_some_creates_finishes_on_the_next_start() -> None:
    api, clock, _ = one_slice(4, legacy=legacy_entries())
    creates = {"n": 0}

    def crash_after_first() -> None:
        creates["n"] += 1
        if creates["n"] == 2:
            raise Crash("migration")

    api.hooks["create_region"] = crash_after_first
    with pytest.raises(Crash):
        await ledger_on(api, clock).reserve(NS, NAME)
    api.hooks.clear()
    assert sorted(api.holders()) == [0]  # half done: one object, the list still there
    assert len(api.slices[NS, NAME]["spec"]["regions"]) == 2
    restarted = ledger_on(api, clock)
    r = await restarted.reserve(NS, NAME)
    assert r is not None and r.index == 1
    assert sorted(api.holders()) == [0, 1, 2]
    assert api.slices[NS, NAME]["spec"]["regions"] == []
    # Idempotent: a migrated slice is not migrated again (the old pod still holds region 0).
    api.pods = [
        {"metadata": {"name": "w0", "uid": "u0", "annotations": {"gismo.io/region": "0"}}, "spec": {}}
    ]
    await restarted.sweep(NS, NAME, NAME)
    assert sorted(api.holders()) == [0, 1, 2]
    assert api.holders()[0].pod_uid == "u0"


# ------------------------------------------------------------------------------------------------
# Churn with restarts


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
async def test_churn_with_restarts_never_overlaps_never_skips_while_free_and_leaks_nothing(seed: int) -> None:
    """Pods admitted, created, deleted at random; the operator restarted (a new ledger, the old
    one's memory gone) at random steps; the garbage collector present or not; deletion events
    missed half the time. Invariants at every step: no two live pods share a region; a pod is
    refused only when every region is held by a live pod or by a reservation younger than the
    grace (answered, its pod on the way); at the end, after the pods go and the sweep runs,
    nothing is held, and a full complement of pods gets regions. A reservation whose pod is not
    created within the grace is abandoned (its pod "never appeared"). ``reclaim_interval`` 0: the
    rule is checked exactly (the default rate-limits a really full slice's re-listing to one per
    second)."""
    rng = random.Random(seed)
    regions = 8
    api, clock, ledger = one_slice(regions, reclaim_interval=dt.timedelta(0))
    with_gc = seed % 2 == 0
    live: dict[str, Reservation] = {}  # pod uid -> its reservation
    pending: list[Reservation] = []  # answered, pod not created yet
    uid = 0
    for _step in range(300):
        clock.advance(rng.choice([0.1, 0.5, 2.0]))
        action = rng.random()
        pending = [r for r in pending if clock.now - r.entry.reserved_at <= GRACE]  # else abandoned
        if action < 0.08:
            ledger = ledger_on(
                api, clock, reclaim_interval=dt.timedelta(0)
            )  # restart: the old process's memory is gone
        elif action < 0.5:
            held = api.holders()
            young = {i for i, e in held.items() if e.pod_uid is None and clock.now - e.reserved_at <= GRACE}
            live_indexes = {r.index for r in live.values()}
            pending_indexes = {r.index for r in pending}
            busy = live_indexes | young | pending_indexes
            got = await ledger.reserve(NS, NAME)
            if got is None:
                assert len(busy) == regions, f"refused while free: busy {sorted(busy)}"
            else:
                assert got.index not in live_indexes and got.index not in pending_indexes
                pending.append(got)
        elif action < 0.75 and pending:
            r = pending.pop(rng.randrange(len(pending)))
            uid += 1
            pod = pod_for(r, f"u{uid}")
            api.pods.append(pod)
            live[f"u{uid}"] = r
            if rng.random() < 0.7:
                assert await ledger.bind(NS, NAME, claim_of(pod)) in (Outcome.BOUND, Outcome.ADOPTED)
        elif live:
            gone = rng.choice(sorted(live))
            pod = next(p for p in api.pods if p["metadata"]["uid"] == gone)
            api.pods.remove(pod)
            del live[gone]
            if with_gc:
                api.gc()
            if rng.random() < 0.5:  # the deletion event reaches us (else: missed)
                await ledger.release(NS, NAME, claim_of(pod))
        indexes = [r.index for r in live.values()] + [r.index for r in pending]
        assert len(indexes) == len(set(indexes)), "two live pods share a region"
    # Quiet: every pod goes, the sweep runs after the TTL: nothing is left.
    api.pods.clear()
    live.clear()
    pending.clear()
    clock.advance(TTL.total_seconds() + 1)
    await ledger.sweep(NS, NAME, NAME)
    assert api.holders() == {}
    # And a full complement of pods gets regions afterwards.
    got = [await ledger.reserve(NS, NAME) for _ in range(regions)]
    assert sorted(r.index for r in got if r is not None) == list(range(regions))
    assert_disjoint(api.regions())


# ------------------------------------------------------------------------------------------------
# Names too long for a label value (RayClusters, hence slices, may have 253 characters)

#: The longest RayCluster name there can be: a DNS subdomain of 253 characters (labels of <= 63).
LONG = ".".join(["ray-" + "x" * 59] * 3 + ["y" * 61])
TWIN = LONG[:-1] + "z"  # the same but for its last character: the same first 63, too


async def test_a_253_character_slice_name_gets_valid_labels_and_names_and_keeps_every_invariant() -> None:
    """The fake API refuses, as kube-apiserver does, a label value over 63 characters and a name
    over 253: the region objects of a 253-character slice (and of a twin sharing its first 252
    characters) are created, listed by their label, bound, released and swept like any other,
    and the two slices never see each other's regions."""
    assert len(LONG) == len(TWIN) == 253
    api, clock, ledger = one_slice(3, name=LONG)
    api.add_slice(3, name=TWIN)
    got = [await ledger.reserve(NS, LONG) for _ in range(2)]
    twin = await ledger.reserve(NS, TWIN)
    assert [r.index for r in got if r is not None] == [0, 1] and twin is not None and twin.index == 0
    labels = {b["spec"]["slice"]: b["metadata"]["labels"][LABEL_SLICE] for b in api.regions_by_name.values()}
    assert labels[LONG] != labels[TWIN]
    assert all(len(v) <= 63 and poolrules.label_value_problem(v) is None for v in labels.values())
    assert all(len(name) <= 253 for _, name in api.regions_by_name)
    assert sorted(api.holders(LONG)) == [0, 1] and sorted(api.holders(TWIN)) == [0]
    # A restarted process finds them by their label (and only them): nothing handed out twice.
    restarted = ledger_on(api, clock)
    third = await restarted.reserve(NS, LONG)
    assert third is not None and third.index == 2
    assert await restarted.reserve(NS, LONG) is None
    pod = pod_for(got[0], "u-long", cluster=LONG)
    api.pods = [pod]
    assert await restarted.bind(NS, LONG, claim_of(pod)) is Outcome.BOUND
    api.pods.clear()
    assert await restarted.release(NS, LONG, claim_of(pod)) is Outcome.RELEASED
    clock.advance(TTL.total_seconds() + 1)
    result = await restarted.sweep(NS, LONG, LONG)  # the other reservations expire; the twin's stays
    assert sorted(result.released) == [1, 2]
    assert api.holders(LONG) == {} and sorted(api.holders(TWIN)) == [0]


def test_the_name_rule_leaves_short_names_alone_and_shortens_long_ones_the_same_way_every_time() -> None:
    assert name_label("raycluster-kuberay") == "raycluster-kuberay"
    assert region_name("raycluster-kuberay", 7) == "raycluster-kuberay-7"  # as earlier operators named it
    assert name_label(LONG) == name_label(LONG) and len(name_label(LONG)) == 63
    assert name_label(LONG).startswith(LONG[:40])
    for index in (0, 9, 10_000):
        name = region_name(LONG, index)
        assert len(name) <= 253 and name.endswith(f"-{index}") and name != region_name(TWIN, index)
    sixty_three = "a" * 63
    assert name_label(sixty_three) == sixty_three and name_label(sixty_three + "b") != sixty_three


def test_a_slice_of_a_253_character_raycluster_carries_a_valid_cluster_label() -> None:
    from gismo_operator.core.allocator import Extent
    from gismo_operator.core.slices import build_slice

    rc = {"metadata": {"name": LONG, "namespace": NS, "uid": "rc-uid"}}
    body = build_slice(rc, "pool-a", Extent(0, 4 * REGION), REGION)
    refuse_invalid_metadata(body["metadata"])  # what the API server checks on create
    assert body["spec"]["rayCluster"] == LONG
    assert body["metadata"]["labels"][LABEL_CLUSTER] == name_label(LONG)
