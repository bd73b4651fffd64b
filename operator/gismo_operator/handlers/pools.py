"""GismoPool handlers: status from slices, deletion guard, validating webhook ``validate-gismopool``.

- ``create``/``update``/``resume`` and every GismoSlice event recompute the pool's status from the
  pool (GET) and its slices and write it to the status subresource. The slices are read from the
  index the slice watch keeps (:class:`~gismo_operator.core.poolindex.PoolIndex`: running totals per
  pool, rebuilt by every full listing of the watch), so a refresh costs O(1) in the number of slices
  and never lists them; before the watch's first listing a refresh lists them instead. The status
  is a pure function of that state (:mod:`gismo_operator.core.status`), so a lost event or a restart
  costs nothing but a recompute; a per-pool lock keeps one process from writing an older view last.
  GismoSlices are watched by :func:`watch_slices` (a plain list + watch, not a kopf handler: kopf's
  per-event machinery cost as much as an admission). Slice events do not recompute inline: they
  request a coalesced refresh
  (:class:`~gismo_operator.core.coalesce.Coalescer`, :data:`REFRESH_DELAY` debounce, at most one refresh
  in flight and one pending per pool). Under a burst of admissions every admission changes a
  slice; the status is informational, so it follows a fraction of a second later, and the last
  refresh always starts after the last change, so the figures converge to the exact truth.
- ``delete`` (kopf adds the finalizer ``gismo.io/finalizer``): while slices name the pool, posts a
  Warning Event naming their RayClusters and retries with backoff; the pool goes once they are gone.
- ``validate-gismopool`` (CREATE, UPDATE) refuses what the CRD schema cannot say: capacity not a
  multiple of regionSize, regionSize above capacity, capacity below the end of the last slice,
  a backend change while slices exist. Messages name the field.

Cost: a refresh is a GET and (when a figure changed) a PATCH of the pool. The pool's validating
webhook and its deletion guard still list the slices (rare, and they must see the API's state, not
a watch that may lag); a listed slice is validated again only when its resourceVersion changed
(:func:`list_pool_slices` keeps the last view of each).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from typing import Any

import kopf
from pydantic import ValidationError

from gismo import poolrules
from gismo_operator import kube, metrics
from gismo_operator.constants import REASON_POOL_IN_USE, WEBHOOK_VALIDATE_POOL
from gismo_operator.context import current
from gismo_operator.core import status
from gismo_operator.core.coalesce import Coalescer
from gismo_operator.core.models import (
    GROUP,
    POOL_PLURAL,
    VERSION,
    GismoPoolSpec,
    GismoPoolStatus,
    describe_validation_error,
)
from gismo_operator.core.poolindex import PoolIndex

logger = logging.getLogger(__name__)


#: First retry delay of a blocked deletion (seconds); doubles per retry up to the maximum.
IN_USE_RETRY_DELAY = 5.0
IN_USE_RETRY_MAX = 60.0

#: Debounce of a pool refresh requested by a slice event (seconds): the events of this interval
#: merge into one refresh. The status is informational (the webhook and the reconciler never read
#: it), so a second of lag is invisible, and it saves a GET + PATCH per event (each admission
#: changes its slice's status counts).
REFRESH_DELAY = 1.0


def refresher() -> Coalescer[str]:
    """The context's coalesced pool refresher (made on first use)."""
    ctx = current()
    if ctx.refresher is None:
        ctx.refresher = Coalescer(refresh_pool, delay=REFRESH_DELAY, what="GismoPool status refresh")
    return ctx.refresher


def request_refresh(pool: str) -> None:
    """Ask for pool ``pool``'s status to be recomputed soon (coalesced; never blocks)."""
    refresher().request(pool)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


async def list_pool_slices(pool: str) -> list[status.SliceView]:
    """The slices (all namespaces) whose ``spec.pool`` is ``pool``, read from the API."""
    ctx = current()
    bodies = await ctx.client().list(kube.SLICES)
    ctx.slice_views.trim(bodies)
    return status.slices_of_pool(pool, bodies, view=ctx.slice_views.view)


def _status_patch(new: GismoPoolStatus) -> dict[str, Any]:
    # Every field, None included: in a merge patch a null removes a figure that no longer applies.
    return new.model_dump(mode="json", by_alias=True)


