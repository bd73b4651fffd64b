"""Pure rules for a slice's durable region assignments (one GismoRegion object per region held).

Every function takes the current assignments (the slice's GismoRegions, read as
:class:`RegionAssignment` entries) and returns new ones plus an outcome; none does I/O. The ledger
(:mod:`gismo_operator.ledger.regions`) applies them to what it just read and writes each change
as a create (AlreadyExists: someone was first) or a patch/delete with a resourceVersion/uid
precondition, so a retry after a 409 re-applies them to the newer state.

Identity: a pod has neither a name nor a uid at admission (generateName; the API server fills both
later), so a reservation is identified by its ``reservedAt`` timestamp, unique within the slice and
also written on the pod as the ``gismo.io/reservation`` annotation. Once the pod is seen, the
entry is ``Bound`` to its uid and the uid is the identity.

Cost: :func:`is_holder` and :func:`bound_entry` are O(1) (what an admission and a pod event use);
:func:`sweep` is linear in the slice's assignments and pods (the periodic sweep, and a full slice's
reclaim).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gismo.contract import ANN_REGION, ANN_REGION_OFFSET, ANN_RESERVATION
from gismo_operator.core.allocator import free_region
from gismo_operator.core.models import RegionAssignment

Regions = list[RegionAssignment]

#: Smallest step between two reservations of one slice, so reservedAt stays unique.
TICK = dt.timedelta(microseconds=1)


def reservation_token(reserved_at: dt.datetime) -> str:
    """The pod annotation value for a reservation: reservedAt, ISO 8601 with microseconds, UTC."""
    return reserved_at.astimezone(dt.UTC).isoformat(timespec="microseconds")


def parse_token(value: str | None) -> dt.datetime | None:
    """The reservedAt a pod annotation names, or None when absent or unreadable (never raises)."""
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _same_instant(a: dt.datetime | None, b: dt.datetime | None) -> bool:
    if a is None or b is None:
        return False
    a = a if a.tzinfo else a.replace(tzinfo=dt.UTC)
    b = b if b.tzinfo else b.replace(tzinfo=dt.UTC)
    return a == b


@dataclass(frozen=True)
class Geometry:
    """Where a slice lies in its pool: region ``i`` starts at ``offset + i * region_size``."""

    offset: int
    region_size: int


@dataclass(frozen=True)
class PodClaim:
    """What a pod says about its region: from its annotations, uid, name and node."""

    index: int
    reservation: dt.datetime | None
    uid: str
    name: str | None = None
    node: str | None = None
    offset: int | None = None  # gismo.io/region-offset: bytes from the start of the pool

    def fits(self, geometry: Geometry | None) -> bool:
        """Whether the pod's region is this slice's region ``index`` (and not one of an earlier slice
        of the same name at another offset). Unknown offset or geometry: assumed to fit."""
        if geometry is None or self.offset is None:
            return True
        return self.offset == geometry.offset + self.index * geometry.region_size

    @classmethod
    def from_pod(cls, pod: Mapping[str, Any]) -> PodClaim | None:
        """The claim of an injected pod; None for a pod without a readable region annotation or uid."""
        meta = pod.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        uid = meta.get("uid")
        try:
            index = int(annotations.get(ANN_REGION, ""))
        except ValueError:
            return None
        if not uid or index < 0:
            return None
        try:
            offset: int | None = int(annotations.get(ANN_REGION_OFFSET, ""))
        except ValueError:
            offset = None
        return cls(
            index=index,
            reservation=parse_token(annotations.get(ANN_RESERVATION)),
            uid=str(uid),
            name=meta.get("name"),
            node=(pod.get("spec") or {}).get("nodeName"),
            offset=offset,
        )


class Outcome(StrEnum):
    """What an operation did to the list."""

    RESERVED = "Reserved"
    FULL = "Full"
    BOUND = "Bound"
    UNCHANGED = "Unchanged"
    ADOPTED = "Adopted"
    CONFLICT = "Conflict"
    RELEASED = "Released"
    NOT_FOUND = "NotFound"


def _by_index(regions: Iterable[RegionAssignment]) -> dict[int, RegionAssignment]:
    return {r.index: r for r in regions}


def _sorted(regions: Iterable[RegionAssignment]) -> Regions:
    return sorted(regions, key=lambda r: r.index)


def next_reserved_at(regions: Sequence[RegionAssignment], now: dt.datetime) -> dt.datetime:
    """``now``, or just after the newest reservedAt in the slice, so tokens are unique and ordered."""
    newest = max((r.reserved_at for r in regions if r.reserved_at is not None), default=None)
    if newest is not None:
        newest = newest if newest.tzinfo else newest.replace(tzinfo=dt.UTC)
        if newest >= now:
            return newest + TICK
    return now


def reserve(
    regions: Sequence[RegionAssignment], region_count: int, now: dt.datetime
) -> tuple[Regions, RegionAssignment | None]:
    """Reserve the lowest free region: the new list and the new entry, or the list and None when full."""
    index = free_region(region_count, (r.index for r in regions))
    if index is None:
        return list(regions), None
    entry = RegionAssignment(index=index, state="Reserved", reserved_at=next_reserved_at(regions, now))
    return _sorted([*regions, entry]), entry


def is_holder(entry: RegionAssignment, claim: PodClaim) -> bool:
    """Whether ``entry`` is the pod's: bound to its uid, or (not bound yet) reserved with its token."""
    if entry.pod_uid:
        return entry.pod_uid == claim.uid
    return entry.state == "Reserved" and _same_instant(entry.reserved_at, claim.reservation)


