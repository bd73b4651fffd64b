"""The region ledger: durable assignment of a slice's regions to pods, with group commit.

Durability: an assignment exists only once it is in the API server, in ``GismoSlice.spec.regions``,
written with the resourceVersion the change was computed from (optimistic concurrency). The
webhook answers only after that write succeeded, so a pod never uses a region the API does not
record. A 409 means someone else (another operator replica, a restarted instance, a resize)
wrote first: the slice is re-read and the same operations are re-applied to the newer state.

Serialization and speed: all writes to one slice go through one in-process lock. Callers queue
their operation; whoever holds the lock takes every queued operation and commits them in ONE
write (group commit). Under a burst of N admissions to one slice this costs a handful of writes
instead of N, without ever risking a lost update, and conflicts between our own coroutines cannot
happen. Different slices never wait for each other.

Restart: the only memory here is a cache of the last slice body we read or wrote, used as the
starting point of the next write. A stale cache costs a 409 and a re-read, never a wrong answer;
a new process starts with an empty cache and reads the slice on first use. Every write goes
through :meth:`RegionLedger.retrying`: one retry loop, one rule for the cache on 409.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError

from gismo_operator.constants import SLICE_FINALIZER
from gismo_operator.core import assignment
from gismo_operator.core.assignment import Outcome, PodClaim, Regions, SweepResult
from gismo_operator.core.models import GismoSlice, RegionAssignment, describe_validation_error

logger = logging.getLogger(__name__)

SliceKey = tuple[str, str]  # (namespace, name)
T = TypeVar("T")


class Conflict(Exception):
    """The write's resourceVersion precondition failed (HTTP 409)."""


class SliceGone(Exception):
    """The slice does not exist (HTTP 404)."""


class TooManyConflicts(Exception):
    """The slice kept changing under us; the caller treats the operation as failed."""


class SliceApi(Protocol):
    """The three API calls the ledger needs; :mod:`gismo_operator.ledger.sliceapi` implements them."""

    async def read_slice(self, namespace: str, name: str) -> dict[str, Any] | None:
        """GET the GismoSlice; None when it does not exist."""

    async def write_slice(
        self, namespace: str, name: str, spec: Mapping[str, Any], resource_version: str | None
    ) -> dict[str, Any]:
        """Merge-PATCH ``spec`` with a resourceVersion precondition; raise Conflict / SliceGone."""

    async def list_cluster_pods(self, namespace: str, cluster: str) -> list[dict[str, Any]]:
        """LIST the pods of one RayCluster (label ``ray.io/cluster``), live ones only."""

    async def write_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str | None
    ) -> dict[str, Any]:
        """Merge-PATCH ``metadata.finalizers`` with a resourceVersion precondition."""


#: An operation: given the slice as read, its current list and "now", the new list and a result.
Operation = Callable[[GismoSlice, Regions, dt.datetime], tuple[Regions, Any]]

_TERMINATING = object()


@dataclass
class _SliceQueue:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pending: list[tuple[Operation, asyncio.Future[Any]]] = field(default_factory=list)


@dataclass(frozen=True)
class Reservation:
    """A region reserved (and durably recorded) for a pod being admitted."""

    slice: GismoSlice
    entry: RegionAssignment

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


def parse_slice(body: Mapping[str, Any]) -> GismoSlice:
    """The body as a model; a clear error naming the field when someone hand-edited it badly."""
    try:
        return GismoSlice.model_validate(body)
    except ValidationError as exc:
        meta = body.get("metadata") or {}
        where = f"GismoSlice {meta.get('namespace')}/{meta.get('name')}"
        raise ValueError(f"{where}: {describe_validation_error(exc)}") from exc