async def refresh_pool(name: str) -> GismoPoolStatus | None:
    """Recompute and write the status of pool ``name``; None when the pool does not exist.

    Safe to call from any handler, any number of times: it reads everything it needs.
    """
    ctx = current()
    async with ctx.status_locks[name]:
        api = ctx.client()
        body = await api.get_or_none(kube.POOLS, name)
        if body is None:
            metrics.forget_pool(name)
            return None
        generation = (body.get("metadata") or {}).get("generation")
        try:
            previous = GismoPoolStatus.model_validate(body.get("status") or {})
        except ValidationError:
            previous = None
        index = ctx.pool_index
        if not index.synced:  # the watch has not listed (yet, or since it failed): list here
            bodies = await ctx.client().list(kube.SLICES)
            ctx.slice_views.trim(bodies)
            index = PoolIndex(view=ctx.slice_views.view)
            index.replace(bodies)
        try:
            spec = GismoPoolSpec.model_validate(body.get("spec") or {})
        except ValidationError as exc:
            message = describe_validation_error(exc, prefix="spec")
            counts = index.counts(name)
            new = status.invalid_pool_status(
                message, counts, generation=generation, now=_now(), previous=previous
            )
        else:
            figures = index.figures(name, spec)
            new = status.pool_status_of(
                spec,
                figures.layout,
                slices=figures.slices,
                regions=figures.regions,
                generation=generation,
                now=_now(),
                previous=previous,
            )
            metrics.set_pool(
                name,
                capacity=new.capacity_bytes or 0,
                allocated=new.allocated_bytes or 0,
                free=new.free_bytes or 0,
                slices=figures.slices,
            )
        if previous is None or _status_patch(previous) != _status_patch(new):
            try:
                await api.patch_status(kube.POOLS, name, _status_patch(new))
            except kube.NotFound:  # deleted meanwhile (its finalizer came off)
                metrics.forget_pool(name)
                return None
        return new


@kopf.on.resume(GROUP, VERSION, POOL_PLURAL)
@kopf.on.create(GROUP, VERSION, POOL_PLURAL)
@kopf.on.update(GROUP, VERSION, POOL_PLURAL)
async def reconcile_pool(name: str, logger: kopf.Logger, **_: Any) -> None:
    """Pool created, changed, or found at start-up: recompute its status."""
    new = await refresh_pool(name)
    if new is not None:
        logger.info(
            f"pool {name}: Ready={new.ready}, {new.free} of {new.capacity} free, {new.slices} slice(s)"
        )


#: Seconds between two watch connections when the previous one ended at once or failed (doubling
#: up to :data:`WATCH_BACKOFF_MAX` while it keeps failing).
WATCH_BACKOFF = 0.5
WATCH_BACKOFF_MAX = 30.0


async def watch_slices() -> None:
    """Request a pool refresh on every GismoSlice change: list, then watch from the list's version.

    Why not ``@kopf.on.event``: kopf processes every watch event through its generic machinery
    (object memory, body and patch wrappers with reference cycles, cause detection, handler
    selection and outcomes), and a slice changes at every admission; that cost competed with the
    admissions themselves. Here an event costs its JSON decoding and a dictionary update.

    Each event updates the context's :class:`PoolIndex` before it requests the refresh, so the
    refresh (which starts later) reads figures that include it. Nothing is missed: a relist (at
    start, after an error, after 410 Gone) rebuilds the index from scratch and refreshes the pools
    known before and after, so the pool of a slice deleted meanwhile is refreshed too.
    """
    index = current().pool_index
    version: str | None = None  # None: list first
    backoff = WATCH_BACKOFF
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        try:
            client = current().client()
            if version is None:
                items, version = await client.list_with_version(kube.SLICES)
                for pool in index.replace(items):
                    request_refresh(pool)
            async for event in client.watch(kube.SLICES, resource_version=version):
                type_, body = event.get("type"), event.get("object") or {}
                if type_ == "ERROR":
                    if body.get("code") == 410:  # too old: list again
                        version = None
                        break
                    raise kube.ApiError(
                        int(body.get("code") or 500),
                        str(body.get("reason")),
                        str(body.get("message")),
                        "WATCH",
                        kube.SLICES.path(),
                    )
                version = str((body.get("metadata") or {}).get("resourceVersion") or version or "")
                if type_ == "BOOKMARK":
                    continue
                for pool in index.apply(type_, body):
                    request_refresh(pool)
            else:
                backoff = WATCH_BACKOFF  # the server ended the stream normally
        except asyncio.CancelledError:
            raise
        except RuntimeError as exc:  # not logged in yet
            logger.debug("GismoSlice watch waits: %s", exc)
        except Exception as exc:
            logger.warning("GismoSlice watch failed (listing again): %s", exc)
            index.synced = False  # refreshes list until the relist rebuilds the index
            version = None
            backoff = min(WATCH_BACKOFF_MAX, backoff * 2)
        if loop.time() - started < WATCH_BACKOFF:  # ended at once (or failed): do not spin
            await asyncio.sleep(backoff)