def released_by(entry: RegionAssignment, claim: PodClaim) -> bool:
    """Whether the gone pod's deletion frees ``entry``: bound to its uid, or (not bound: its event was
    missed) recorded with its reservation token."""
    if entry.pod_uid:
        return entry.pod_uid == claim.uid
    return _same_instant(entry.reserved_at, claim.reservation)


def bound_entry(entry: RegionAssignment | None, claim: PodClaim) -> RegionAssignment:
    """The entry once bound to the pod: its uid, name, and node (the recorded node while the pod's
    event does not say: not scheduled yet); the reservation time of the entry (else the pod's)."""
    node = claim.node if claim.node or entry is None else entry.node
    return RegionAssignment(
        index=claim.index,
        state="Bound",
        pod_uid=claim.uid,
        pod_name=claim.name,
        node=node,
        reserved_at=entry.reserved_at if entry is not None else claim.reservation,
    )


def bind(
    regions: Sequence[RegionAssignment], region_count: int, claim: PodClaim, geometry: Geometry | None = None
) -> tuple[Regions, Outcome]:
    """Tie the entry a pod claims to its uid (and node once scheduled).

    - Reserved with the pod's token, or Bound to its uid: Bound with uid/name/node (UNCHANGED when
      nothing differs, so a watch event that changes nothing writes nothing).
    - No entry at that index (its reservation expired or was swept): re-recorded as Bound (ADOPTED);
      the pod is running with that region, nobody else holds it, so recording it is what is true.
    - Held by another pod or reservation, or the pod's region offset is not this slice's region
      (a pod of an earlier slice of the same name): CONFLICT, nothing written; the caller reports it.
    """
    current = _by_index(regions)
    outcome = _bind_into(current, region_count, claim, geometry)
    if outcome in (Outcome.CONFLICT, Outcome.UNCHANGED):
        return list(regions), outcome
    return _sorted(current.values()), outcome


def _bind_into(
    current: dict[int, RegionAssignment], region_count: int, claim: PodClaim, geometry: Geometry | None
) -> Outcome:
    """:func:`bind` on a dict by index, changed in place: O(1), so a sweep binding every pod of a
    10,000-pod cluster stays linear."""
    if not 0 <= claim.index < region_count or not claim.fits(geometry):
        return Outcome.CONFLICT
    entry = current.get(claim.index)
    wanted = bound_entry(entry, claim)
    if entry is None:
        current[claim.index] = wanted
        return Outcome.ADOPTED
    if not is_holder(entry, claim):
        return Outcome.CONFLICT
    if entry == wanted:
        return Outcome.UNCHANGED
    current[claim.index] = wanted
    return Outcome.BOUND


def release(regions: Sequence[RegionAssignment], claim: PodClaim) -> tuple[Regions, Outcome]:
    """Free the region a gone pod held, only if the entry is still that pod's (uid or token)."""
    entry = _by_index(regions).get(claim.index)
    if entry is None or not released_by(entry, claim):
        return list(regions), Outcome.NOT_FOUND
    return [r for r in regions if r.index != claim.index], Outcome.RELEASED


def release_reservation(regions: Sequence[RegionAssignment], index: int, reserved_at: dt.datetime) -> Regions:
    """Undo a reservation that was never handed out (e.g. the admission could not use it)."""
    return [
        r
        for r in regions
        if not (r.index == index and r.state == "Reserved" and _same_instant(r.reserved_at, reserved_at))
    ]


@dataclass(frozen=True)
class SweepResult:
    """What a sweep changed, for logs, Events and metrics."""

    regions: Regions
    released: tuple[int, ...]
    bound: tuple[int, ...]
    conflicts: tuple[PodClaim, ...]


