"""The region ledger: durable assignment of a slice's regions to pods, one GismoRegion object each.

Durability and atomicity: region ``i`` of slice ``s`` is held exactly while the namespaced object
``GismoRegion <s>-<i>`` exists. Reserving is *creating* that object: the API server creates a name
once, so two admissions (two coroutines, two operator processes, a restarted one) can never both
get region ``i``; the loser is told AlreadyExists and tries the next free index. The webhook
answers only after the create succeeded, so a pod never uses a region the API does not record.
Every later change is conditional: a bind patches with the object's resourceVersion, a release
deletes with its uid and resourceVersion as preconditions, so a region rebound meanwhile is never
deleted blindly; a 409 means "re-read and decide again".

Cost per admission, whatever the size of the cluster: one create of a small object and a share of
one GET of the slice (no list is rewritten; concurrent admissions share the GET, see ``_fence``).
The GET is the fence against a slice going away or shrinking under the admission: a slice is let
go (finalizer) or shrunk only after it has been marked (deletionTimestamp; the smaller size) *and*
its regions listed; an admission that sees the mark after its create gives the region back, one
that does not see it was created before the mark, hence before the listing, which then sees it.

Release: once the pod is seen, its GismoRegion is bound to it and owned by it (ownerReference with
the pod's uid, ``blockOwnerDeletion: false``), so Kubernetes' garbage collector deletes it with the
pod, even while the operator is down. The operator also deletes it on the pod's deletion event, and
the sweep catches what both missed (emulators have no garbage collector). A reservation whose pod
never appears is owned by the slice and expires after the reservation TTL.

Never falsely full: when no free index is left, the ledger re-lists the slice's regions and the
cluster's pods and reclaims, on the spot, regions whose pod is gone and reservations older than
``reclaim_grace`` that no pod claims (:meth:`RegionLedger.sweep`), before answering "full".

Memory: per slice, its last body read and a cache of its regions (index -> holder) with the free
indexes (:class:`~gismo_operator.core.freeindex.FreeIndexes`), loaded by one LIST on first use and
rebuilt by every sweep. Only a cache: a stale one costs an AlreadyExists or a 409, never a wrong
answer; a new process starts empty.

Upgrade: slices written by earlier operators carry their assignments in ``spec.regions``. The first
time the ledger reads such a slice it creates a GismoRegion per entry (AlreadyExists: done already)
and then clears the list with a resourceVersion precondition; a crash in between repeats it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from pydantic import ValidationError

from gismo_operator.constants import (
    COMPONENT,
    LABEL_CLUSTER,
    LABEL_MANAGED_BY,
    LABEL_SLICE,
    SLICE_FINALIZER,
)
from gismo_operator.cooperative import chunked
from gismo_operator.core import assignment
from gismo_operator.core.assignment import Outcome, PodClaim, SweepResult
from gismo_operator.core.freeindex import FreeIndexes
from gismo_operator.core.models import (
    API_VERSION,
    REGION_KIND,
    SLICE_KIND,
    GismoRegion,
    GismoRegionSpec,
    GismoSlice,
    RegionAssignment,
    describe_validation_error,
    name_label,
    region_name,
)

logger = logging.getLogger(__name__)

SliceKey = tuple[str, str]  # (namespace, name)


class Conflict(Exception):
    """A resourceVersion/uid precondition failed (HTTP 409)."""


class AlreadyExists(Exception):
    """A create found the name taken (HTTP 409 on POST): someone else holds that region."""


class SliceGone(Exception):
    """The slice does not exist, or is being deleted (no new regions)."""


class TooManyConflicts(Exception):
    """The regions kept changing under us; the caller treats the operation as failed."""


class RegionApi(Protocol):
    """The API calls the ledger makes; :mod:`gismo_operator.ledger.sliceapi` implements them."""

    async def read_slice(self, namespace: str, name: str) -> dict[str, Any] | None:
        """GET the GismoSlice; None when it does not exist."""

    async def write_slice(
        self, namespace: str, name: str, spec: Mapping[str, Any], resource_version: str | None
    ) -> dict[str, Any]:
        """Merge-PATCH ``spec`` with a resourceVersion precondition; raise Conflict / SliceGone."""

    async def write_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str | None
    ) -> dict[str, Any]:
        """Merge-PATCH ``metadata.finalizers`` with a resourceVersion precondition."""

    async def write_slice_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Merge-PATCH the slice's status subresource (counts for kubectl; informational)."""

    async def list_cluster_pods(self, namespace: str, cluster: str) -> list[dict[str, Any]]:
        """LIST the pods of one RayCluster (label ``ray.io/cluster``)."""

    async def list_regions(self, namespace: str, slice_name: str) -> list[dict[str, Any]]:
        """LIST the GismoRegions of one slice (label ``gismo.io/slice``)."""

    async def create_region(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST a GismoRegion; raise AlreadyExists when the name is taken."""

    async def read_region(self, namespace: str, name: str) -> dict[str, Any] | None:
        """GET a GismoRegion; None when it does not exist."""

    async def patch_region(
        self, namespace: str, name: str, patch: Mapping[str, Any], resource_version: str | None
    ) -> dict[str, Any] | None:
        """Merge-PATCH with a resourceVersion precondition; Conflict on 409, None when it is gone."""

    async def delete_region(
        self, namespace: str, name: str, uid: str | None, resource_version: str | None
    ) -> bool:
        """DELETE with uid/resourceVersion preconditions; Conflict on 409; False when already gone."""


@dataclasses.dataclass(frozen=True)
class Held:
    """One GismoRegion as read or written: enough to act on it conditionally."""

    name: str
    uid: str | None
    resource_version: str | None
    slice_uid: str | None
    entry: RegionAssignment
    owner_uid: str | None = None  # the uid in its ownerReferences (the pod's, once bound)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Held:
        region = GismoRegion.model_validate(body)
        owners = region.metadata.owner_references
        return cls(
            name=region.metadata.name or region_name(region.spec.slice, region.spec.index),
            uid=region.metadata.uid,
            resource_version=region.metadata.resource_version,
            slice_uid=region.spec.slice_uid,
            entry=region.assignment(),
            owner_uid=str(owners[0].get("uid")) if owners and owners[0].get("uid") else None,
        )


@dataclasses.dataclass(frozen=True)
class Listing:
    """One slice as the periodic sweep listed it: its body, its GismoRegions (listed after the
    slice; parsed by :meth:`RegionLedger.parse_listed`), and pods listed after those (at least its
    cluster's; others are ignored). ``mark``: :meth:`RegionLedger.sequence` taken before the
    regions were listed."""

    slice: Mapping[str, Any]
    regions: list[Held]
    pods: list[dict[str, Any]]
    mark: int


@dataclasses.dataclass(frozen=True)
class Reservation:
    """A region reserved (and durably recorded) for a pod being admitted."""

    slice: GismoSlice
    entry: RegionAssignment
    held: Held | None = None  # None for a dry-run peek

    @property
    def index(self) -> int:
        return self.entry.index

    @property
    def token(self) -> str:
        assert self.entry.reserved_at is not None
        return assignment.reservation_token(self.entry.reserved_at)

    @property
    def offset(self) -> int:
        """Bytes from the start of the pool."""
        return self.slice.spec.offset + self.entry.index * self.slice.spec.region_size


@dataclasses.dataclass
class _SliceState:
    """The cache of one slice: its body and its regions (index -> holder), with the free set."""

    body: GismoSlice
    held: dict[int, Held]
    free: FreeIndexes
    creating: set[int] = dataclasses.field(default_factory=set)  # creates in flight (held in `free`)
    #: index -> the ledger's sequence number at our create of it (regions a listing may predate).
    created_seq: dict[int, int] = dataclasses.field(default_factory=dict)
    last_reserved: dt.datetime | None = None
    reclaimed_at: dt.datetime | None = None
    reclaim: asyncio.Future[None] | None = None
    fence_next: asyncio.Future[dict[str, Any] | None] | None = None  # the next fence read, not started
    fence_task: asyncio.Task[None] | None = None  # the fence reads in progress

    @property
    def uid(self) -> str | None:
        return self.body.metadata.uid


def parse_slice(body: Mapping[str, Any]) -> GismoSlice:
    """The body as a model; a clear error naming the field when someone hand-edited it badly."""
    try:
        return GismoSlice.model_validate(body)
    except ValidationError as exc:
        meta = body.get("metadata") or {}
        where = f"GismoSlice {meta.get('namespace')}/{meta.get('name')}"
        raise ValueError(f"{where}: {describe_validation_error(exc)}") from exc


def geometry(current: GismoSlice) -> assignment.Geometry:
    """Where the slice's regions lie in the pool (to check what a pod's annotations claim)."""
    return assignment.Geometry(offset=current.spec.offset, region_size=current.spec.region_size)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _slice_owner(current: GismoSlice) -> list[dict[str, Any]]:
    """A reservation is owned by its slice (collected with it); nothing without a uid to name."""
    meta = current.metadata
    if not meta.uid:
        return []
    return [
        {
            "apiVersion": API_VERSION,
            "kind": SLICE_KIND,
            "name": meta.name,
            "uid": meta.uid,
            "blockOwnerDeletion": False,
        }
    ]


def _pod_owner(claim: PodClaim) -> list[dict[str, Any]]:
    """A bound region is owned by its pod: the garbage collector deletes it with the pod."""
    if not claim.name:
        return []
    return [
        {"apiVersion": "v1", "kind": "Pod", "name": claim.name, "uid": claim.uid, "blockOwnerDeletion": False}
    ]


def region_body(
    namespace: str, current: GismoSlice, entry: RegionAssignment, owners: list[dict[str, Any]]
) -> dict[str, Any]:
    """The GismoRegion object recording ``entry`` of slice ``current``."""
    name = current.metadata.name or ""
    assert entry.reserved_at is not None
    spec = GismoRegionSpec(
        slice=name,
        slice_uid=current.metadata.uid,
        index=entry.index,
        state=entry.state,
        reserved_at=entry.reserved_at,
        pod_uid=entry.pod_uid,
        pod_name=entry.pod_name,
        node=entry.node,
    )
    metadata: dict[str, Any] = {
        "name": region_name(name, entry.index),
        "namespace": namespace,
        "labels": {LABEL_SLICE: name_label(name), LABEL_MANAGED_BY: COMPONENT},
    }
    if owners:
        metadata["ownerReferences"] = owners
    return {"apiVersion": API_VERSION, "kind": REGION_KIND, "metadata": metadata, "spec": spec.to_api()}


def _spec_patch(entry: RegionAssignment) -> dict[str, Any]:
    """The merge patch of a region's spec to ``entry`` (null removes what no longer applies)."""
    return {
        "state": entry.state,
        "podUID": entry.pod_uid,
        "podName": entry.pod_name,
        "node": entry.node,
    }


class RegionLedger:
    """Reserves, binds and releases regions as GismoRegion objects; sweeps and migrates slices."""

    def __init__(
        self,
        api: RegionApi,
        *,
        reservation_ttl: dt.timedelta = dt.timedelta(seconds=30),
        reclaim_grace: dt.timedelta = dt.timedelta(seconds=10),
        reclaim_interval: dt.timedelta = dt.timedelta(seconds=1),
        clock: Callable[[], dt.datetime] = utcnow,
        max_attempts: int = 20,
        on_change: Callable[[SliceKey], None] | None = None,
    ) -> None:
        """``reclaim_grace``: how old a reservation no pod claims must be before a full slice takes
        it back (longer than an admission takes from our answer to the pod being stored).
        ``reclaim_interval``: a full slice re-lists at most once per interval (a really full slice
        under a stream of pods would otherwise list at every admission). ``on_change`` is told which
        slice's regions changed (the status counts follow, coalesced)."""
        self.api = api
        self.reservation_ttl = reservation_ttl
        self.reclaim_grace = min(reclaim_grace, reservation_ttl)
        self.reclaim_interval = reclaim_interval
        self.clock = clock
        self.max_attempts = max_attempts
        self.on_change = on_change
        self._states: dict[SliceKey, _SliceState] = {}
        self._loading: dict[SliceKey, asyncio.Lock] = {}
        self._locks: dict[SliceKey, asyncio.Lock] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._fences: set[asyncio.Task[None]] = set()
        self._seq = 0  # counts this process's region creates (see sweep's listing)
        self.creates = 0
        self.already_exists = 0
        self.conflicts = 0

    # ---------------------------------------------------------------------------------------------
    # Cache

    def forget(self, namespace: str, name: str) -> None:
        """Drop the cached slice and regions (the slice was deleted or rewritten elsewhere)."""
        self._states.pop((namespace, name), None)

    def cached(self, namespace: str, name: str) -> GismoSlice | None:
        """The last slice body we read; None when we hold none. Only a hint."""
        state = self._states.get((namespace, name))
        return state.body if state is not None else None

    def counts(self, namespace: str, name: str) -> dict[str, int] | None:
        """Regions in use / bound / reserved as this process knows them; None when not loaded."""
        state = self._states.get((namespace, name))
        if state is None:
            return None
        bound = sum(1 for h in state.held.values() if h.entry.state == "Bound")
        return {
            "regionsTotal": state.body.spec.region_count,
            "regionsInUse": len(state.held),
            "regionsBound": bound,
            "regionsReserved": len(state.held) - bound,
        }

    def _changed(self, key: SliceKey) -> None:
        if self.on_change is not None:
            try:
                self.on_change(key)
            except Exception as exc:  # the counts are informational: never fail a write for them
                logger.warning("on_change hook failed: %s", exc)

    @staticmethod
    def _refresh_body(state: _SliceState, body: GismoSlice) -> None:
        state.body = body
        state.free.resize(body.spec.region_count)

    def _lock(self, key: SliceKey) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def _state(self, key: SliceKey) -> _SliceState:
        """The slice's cache, loaded (one GET, migration if needed, one LIST) on first use; concurrent
        first uses wait for one load (a cancelled load leaves the next caller to load). Raises SliceGone."""
        state = self._states.get(key)
        if state is not None:
            return state
        async with self._loading.setdefault(key, asyncio.Lock()):
            state = self._states.get(key)
            if state is None:
                state = await self._load(key)
            return state

    async def _load(self, key: SliceKey) -> _SliceState:
        current = await self._read_slice(key)
        listed = await self._list_held(key, current)
        state = _SliceState(body=current, held=listed, free=FreeIndexes(current.spec.region_count, listed))
        self._states[key] = state
        return state

    async def _read_slice(self, key: SliceKey) -> GismoSlice:
        """GET the slice (migrating a legacy ``spec.regions`` first); SliceGone when absent."""
        body = await self.api.read_slice(*key)
        if body is None:
            raise SliceGone(f"GismoSlice {key[0]}/{key[1]} does not exist")
        return await self._current_of(key, body)

    async def _current_of(self, key: SliceKey, body: Mapping[str, Any]) -> GismoSlice:
        """The slice read (or listed) as a model, migrated first if it is a legacy one; the cached
        model when the body is the cached version (same resourceVersion)."""
        state = self._states.get(key)
        version = (body.get("metadata") or {}).get("resourceVersion")
        if state is not None and version is not None and version == state.body.metadata.resource_version:
            current = state.body
        else:
            current = parse_slice(body)
        if current.spec.regions:
            current = await self.migrate(key, current)
        return current

    def parse_listed(self, key: SliceKey, body: Mapping[str, Any]) -> Held | None:
        """A listed GismoRegion of slice ``key`` as a :class:`Held`; None when it is another slice's
        (emulators ignore label selectors) or unreadable (logged).

        An object whose name and resourceVersion are those of the cached one is that object
        unchanged (the API server gives every write a new resourceVersion): its cached parse is
        returned, so re-listing 10,000 regions validates only those that changed, and a caller that
        keeps only the result lets the listed body go at once."""
        spec, meta = body.get("spec") or {}, body.get("metadata") or {}
        if spec.get("slice") != key[1]:
            return None
        state = self._states.get(key)
        index = spec.get("index")
        known = state.held.get(index) if state is not None and isinstance(index, int) else None
        if (
            known is not None
            and known.resource_version is not None
            and known.resource_version == meta.get("resourceVersion")
            and known.name == meta.get("name")
        ):
            return known
        try:
            return Held.from_body(body)
        except ValidationError as exc:
            logger.warning("GismoRegion %s/%s ignored: %s", key[0], meta.get("name"), exc)
            return None

    async def _list_held(
        self, key: SliceKey, current: GismoSlice, listed: list[Held] | None = None
    ) -> dict[int, Held]:
        """The slice's regions from one LIST (or ``listed``: parsed by :meth:`parse_listed` from the
        caller's LIST). Regions of an earlier slice of the same name (another sliceUID: their slice
        is gone, so are its pods' claims) are deleted, conditionally."""
        if listed is None:
            listed = []
            async for body in chunked(await self.api.list_regions(*key)):
                item = self.parse_listed(key, body)
                if item is not None:
                    listed.append(item)
        held: dict[int, Held] = {}
        async for item in chunked(listed):
            if item.slice_uid and current.metadata.uid and item.slice_uid != current.metadata.uid:
                with contextlib.suppress(Conflict):
                    await self.api.delete_region(key[0], item.name, item.uid, item.resource_version)
                continue
            held[item.entry.index] = item
        return held

    # ---------------------------------------------------------------------------------------------
    # Admission

    def _next_reserved_at(self, state: _SliceState) -> dt.datetime:
        """Now, or just after this process's last reservation of the slice (tokens stay unique)."""
        now = self.clock()
        last = state.last_reserved
        if last is not None and last >= now:
            now = last + assignment.TICK
        state.last_reserved = now
        return now

    async def reserve(self, namespace: str, name: str) -> Reservation | None:
        """Reserve a free region and record it; None when the slice is full. Raises SliceGone."""
        key = (namespace, name)
        for _ in range(self.max_attempts):
            state = await self._state(key)
            if state.body.metadata.deletion_timestamp:
                raise SliceGone(f"GismoSlice {namespace}/{name} is being deleted")
            index = state.free.take()
            if index is None:
                if not await self._reclaim(key, state):
                    return None
                state = await self._state(key)
                index = state.free.take()
                if index is None:
                    return None
            result = await self._claim(key, state, index)
            if result is not None:
                return result
        raise TooManyConflicts(f"GismoSlice {namespace}/{name}: {self.max_attempts} regions taken in a row")

    async def _claim(self, key: SliceKey, state: _SliceState, index: int) -> Reservation | None:
        """Create region ``index``'s object, then check the slice (the fence); None: try another."""
        namespace, name = key
        entry = RegionAssignment(index=index, state="Reserved", reserved_at=self._next_reserved_at(state))
        body = region_body(namespace, state.body, entry, _slice_owner(state.body))
        state.creating.add(index)
        try:
            created = await self.api.create_region(namespace, body)
        except AlreadyExists:
            self.already_exists += 1
            return None  # held by someone we did not know of: stays held in our set
        except BaseException:
            # Failed, or cancelled (the admission budget): the create may or may not have been
            # applied. Either way the index may be offered again: if it was created, the next
            # create gets AlreadyExists, and the reservation expires (nothing stays held for ever).
            state.free.give(index)
            raise
        finally:
            state.creating.discard(index)
        self.creates += 1
        self._seq += 1
        state.created_seq[index] = self._seq
        meta = created.get("metadata") or {}
        # What we wrote, with the identity the API server gave it (no second parse of our own body).
        held = Held(
            name=str(body["metadata"]["name"]),
            uid=meta.get("uid"),
            resource_version=meta.get("resourceVersion"),
            slice_uid=state.uid,
            entry=entry,
        )
        state.held[index] = held
        try:
            fresh = await self._fence(key, state)
            current = self._parse_fresh(state, fresh)
        except BaseException:
            self._cancel_later(key, held, state)  # unverified: give it back, then fail
            raise
        if current is None or current.metadata.deletion_timestamp:
            self._cancel_later(key, held, state)
            self._states.pop(key, None)
            raise SliceGone(f"GismoSlice {namespace}/{name} does not exist or is being deleted")
        if current.metadata.uid != state.uid or current.spec.offset != state.body.spec.offset:
            self._cancel_later(key, held, state)  # another slice of that name: start over
            self._states.pop(key, None)
            return None
        self._refresh_body(state, current)
        if index >= current.spec.region_count:  # shrunk meanwhile: past the end
            self._cancel_later(key, held, state)
            return None
        self._changed(key)
        return Reservation(slice=current, entry=entry, held=held)

    @staticmethod
    def _parse_fresh(state: _SliceState, fresh: dict[str, Any] | None) -> GismoSlice | None:
        """The fence's read as a model: the cached one when its resourceVersion is unchanged (the
        usual case: a slice changes on resize and deletion only), else a parse."""
        if fresh is None:
            return None
        version = (fresh.get("metadata") or {}).get("resourceVersion")
        if version is not None and version == state.body.metadata.resource_version:
            return state.body
        return parse_slice(fresh)

    async def _fence(self, key: SliceKey, state: _SliceState) -> dict[str, Any] | None:
        """A GET of the slice that *starts after* this call, shared by every admission waiting for
        one: under a burst, one read serves all the creates that finished before it started (at
        most two reads' wait), instead of one read per admission."""
        waiting = state.fence_next
        if waiting is None:
            waiting = state.fence_next = asyncio.get_running_loop().create_future()
        if state.fence_task is None or state.fence_task.done():
            state.fence_task = asyncio.get_running_loop().create_task(self._fence_reads(key, state))
            self._fences.add(state.fence_task)
            state.fence_task.add_done_callback(self._fences.discard)
        return await asyncio.shield(waiting)

    async def _fence_reads(self, key: SliceKey, state: _SliceState) -> None:
        while state.fence_next is not None:
            waiting, state.fence_next = state.fence_next, None
            try:
                body = await self.api.read_slice(*key)
            except asyncio.CancelledError:  # shut down: the waiters are cancelled with it
                waiting.cancel()
                raise
            except BaseException as exc:
                waiting.set_exception(exc)
                waiting.exception()  # retrieved here: every waiter re-raises it
            else:
                waiting.set_result(body)

    async def close(self) -> None:
        """Stop fence reads in progress and wait for background cancellations (shutdown; tests)."""
        for task in list(self._fences):
            task.cancel()
        await asyncio.gather(*list(self._fences), return_exceptions=True)
        await self.drain()

    async def peek(self, namespace: str, name: str) -> Reservation | None:
        """What :meth:`reserve` would hand out, without writing (dry-run admissions)."""
        state = await self._state((namespace, name))
        if state.body.metadata.deletion_timestamp:
            raise SliceGone(f"GismoSlice {namespace}/{name} is being deleted")
        index = state.free.peek()
        if index is None:
            return None
        return Reservation(
            slice=state.body, entry=RegionAssignment(index=index, state="Reserved", reserved_at=self.clock())
        )

    async def cancel(self, namespace: str, name: str, reservation: Reservation) -> None:
        """Undo a reservation the admission could not hand out (deleted with its preconditions)."""
        if reservation.held is None:
            return
        state = self._states.get((namespace, name))
        await self._delete((namespace, name), reservation.held, state)

    def _cancel_later(self, key: SliceKey, held: Held, state: _SliceState | None) -> None:
        """Delete a region we created but cannot hand out, in the background (the admission that
        made it may be cancelled itself); a failure leaves it to expire."""

        async def run() -> None:
            try:
                await self._delete(key, held, state)
            except Exception as exc:
                logger.warning("GismoRegion %s/%s left to expire: %s", key[0], held.name, exc)

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Wait for background cancellations (tests; shutdown)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def _delete(self, key: SliceKey, held: Held, state: _SliceState | None) -> bool:
        """Delete exactly ``held`` (uid + resourceVersion preconditions); True when it was deleted.
        A 409 (changed meanwhile: rebound, or another object of that name) deletes nothing."""
        try:
            deleted = await self.api.delete_region(key[0], held.name, held.uid, held.resource_version)
        except Conflict:
            self.conflicts += 1
            if state is not None:
                state.held.pop(held.entry.index, None)  # unknown now: the next read says
            return False
        if state is not None and state.held.get(held.entry.index) in (held, None):
            state.held.pop(held.entry.index, None)
            if held.entry.index not in state.creating:
                state.free.give(held.entry.index)
        self._changed(key)
        return deleted

    # ---------------------------------------------------------------------------------------------
    # Never falsely full

    async def _reclaim(self, key: SliceKey, state: _SliceState) -> bool:
        """Before "full": re-list and reclaim what is held by nobody (one at a time per slice,
        concurrent callers share it). False when a reclaim ran less than ``reclaim_interval`` ago."""
        if state.reclaim is not None:
            await asyncio.shield(state.reclaim)
            return True
        now = self.clock()
        if state.reclaimed_at is not None and now - state.reclaimed_at < self.reclaim_interval:
            return False
        state.reclaim = asyncio.get_running_loop().create_future()
        try:
            await self.sweep(key[0], key[1], state.body.spec.ray_cluster, ttl=self.reclaim_grace)
        finally:
            state.reclaimed_at = self.clock()
            state.reclaim.set_result(None)
            state.reclaim = None
        return True

    # ---------------------------------------------------------------------------------------------
    # Pod events

    async def _read_held(self, namespace: str, name: str) -> Held | None:
        body = await self.api.read_region(namespace, name)
        return Held.from_body(body) if body is not None else None

    async def bind(self, namespace: str, name: str, claim: PodClaim) -> Outcome:
        """Tie the region a pod claims to its uid/node and make the pod its owner.

        - Reserved with the pod's token, or Bound to its uid: Bound, owned by the pod (UNCHANGED when
          nothing differs, so a watch event that changes nothing writes nothing).
        - No region object at that index (its reservation expired): re-created as Bound (ADOPTED);
          the pod is running with that region and nobody else holds it, so recording it is true.
        - Held by another pod, or the pod's offset is not this slice's region: CONFLICT.
        """
        key = (namespace, name)
        state = await self._state(key)
        current = state.body
        if not 0 <= claim.index < current.spec.region_count or not claim.fits(geometry(current)):
            return Outcome.CONFLICT
        held: Held | None = state.held.get(claim.index)
        fresh = False
        rname = region_name(name, claim.index)
        for _ in range(self.max_attempts):
            if held is None:
                wanted = assignment.bound_entry(None, claim)
                if wanted.reserved_at is None:
                    wanted = wanted.model_copy(update={"reserved_at": self.clock()})
                try:
                    created = await self.api.create_region(
                        namespace, region_body(namespace, current, wanted, _pod_owner(claim))
                    )
                except AlreadyExists:
                    held, fresh = await self._read_held(namespace, rname), True
                    continue
                state.held[claim.index] = (
                    Held.from_body(created)
                    if created.get("spec")
                    else Held(rname, None, None, current.metadata.uid, wanted, claim.uid)
                )
                state.free.hold(claim.index)
                self._changed(key)
                return Outcome.ADOPTED
            if not assignment.is_holder(held.entry, claim):
                if not fresh:
                    held, fresh = await self._read_held(namespace, rname), True
                    continue
                return Outcome.CONFLICT
            wanted = assignment.bound_entry(held.entry, claim)
            owned = held.owner_uid == claim.uid or not claim.name
            if held.entry == wanted and owned:
                return Outcome.UNCHANGED
            patch: dict[str, Any] = {"spec": _spec_patch(wanted)}
            if claim.name:
                patch["metadata"] = {"ownerReferences": _pod_owner(claim)}
            try:
                written = await self.api.patch_region(namespace, rname, patch, held.resource_version)
            except Conflict:
                self.conflicts += 1
                held, fresh = await self._read_held(namespace, rname), True
                continue
            if written is None:  # deleted meanwhile (expired): adopt
                held = None
                continue
            state.held[claim.index] = (
                Held.from_body(written)
                if written.get("spec")
                else dataclasses.replace(held, entry=wanted, owner_uid=claim.uid)
            )
            state.free.hold(claim.index)
            self._changed(key)
            return Outcome.BOUND
        raise TooManyConflicts(f"GismoRegion {namespace}/{rname}: {self.max_attempts} conflicting writes")

    async def release(self, namespace: str, name: str, claim: PodClaim) -> Outcome:
        """Free a deleted pod's region (only if still that pod's: deleted with preconditions).

        Read fresh rather than from the cache: a pod's deletion is when the garbage collector (or
        another process) may have changed the region behind the cache, and one GET per deleted pod
        is cheap next to a 409 and a retry."""
        state = self._states.get((namespace, name))
        rname = region_name(name, claim.index)
        for _ in range(self.max_attempts):
            held = await self._read_held(namespace, rname)
            if held is None or not assignment.released_by(held.entry, claim):
                if held is None and state is not None and claim.index in state.held:
                    state.held.pop(claim.index, None)  # gone by itself (the garbage collector)
                    if claim.index not in state.creating:
                        state.free.give(claim.index)
                return Outcome.NOT_FOUND
            if await self._delete((namespace, name), held, state):
                return Outcome.RELEASED
        raise TooManyConflicts(f"GismoRegion {namespace}/{rname}: {self.max_attempts} conflicting deletes")

    # ---------------------------------------------------------------------------------------------
    # Sweep (periodic, at start, and before a slice is declared full)

    def sequence(self) -> int:
        """A mark to take before listing regions for :class:`Listing` (see :meth:`sweep`)."""
        return self._seq

    async def sweep(
        self,
        namespace: str,
        name: str,
        cluster: str,
        *,
        ttl: dt.timedelta | None = None,
        listing: Listing | None = None,
    ) -> SweepResult:
        """Release regions whose pod is gone or whose reservation expired; bind/adopt listed pods;
        rebuild the slice's cache from what was listed.

        Order matters for safety: the regions are listed first and the pods after (see
        :func:`assignment.sweep`): a Bound region names a pod that existed before the regions were
        listed, so if the later pod list lacks it, the pod is gone. Every change is conditional.

        ``listing``: the slice, its regions and its cluster's pods as the caller listed them (the
        periodic sweep lists every slice's at once, in a few paged LISTs, instead of three requests
        per slice); None: read here. Regions this process created after the listing was taken are
        kept in the cache (the listing cannot know them).
        """
        key = (namespace, name)
        ttl = self.reservation_ttl if ttl is None else ttl
        if listing is None:
            mark = self._seq
            current = await self._read_slice(key)
            listed = await self._list_held(key, current)
            pods = await self.api.list_cluster_pods(namespace, cluster)
        else:
            mark = listing.mark
            current = await self._current_of(key, listing.slice)
            listed = await self._list_held(key, current, listing.regions)
            pods = [
                p
                for p in listing.pods
                if ((p.get("metadata") or {}).get("labels") or {}).get(LABEL_CLUSTER) == cluster
                and (p.get("metadata") or {}).get("namespace") == namespace
            ]
        # Every loop over the slice's entries or pods gives way after ~1 ms of work (admissions of this
        # and other slices are served meanwhile); the cache is only replaced after the last yield.
        claims = [c async for c in chunked(PodClaim.from_pod(p) for p in pods) if c is not None]
        steps = assignment.Sweep(current.spec.region_count, claims, self.clock(), ttl, geometry(current))
        async for held_ in chunked(list(listed.values())):
            steps.keep(held_.entry)
        async for claim in chunked(claims):
            steps.bind(claim)
        result = steps.result()
        # The entries a listed pod changes (bound, adopted), found before the deletes below so
        # that the merge of entries created meanwhile happens after the last yield of this sweep.
        pods_by_index = {c.index: c for c in claims}
        to_bind: list[tuple[int, RegionAssignment]] = []
        async for wanted in chunked(result.regions):
            if wanted.index not in pods_by_index:
                continue
            before = listed.get(wanted.index)
            if before is None or before.entry != wanted:
                to_bind.append((wanted.index, wanted))
        state = self._states.get(key)
        if state is None or state.uid != current.metadata.uid:
            state = _SliceState(body=current, held={}, free=FreeIndexes(current.spec.region_count))
        released: list[int] = []
        for index in result.released:
            gone = listed.pop(index)
            try:
                await self.api.delete_region(namespace, gone.name, gone.uid, gone.resource_version)
            except Conflict:  # changed since listed (bound, or re-created): keep what it is now
                self.conflicts += 1
                now_held = await self._read_held(namespace, gone.name)
                if now_held is not None:
                    listed[index] = now_held
                continue
            released.append(index)
        if state.uid == current.metadata.uid:  # created by us after the listing: still held
            for index, held in state.held.items():
                if index not in listed and state.created_seq.get(index, 0) > mark:
                    listed[index] = held
        state.created_seq = {i: q for i, q in state.created_seq.items() if q > mark}
        for index, wanted in to_bind:
            before = listed.get(index)
            if before is not None and before.entry == wanted:
                continue
            pod = pods_by_index[index]
            state.held = listed  # bind() works on the cache: make it the fresh listing
            state.body = current
            self._states[key] = state
            with contextlib.suppress(Conflict, TooManyConflicts):
                await self.bind(namespace, name, pod)
            listed = state.held
        state.body = current
        state.held = listed
        in_flight = set(state.creating)
        state.free = FreeIndexes(current.spec.region_count, set(listed) | in_flight)
        self._states[key] = state
        if released or result.bound or not self._status_current(key, state):
            self._changed(key)  # else a round over 1,000 idle slices writes no status at all
        return SweepResult(result.regions, tuple(released), result.bound, result.conflicts)

    def _status_current(self, key: SliceKey, state: _SliceState) -> bool:
        """Whether the slice's status (as last read) already shows the counts the cache holds."""
        status = state.body.status
        counts = self.counts(*key)
        if status is None or counts is None:
            return False
        return counts == {
            "regionsTotal": status.regions_total,
            "regionsInUse": status.regions_in_use,
            "regionsBound": status.regions_bound,
            "regionsReserved": status.regions_reserved,
        }

    # ---------------------------------------------------------------------------------------------
    # Slice changes: resize, release, migration

    async def in_use(self, namespace: str, name: str) -> frozenset[int]:
        """The indexes held in the API now (one LIST; for a shrink decision)."""
        current = await self._read_slice((namespace, name))
        return frozenset(await self._list_held((namespace, name), current))

    async def write_spec(
        self, namespace: str, name: str, fn: Callable[[GismoSlice, frozenset[int]], dict[str, Any] | None]
    ) -> GismoSlice:
        """Write other spec fields (a resize): ``fn`` gets the slice read now and the indexes held,
        and returns spec fields or None. A shrink is fenced: written first, then the regions are
        listed again, and if one past the new end was created meanwhile the size is put back."""
        key = (namespace, name)
        async with self._lock(key):
            for _ in range(self.max_attempts):
                current = await self._read_slice(key)
                used = frozenset(await self._list_held(key, current))
                patch = fn(current, used)
                if not patch:
                    return current
                try:
                    written = parse_slice(
                        await self.api.write_slice(namespace, name, patch, current.metadata.resource_version)
                    )
                except Conflict:
                    self.conflicts += 1
                    continue
                if written.spec.size < current.spec.size:
                    late = await self._list_held(key, written)
                    if any(i >= written.spec.region_count for i in late):
                        written = parse_slice(
                            await self.api.write_slice(
                                namespace,
                                name,
                                {"size": current.spec.size},
                                written.metadata.resource_version,
                            )
                        )
                state = self._states.get(key)
                if state is not None and state.uid == written.metadata.uid:
                    self._refresh_body(state, written)
                self._changed(key)
                return written
        raise TooManyConflicts(
            f"GismoSlice {namespace}/{name}: {self.max_attempts} conflicting writes in a row"
        )

    async def finalize_if_idle(self, namespace: str, name: str) -> bool:
        """Let a slice being deleted go once no region is held: remove :data:`SLICE_FINALIZER`.

        The deletionTimestamp is the fence: admissions that see it give their region back, and
        regions created before it are in this listing. True when the slice is gone or let go.
        """
        key = (namespace, name)
        async with self._lock(key):
            for _ in range(self.max_attempts):
                try:
                    current = await self._read_slice(key)
                except SliceGone:
                    return True
                finalizers = list(current.metadata.finalizers)
                if not current.metadata.deletion_timestamp or SLICE_FINALIZER not in finalizers:
                    return False
                if await self._list_held(key, current):
                    return False
                try:
                    with contextlib.suppress(SliceGone):
                        await self.api.write_finalizers(
                            namespace,
                            name,
                            [f for f in finalizers if f != SLICE_FINALIZER],
                            current.metadata.resource_version,
                        )
                except Conflict:
                    self.conflicts += 1
                    continue
                self._states.pop(key, None)
                return True
        raise TooManyConflicts(
            f"GismoSlice {namespace}/{name}: {self.max_attempts} conflicting writes in a row"
        )

    async def migrate(self, key: SliceKey, current: GismoSlice) -> GismoSlice:
        """Move a legacy ``spec.regions`` list into GismoRegion objects, then clear the list.

        Idempotent and crash-safe: objects are created first (AlreadyExists: made by an earlier,
        interrupted run, or the index is taken already, which the list then does not win), and the
        list is cleared with the resourceVersion it was read with; a 409 re-reads and repeats.
        """
        namespace, name = key
        for _ in range(self.max_attempts):
            for entry in current.spec.regions:
                if entry.reserved_at is None:
                    entry = entry.model_copy(update={"reserved_at": self.clock()})
                owners = (
                    _pod_owner(
                        PodClaim(index=entry.index, reservation=None, uid=entry.pod_uid, name=entry.pod_name)
                    )
                    if entry.pod_uid and entry.pod_name
                    else _slice_owner(current)
                )
                with contextlib.suppress(AlreadyExists):
                    await self.api.create_region(namespace, region_body(namespace, current, entry, owners))
            try:
                written = await self.api.write_slice(
                    namespace, name, {"regions": []}, current.metadata.resource_version
                )
            except Conflict:
                self.conflicts += 1
                body = await self.api.read_slice(namespace, name)
                if body is None:
                    raise SliceGone(f"GismoSlice {namespace}/{name} does not exist") from None
                current = parse_slice(body)
                if not current.spec.regions:
                    return current
                continue
            logger.info(
                "GismoSlice %s/%s: %d regions migrated to GismoRegions",
                namespace,
                name,
                len(current.spec.regions),
            )
            return parse_slice(written)
        raise TooManyConflicts(
            f"GismoSlice {namespace}/{name}: {self.max_attempts} conflicting writes in a row"
        )

    async def write_status(self, namespace: str, name: str) -> None:
        """Write the slice's counts (from the cache) to its status, for ``kubectl get gismoslices``."""
        counts = self.counts(namespace, name)
        if counts is not None:
            with contextlib.suppress(SliceGone):
                await self.api.write_slice_status(namespace, name, counts)
