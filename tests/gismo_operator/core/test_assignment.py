"""Region assignment: the pure rules (the ledger that applies them is tested in ledger/)."""

from __future__ import annotations

import datetime as dt
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_fakes import REGION, T0, TTL, assert_disjoint

from gismo_operator.core import assignment
from gismo_operator.core.assignment import Outcome, PodClaim
from gismo_operator.core.models import RegionAssignment

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


def test_a_pod_of_an_earlier_slice_at_another_offset_is_not_adopted() -> None:
    from gismo_operator.core.assignment import Geometry

    claim = PodClaim(index=1, reservation=None, uid="old", offset=5 * REGION)
    assert assignment.bind([], 4, claim, Geometry(offset=0, region_size=REGION))[1] is Outcome.CONFLICT
    same = PodClaim(index=1, reservation=None, uid="old", offset=REGION)
    assert assignment.bind([], 4, same, Geometry(offset=0, region_size=REGION))[1] is Outcome.ADOPTED


def test_to_api_with_a_memo_reuses_unchanged_entries_and_says_the_same() -> None:
    regions: list[RegionAssignment] = []
    for _ in range(3):
        regions, _entry = assignment.reserve(regions, 8, T0)
    memo: assignment.DumpMemo = {}
    first = assignment.to_api(regions, memo)
    assert first == assignment.to_api(regions)  # the memo never changes the answer
    regions, _entry = assignment.reserve(regions, 8, T0)
    second = assignment.to_api(regions, memo)
    assert second == assignment.to_api(regions)
    assert all(a is b for a, b in zip(first, second[: len(first)], strict=False))  # reused, not redone
    assert len(memo) == 4