@kopf.on.startup()
async def start_slice_watch(**_: Any) -> None:
    """Start watching GismoSlices in the background (stopped on cleanup)."""
    ctx = current()
    if ctx.slice_watch is None or ctx.slice_watch.done():
        ctx.slice_watch = asyncio.get_running_loop().create_task(watch_slices())


@kopf.on.cleanup()
async def stop_refreshes(**_: Any) -> None:
    """Stop the slice watch and cancel scheduled pool refreshes (a restarted operator recomputes
    every pool on resume)."""
    ctx = current()
    task, ctx.slice_watch = ctx.slice_watch, None
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    ctx.pool_index.synced = False  # no watch keeps it current any more
    found, ctx.refresher = ctx.refresher, None
    if found is not None:
        await found.close()


@kopf.on.delete(GROUP, VERSION, POOL_PLURAL)
async def guard_pool_deletion(name: str, body: kopf.Body, retry: int, logger: kopf.Logger, **_: Any) -> None:
    """Hold the pool (finalizer) while slices use it; say which RayClusters do, then retry."""
    slices = await list_pool_slices(name)
    if not slices:
        metrics.forget_pool(name)
        logger.info(f"pool {name}: no slices left, releasing it")
        return
    holders = status.holders(slices)
    message = (
        f"GismoPool {name} is used by {len(slices)} slice(s) of RayCluster(s) {', '.join(holders)}; "
        f"it is deleted once they are gone (delete those RayClusters or remove their "
        f"gismo.io/pool annotation)"
    )
    await current().client().post_event(dict(body), "Warning", REASON_POOL_IN_USE, message)
    delay = min(IN_USE_RETRY_MAX, IN_USE_RETRY_DELAY * (2 ** min(retry, 10)))
    raise kopf.TemporaryError(message, delay=delay)


# --------------------------------------------------------------------------------------------------
# Validating webhook


@kopf.on.validate(GROUP, VERSION, POOL_PLURAL, id=WEBHOOK_VALIDATE_POOL, operations=["CREATE", "UPDATE"])
async def validate_pool(body: kopf.Body, **kwargs: Any) -> None:
    """Admission: refuse pools the schema cannot catch; each message names the field."""
    old: kopf.Body | None = kwargs.get("old")
    operation: str | None = kwargs.get("operation")
    with metrics.webhook_timer(WEBHOOK_VALIDATE_POOL):
        if operation == "UPDATE" and old is not None and old.get("spec") == body.get("spec"):
            return  # metadata-only (finalizers, annotations, labels): never block those
        try:
            new_spec = GismoPoolSpec.model_validate(dict(body.get("spec") or {}))
        except ValidationError as exc:
            raise kopf.AdmissionError(describe_validation_error(exc, prefix="spec"), code=422) from None
        # The part of the pool rule that depends on a setting (the folders file backends may use).
        rule = poolrules.path_problems(
            new_spec.backend.type, new_spec.backend.path, current().settings.file_backend_prefixes
        )
        if rule:
            raise kopf.AdmissionError(poolrules.message(rule, prefix="spec."), code=422)
        old_spec: GismoPoolSpec | None = None
        if operation == "UPDATE" and old is not None:
            try:
                old_spec = GismoPoolSpec.model_validate(dict(old.get("spec") or {}))
            except ValidationError:
                old_spec = None  # fixing a broken pool is allowed
        name = (body.get("metadata") or {}).get("name")
        slices: list[status.SliceView] = []
        if name:
            try:
                slices = await list_pool_slices(name)
            except (kube.ApiError, OSError, RuntimeError) as exc:
                raise kopf.AdmissionError(
                    f"cannot check the pool's slices, try again: {exc}", code=503
                ) from None
        problems = status.check_pool_change(new_spec, old_spec, slices)
        if problems:
            raise kopf.AdmissionError("; ".join(problems), code=422)