class Sweep:
    """:func:`sweep` one step at a time, so a caller can yield to its event loop between steps (a
    10,000-region slice is 10,000 steps): :meth:`keep` each entry, then :meth:`bind` each pod, then
    :meth:`result`. Pure, like :func:`sweep`; the same rules and the same listing order apply."""

    def __init__(
        self,
        region_count: int,
        live_pods: Iterable[PodClaim],
        now: dt.datetime,
        ttl: dt.timedelta,
        geometry: Geometry | None = None,
    ) -> None:
        self.claims = list(live_pods)
        self._region_count, self._now, self._ttl, self._geometry = region_count, now, ttl, geometry
        self._live_uids = {c.uid for c in self.claims}
        self._claims_by_index: dict[int, list[PodClaim]] = {}
        for c in self.claims:
            self._claims_by_index.setdefault(c.index, []).append(c)
        self._kept: dict[int, RegionAssignment] = {}
        self._released: list[int] = []
        self._bound: list[int] = []
        self._conflicts: list[PodClaim] = []

    def keep(self, entry: RegionAssignment) -> None:
        """Keep or release one listed entry (every entry before the first :meth:`bind`)."""
        if entry.pod_uid:
            if entry.pod_uid in self._live_uids:
                self._kept[entry.index] = entry
            else:
                self._released.append(entry.index)
            return
        claimed = any(
            _same_instant(c.reservation, entry.reserved_at)
            for c in self._claims_by_index.get(entry.index, ())
        )
        reserved_at = entry.reserved_at
        if reserved_at is not None and reserved_at.tzinfo is None:
            reserved_at = reserved_at.replace(tzinfo=dt.UTC)
        # An entry without a timestamp (hand-written) cannot age: unless claimed, it is expired.
        fresh = reserved_at is not None and self._now - reserved_at <= self._ttl
        if claimed or fresh:
            self._kept[entry.index] = entry
        else:
            self._released.append(entry.index)

    def bind(self, claim: PodClaim) -> None:
        """Bind or adopt one listed pod's entry (after every :meth:`keep`)."""
        outcome = _bind_into(self._kept, self._region_count, claim, self._geometry)
        if outcome in (Outcome.BOUND, Outcome.ADOPTED):
            self._bound.append(claim.index)
        elif outcome is Outcome.CONFLICT:
            self._conflicts.append(claim)

    def kept(self) -> dict[int, RegionAssignment]:
        """The entries as they stand, by index (not sorted: :meth:`result` sorts)."""
        return self._kept

    def result(self) -> SweepResult:
        return SweepResult(
            _sorted(self._kept.values()), tuple(self._released), tuple(self._bound), tuple(self._conflicts)
        )


def sweep(
    regions: Sequence[RegionAssignment],
    region_count: int,
    live_pods: Iterable[PodClaim],
    now: dt.datetime,
    ttl: dt.timedelta,
    geometry: Geometry | None = None,
) -> SweepResult:
    """Reconcile the assignments with the pods that exist.

    ``live_pods`` must be listed *after* ``regions`` was read: then every Bound entry names a pod
    that already existed at listing time, so a Bound entry whose uid is not listed belongs to a
    deleted pod and is released. A Reserved entry claimed by a listed pod is bound; one older than
    ``ttl`` that no pod claims never became a pod and is released. Listed pods whose entry is
    missing are adopted (see :func:`bind`). (:class:`Sweep` does the same step by step.)
    """
    steps = Sweep(region_count, live_pods, now, ttl, geometry)
    for entry in regions:
        steps.keep(entry)
    for claim in steps.claims:
        steps.bind(claim)
    return steps.result()


#: A memo for :func:`to_api`: entry id -> (the entry, its serialization). Each region ledger keeps
#: its own (no process-wide state); holding the entry keeps its id from being reused.
DumpMemo = dict[int, tuple[RegionAssignment, dict[str, Any]]]


def to_api(regions: Iterable[RegionAssignment], memo: DumpMemo | None = None) -> list[dict[str, Any]]:
    """The list as written into ``spec.regions`` (camelCase, no nulls).

    Every write of a slice sends every entry, but entries are immutable and mostly the same from
    one write to the next: with a ``memo``, each entry's serialization is kept (keyed by identity,
    holding the entry so the key cannot be reused) and the memo is trimmed to the entries just
    written. Cost: O(entries) dictionary lookups plus serialization of the new entries only.
    """
    if memo is None:
        memo = {}
    result: list[dict[str, Any]] = []
    for entry in _sorted(regions):
        hit = memo.get(id(entry))
        if hit is None or hit[0] is not entry:
            hit = memo[id(entry)] = (entry, entry.to_api())
        result.append(hit[1])
    if len(memo) > 4 * len(result) + 4096:
        live = {id(r) for r in regions}
        for key in [k for k in memo if k not in live]:
            del memo[key]
    return result