def after_write(current: GismoSlice, regions: Regions, written: Mapping[str, Any]) -> GismoSlice:
    """The slice after our conditional write of ``regions``, without re-validating every entry.

    The write carried ``current``'s resourceVersion, so the stored object is ``current`` plus our
    regions; only the new resourceVersion is taken from the answer. Re-parsing the answer costs
    O(regions) validation per write, the largest cost of a busy slice. When the answer disagrees
    on the other spec fields (no precondition was possible: no resourceVersion), it is parsed.
    """
    spec = written.get("spec") or {}
    same = (
        spec.get("offset") == current.spec.offset
        and spec.get("size") == current.spec.size
        and spec.get("regionSize") == current.spec.region_size
        and spec.get("pool") == current.spec.pool
        and len(spec.get("regions") or []) == len(regions)
    )
    if not same:
        return parse_slice(written)
    rv = (written.get("metadata") or {}).get("resourceVersion")
    return current.model_copy(
        update={
            "spec": current.spec.model_copy(update={"regions": list(regions)}),
            "metadata": current.metadata.model_copy(update={"resource_version": rv}),
        }
    )


def geometry(current: GismoSlice) -> assignment.Geometry:
    """Where the slice's regions lie in the pool (to check what a pod's annotations claim)."""
    return assignment.Geometry(offset=current.spec.offset, region_size=current.spec.region_size)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class RegionLedger:
    """Applies assignment operations to slices, durably, one group commit per slice at a time."""

    def __init__(
        self,
        api: SliceApi,
        *,
        reservation_ttl: dt.timedelta = dt.timedelta(seconds=30),
        clock: Callable[[], dt.datetime] = utcnow,
        max_attempts: int = 20,
        on_write: Callable[[GismoSlice], None] | None = None,
    ) -> None:
        """``on_write`` is told every slice body this ledger wrote (already validated, with the
        resourceVersion the API gave it): the pool status reuses it instead of validating again."""
        self.api = api
        self.on_write = on_write
        self.reservation_ttl = reservation_ttl
        self.clock = clock
        self.max_attempts = max_attempts
        self._queues: dict[SliceKey, _SliceQueue] = {}
        self._cache: dict[SliceKey, GismoSlice] = {}
        self._dumped: assignment.DumpMemo = {}  # serialized entries, reused from write to write
        self.writes = 0
        self.conflicts = 0

    # ---------------------------------------------------------------------------------------------
    # Cache

    def forget(self, namespace: str, name: str) -> None:
        """Drop the cached body (the slice was deleted or rewritten elsewhere)."""
        self._cache.pop((namespace, name), None)

    def cached(self, namespace: str, name: str) -> GismoSlice | None:
        """The last slice we read or wrote; None when we hold none. Only a hint."""
        return self._cache.get((namespace, name))

    async def _current(self, key: SliceKey) -> GismoSlice | None:
        """The cached slice, else one GET. Parsed once per read or write, not per operation:
        validating a slice costs O(regions), and a burst of admissions shares one parse."""
        current = self._cache.get(key)
        if current is None:
            body = await self.api.read_slice(*key)
            if body is None:
                return None
            current = self._cache[key] = parse_slice(body)
        return current

    async def retrying(self, key: SliceKey, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt`` until it does not raise :class:`Conflict`, at most ``max_attempts`` times.

        The one retry rule of every ledger write. ``attempt`` reads the slice (:meth:`_current`),
        computes, and writes with the read resourceVersion. The one cache rule: a 409 means the
        cached body is stale, and :class:`SliceGone` means there is none, so both drop it; the next
        attempt (or call) reads the API. No back-off: the writes to one slice are serialized by
        its lock, so a 409 comes from another process, and re-reading at once is the fastest way
        to a write that wins. Raises :class:`TooManyConflicts` when every attempt conflicted.
        """
        for _ in range(self.max_attempts):
            try:
                return await attempt()
            except Conflict:
                self.conflicts += 1
                self._cache.pop(key, None)
            except SliceGone:
                self._cache.pop(key, None)
                raise
        raise TooManyConflicts(
            f"GismoSlice {key[0]}/{key[1]}: {self.max_attempts} conflicting writes in a row"
        )

    def _stored(self, key: SliceKey, written: GismoSlice) -> GismoSlice:
        """Cache what we just wrote (the next write starts from it) and tell ``on_write``."""
        self.writes += 1
        self._cache[key] = written
        self._written(written)
        return written

    def _written(self, written: GismoSlice) -> None:
        if self.on_write is not None:
            try:
                self.on_write(written)
            except Exception as exc:  # only an optimisation: never fail a write for it
                logger.warning("on_write hook failed: %s", exc)

    # ---------------------------------------------------------------------------------------------
    # Group commit

    async def _submit(self, key: SliceKey, op: Operation) -> Any:
        queue = self._queues.setdefault(key, _SliceQueue())
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        queue.pending.append((op, future))
        async with queue.lock:
            if not future.done():
                batch, queue.pending[:] = list(queue.pending), []
                try:
                    results = await self._commit(key, [op for op, _ in batch])
                except BaseException as exc:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                else:
                    for (_, fut), result in zip(batch, results, strict=True):
                        fut.set_result(result)
        return await future

    async def _commit(self, key: SliceKey, ops: list[Operation]) -> list[Any]:
        """Apply ``ops`` in order to the current slice and write once; re-apply on 409."""

        async def attempt() -> list[Any]:
            current = await self._current(key)
            if current is None:
                raise SliceGone(f"GismoSlice {key[0]}/{key[1]} does not exist")
            regions: Regions = list(current.spec.regions)
            now = self.clock()
            results = []
            for op in ops:
                regions, result = op(current, regions, now)
                results.append(result)
            if regions != current.spec.regions:
                spec = {"regions": assignment.to_api(regions, self._dumped)}
                written = await self.api.write_slice(key[0], key[1], spec, current.metadata.resource_version)
                self._stored(key, after_write(current, regions, written))
            return results

        return await self.retrying(key, attempt)

    # ---------------------------------------------------------------------------------------------
    # Operations

    async def reserve(self, namespace: str, name: str) -> Reservation | None:
        """Reserve a free region and record it; None when the slice is full. Raises SliceGone."""

        def op(current: GismoSlice, regions: Regions, now: dt.datetime) -> tuple[Regions, Any]:
            if current.metadata.deletion_timestamp:  # its cluster is going: no new regions
                return regions, _TERMINATING
            return assignment.reserve(regions, current.spec.region_count, now)

        key = (namespace, name)
        entry = await self._submit(key, op)
        if entry is _TERMINATING:
            raise SliceGone(f"GismoSlice {namespace}/{name} is being deleted")
        if entry is None:
            return None
        current = self._cache.get(key) or await self._current(key)
        if current is None:
            raise SliceGone(f"GismoSlice {namespace}/{name} does not exist")
        return Reservation(slice=current, entry=entry)

    async def peek(self, namespace: str, name: str) -> Reservation | None:
        """What :meth:`reserve` would hand out, without writing (dry-run admissions)."""
        key = (namespace, name)
        current = await self._current(key)
        if current is None or current.metadata.deletion_timestamp:
            raise SliceGone(f"GismoSlice {namespace}/{name} does not exist or is being deleted")
        _, entry = assignment.reserve(current.spec.regions, current.spec.region_count, self.clock())
        return None if entry is None else Reservation(slice=current, entry=entry)

    async def cancel(self, namespace: str, name: str, reservation: Reservation) -> None:
        """Undo a reservation the admission could not hand out."""
        reserved_at = reservation.entry.reserved_at
        assert reserved_at is not None

        def op(current: GismoSlice, regions: Regions, now: dt.datetime) -> tuple[Regions, None]:
            return assignment.release_reservation(regions, reservation.index, reserved_at), None

        await self._submit((namespace, name), op)

    async def bind(self, namespace: str, name: str, claim: PodClaim) -> Outcome:
        """Tie a pod's entry to its uid/node (see :func:`assignment.bind`)."""

        def op(current: GismoSlice, regions: Regions, now: dt.datetime) -> tuple[Regions, Outcome]:
            return assignment.bind(regions, current.spec.region_count, claim, geometry(current))

        result: Outcome = await self._submit((namespace, name), op)
        return result

    async def release(self, namespace: str, name: str, claim: PodClaim) -> Outcome:
        """Free a deleted pod's region (only if still that pod's)."""

        def op(current: GismoSlice, regions: Regions, now: dt.datetime) -> tuple[Regions, Outcome]:
            return assignment.release(regions, claim)

        result: Outcome = await self._submit((namespace, name), op)
        return result

    async def sweep(self, namespace: str, name: str, cluster: str) -> SweepResult:
        """Release entries whose pod is gone or whose reservation expired; bind/adopt listed pods.

        Order matters for safety: the slice is read first and the pods listed after, in every
        attempt (see :func:`assignment.sweep`); the write is conditional on the slice read.
        """
        key = (namespace, name)

        async def attempt() -> SweepResult:
            self._cache.pop(key, None)  # a sweep always starts from the API, not the cache
            current = await self._current(key)
            if current is None:
                raise SliceGone(f"GismoSlice {namespace}/{name} does not exist")
            pods = await self.api.list_cluster_pods(namespace, cluster)
            claims = [c for c in (PodClaim.from_pod(p) for p in pods) if c is not None]
            result = assignment.sweep(
                current.spec.regions,
                current.spec.region_count,
                claims,
                self.clock(),
                self.reservation_ttl,
                geometry(current),
            )
            if result.regions != current.spec.regions:
                written = await self.api.write_slice(
                    namespace,
                    name,
                    {"regions": assignment.to_api(result.regions, self._dumped)},
                    current.metadata.resource_version,
                )
                self._stored(key, parse_slice(written))
            return result

        async with self._queues.setdefault(key, _SliceQueue()).lock:
            return await self.retrying(key, attempt)

    async def write_spec(
        self, namespace: str, name: str, fn: Callable[[GismoSlice], dict[str, Any] | None]
    ) -> GismoSlice:
        """Write other spec fields (a resize) under the same lock; ``fn`` returns spec fields or None."""
        key = (namespace, name)

        async def attempt() -> GismoSlice:
            current = await self._current(key)
            if current is None:
                raise SliceGone(f"GismoSlice {namespace}/{name} does not exist")
            patch = fn(current)
            if not patch:
                return current
            written = await self.api.write_slice(namespace, name, patch, current.metadata.resource_version)
            return self._stored(key, parse_slice(written))

        async with self._queues.setdefault(key, _SliceQueue()).lock:
            return await self.retrying(key, attempt)

    async def finalize_if_idle(self, namespace: str, name: str) -> bool:
        """Let a slice being deleted go once no region is held: remove :data:`SLICE_FINALIZER`.

        Read fresh and written with the read's resourceVersion: a region recorded meanwhile makes
        the write fail (409) and the next call look again. True when the slice is gone or let go.
        """
        key = (namespace, name)

        async def attempt() -> bool:
            self._cache.pop(key, None)
            current = await self._current(key)
            if current is None:
                return True
            finalizers = list(current.metadata.finalizers)
            if not current.metadata.deletion_timestamp or SLICE_FINALIZER not in finalizers:
                return False
            if current.spec.regions:
                return False
            with contextlib.suppress(SliceGone):  # gone already: what we wanted
                await self.api.write_finalizers(
                    namespace,
                    name,
                    [f for f in finalizers if f != SLICE_FINALIZER],
                    current.metadata.resource_version,
                )
            self._cache.pop(key, None)
            return True

        async with self._queues.setdefault(key, _SliceQueue()).lock:
            return await self.retrying(key, attempt)
