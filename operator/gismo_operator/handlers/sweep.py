"""The periodic sweep: the safety net under the event handlers.

At start (the first round runs at once, so what vanished while the operator was down is released
then, not an interval later; retried every second until it succeeds) and then every
``SWEEP_INTERVAL`` seconds (default 25, start to start) it:

1. releases slices whose RayCluster is gone, was replaced (other uid) or opted out — Kubernetes'
   garbage collector does the first on a real cluster; this covers events missed while down;
2. sweeps each slice's regions (:meth:`RegionLedger.sweep`): a region whose pod is gone is
   released, a reservation that never became a pod expires after ``RESERVATION_TTL`` (default 30;
   TTL + interval ≤ 60 s is enforced by the settings: MAX_RESERVATION_LIFETIME), pods whose
   entry is Reserved get bound;
3. reports Ray pods of opted-in clusters that run without the agent
   (:mod:`gismo_operator.handlers.notinjected`; also once at start-up);
4. re-reconciles every opted-in RayCluster (a pool that was full may have room now) but those
   settled at their present generation, annotations and pool generation whose slice is listed.

It runs as a plain asyncio task started by a startup handler rather than a kopf timer, because
kopf timers put a finalizer on the objects they run for. Everything it does is idempotent and
conditional (resourceVersion), so running it next to the event handlers, or in two operator
replicas, is safe. Cost per round: one LIST of slices, then one of RayClusters (used both to
find each slice's cluster and to re-reconcile), then one of every GismoRegion and one of every Ray
pod (all paged), and a write only where something changed: a few requests per round whatever the
number of slices (plus the re-reconcile's reads, for clusters not settled). The first round also migrates
slices of earlier operators (``spec.regions``) into GismoRegions.

API calls: LIST gismoslices, rayclusters, gismoregions and pods (all namespaces), GET/PATCH/DELETE
gismoslices (metadata.finalizers; the legacy spec.regions), LIST/GET/POST/PATCH/DELETE
gismoregions, POST events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import kopf

from gismo.contract import ANN_POOL
from gismo_operator import kube, metrics
from gismo_operator.constants import LABEL_CLUSTER, LABEL_IS_RAY_NODE, REASON_REGION_CONFLICT
from gismo_operator.context import current, raycluster_ref
from gismo_operator.cooperative import chunked, pause
from gismo_operator.core.slices import owned_by
from gismo_operator.handlers import notinjected, rayclusters
from gismo_operator.ledger.regions import Held, Listing, SliceGone, TooManyConflicts

logger = logging.getLogger(__name__)

#: Seconds between attempts of the start-up round while it fails (before the first login, say).
FIRST_ROUND_RETRY = 1.0
#: What a round keeps of a listed RayCluster's metadata (matching slices, Events, settlement).
RAYCLUSTER_METADATA = ("namespace", "name", "uid", "generation", "annotations")
#: Objects per page of the round's LISTs, ~100 KiB of JSON each: a page decodes in about a
#: millisecond, one step an admission may wait behind. GismoSlices and GismoRegions are ~1 KiB
#: (10,000 regions: 100 requests a round), RayClusters and Ray pods ~5-10 KiB.
LIST_PAGE = 100
LIST_PAGE_LARGE = 20


@dataclass
class SweepReport:
    """What one round did (for logs and tests)."""

    slices_released: list[str] = field(default_factory=list)
    regions_released: int = 0
    regions_bound: int = 0
    pods_not_injected: int = 0
    errors: list[str] = field(default_factory=list)


async def sweep_once() -> SweepReport:
    """One round of the sweep over every GismoSlice and opted-in RayCluster."""
    report = SweepReport()
    client = current().client()
    # Slices first, RayClusters second: a slice's RayCluster existed before the slice was made, so
    # it is in the later list unless it was deleted meanwhile (then releasing is right). The other
    # order could miss a cluster made between the two lists and release its brand-new slice.
    slices = await client.list(kube.SLICES, page_size=LIST_PAGE)
    listed_slices = {
        ((b.get("metadata") or {}).get("namespace"), (b.get("metadata") or {}).get("name")): b for b in slices
    }
    # Of each RayCluster only its metadata is kept, and the whole body only of a cluster the round
    # reconciles (step 4): a RayCluster is ~5 KiB of JSON, and 1,000 of them held for a round were
    # the bulk of what the garbage collector scanned while the round ran.
    rayclusters_listed: list[dict[str, Any]] = []
    to_reconcile: list[dict[str, Any]] = []
    async for page in client.pages(kube.RAYCLUSTERS, page_size=LIST_PAGE_LARGE):
        async for listed_rc in chunked(page):
            rc_meta = listed_rc.get("metadata") or {}
            rayclusters_listed.append({"metadata": {k: rc_meta.get(k) for k in RAYCLUSTER_METADATA}})
            if (rc_meta.get("annotations") or {}).get(ANN_POOL) and not rayclusters.settled_with(
                listed_rc, listed_slices
            ):
                to_reconcile.append(listed_rc)
    # Then every slice's regions and every Ray pod, each in one paged LIST (regions before pods:
    # see RegionLedger.sweep), rather than a GET and two LISTs per slice: a round costs a few
    # requests whatever the number of slices, and decoding happens a page at a time. Every loop
    # over regions or pods gives way to admissions about every millisecond (:mod:`cooperative`):
    # they are served in between instead of waiting for a round over 10,000 regions.
    ledger = current().ledger
    mark = ledger.sequence()
    # Each page is reduced to what the round uses before the next is read (a parsed Held per region,
    # reused from the ledger's cache when unchanged; a pod's metadata, node, phase and container
    # names, :func:`pod_essentials`): the round never holds 10,000 full objects, which the garbage
    # collector would scan again and again.
    regions_by_slice: dict[tuple[str, str], list[Held]] = {}
    async for page in client.pages(kube.REGIONS, page_size=LIST_PAGE):
        async for region in chunked(page):
            slice_name = str((region.get("spec") or {}).get("slice") or "")
            key = (str((region.get("metadata") or {}).get("namespace") or ""), slice_name)
            held = ledger.parse_listed(key, region)
            if held is not None:
                regions_by_slice.setdefault(key, []).append(held)
    ray_pods: list[dict[str, Any]] = []
    pods_by_cluster: dict[tuple[str, str], list[dict[str, Any]]] = {}
    async for page in client.pages(
        kube.PODS, label_selector=f"{LABEL_IS_RAY_NODE}=yes", page_size=LIST_PAGE_LARGE
    ):
        async for full in chunked(page):
            pod = pod_essentials(full)
            ray_pods.append(pod)
            pod_meta = pod["metadata"]
            cluster_of = str((pod_meta.get("labels") or {}).get(LABEL_CLUSTER) or "")
            pods_by_cluster.setdefault((str(pod_meta.get("namespace") or ""), cluster_of), []).append(pod)
    by_name = {
        ((rc.get("metadata") or {}).get("namespace"), (rc.get("metadata") or {}).get("name")): rc
        for rc in rayclusters_listed
    }
    for body in slices:
        meta, spec = body.get("metadata") or {}, body.get("spec") or {}
        namespace, name = meta.get("namespace") or "", meta.get("name") or ""
        cluster = spec.get("rayCluster") or name
        try:
            rc = by_name.get((namespace, cluster))
            rc_meta = (rc or {}).get("metadata") or {}
            if rc is None or not owned_by(body, rc_meta.get("uid")):
                why = "its RayCluster no longer exists"
            elif not (rc_meta.get("annotations") or {}).get(ANN_POOL):
                why = "the gismo.io/pool annotation was removed"
            else:
                why = ""
            # Regions first: a slice being released waits for its pods (finalizer), and the sweep
            # is what frees the regions of pods whose deletion event was missed.
            listing = Listing(
                slice=body,
                regions=regions_by_slice.get((namespace, name), []),
                pods=pods_by_cluster.get((namespace, cluster), []),
                mark=mark,
            )
            result = await ledger.sweep(namespace, name, cluster, listing=listing)
            report.regions_released += len(result.released)
            report.regions_bound += len(result.bound)
            for _ in result.released:
                metrics.count_release("region")
            for claim in result.conflicts:
                current().warn_once(
                    raycluster_ref(namespace, cluster),
                    REASON_REGION_CONFLICT,
                    f"pod {claim.name} uses region {claim.index} of GismoSlice {namespace}/{name}, which is "
                    "recorded for another pod; delete the pod so it is recreated with a free region",
                )
            released = (why or meta.get("deletionTimestamp")) and await rayclusters.release_slice(
                namespace, name, None, why=why or "released"
            )
            if released:
                report.slices_released.append(f"{namespace}/{name}")
        except (SliceGone, TooManyConflicts, kube.ApiError, ValueError) as exc:
            report.errors.append(f"{namespace}/{name}: {exc}")
            logger.warning("sweep of GismoSlice %s/%s: %s", namespace, name, exc)
        await pause()  # admissions are served between two slices, not after all of them
    try:  # what failurePolicy Ignore let through: Ray pods the webhook never handled
        report.pods_not_injected = await notinjected.report_round(slices, rayclusters_listed, ray_pods)
    except kube.ApiError as exc:
        report.errors.append(f"pods without Gismo: {exc}")
    # Clusters that settled at what they are now, with their slice in the listing, are skipped
    # (:func:`rayclusters.settled_with`): a GET and a shape check saved per cluster.
    for rc in to_reconcile:
        try:
            await rayclusters.reconcile(rc, force=True)
        except kube.ApiError as exc:
            report.errors.append(str(exc))
        await pause()
    return report


def pod_essentials(pod: dict[str, Any]) -> dict[str, Any]:
    """What a round reads of a listed pod: its metadata (without managedFields), ``spec.nodeName``,
    the names of its containers and init containers (``is_injected`` looks for the agent's) and
    ``status.phase`` (:meth:`PodClaim.from_pod`, :mod:`gismo_operator.core.notinjected`, the Events'
    involvedObject). A Ray pod is ~5-10 KiB of JSON, mostly its containers."""
    meta = {k: v for k, v in (pod.get("metadata") or {}).items() if k != "managedFields"}
    spec = pod.get("spec") or {}
    return {
        "metadata": meta,
        "spec": {
            "nodeName": spec.get("nodeName"),
            "containers": [{"name": c.get("name")} for c in spec.get("containers") or []],
            "initContainers": [{"name": c.get("name")} for c in spec.get("initContainers") or []],
        },
        "status": {"phase": (pod.get("status") or {}).get("phase")},
    }


async def _loop(interval: float) -> None:
    """A round every ``interval`` seconds, start to start: a round's own duration does not stretch
    the period, so an expired reservation is released at most RESERVATION_TTL + SWEEP_INTERVAL
    (plus the time the round takes to reach its slice) after it was made."""
    loop = asyncio.get_running_loop()
    next_at = loop.time()  # the first round at once: release what went while we were down
    first = True
    while True:
        await asyncio.sleep(max(0.0, next_at - loop.time()))
        next_at = max(next_at + interval, loop.time())  # a round longer than the period: no catch-up burst
        try:
            report = await sweep_once()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # keep sweeping: one bad round must not end the safety net
            if first:  # e.g. not logged in yet: the start-up round must not wait a whole interval
                next_at = loop.time() + min(interval, FIRST_ROUND_RETRY)
            logger.warning("sweep round failed: %s", exc)
            continue
        first = False
        if report.slices_released or report.regions_released or report.regions_bound:
            logger.info("sweep: %s", report)


@kopf.on.startup()
async def start_sweeper(**_: Any) -> None:
    """Start the periodic sweep in the background (stopped on cleanup)."""
    ctx = current()
    if ctx.sweeper is None or ctx.sweeper.done():
        ctx.sweeper = asyncio.get_running_loop().create_task(_loop(ctx.settings.sweep_interval))
    # Pods created while the operator was down are reported now, not one sweep interval later.
    task = asyncio.get_running_loop().create_task(_report_at_startup())
    ctx.event_tasks.add(task)
    task.add_done_callback(ctx.event_tasks.discard)


async def _report_at_startup() -> None:
    try:
        await notinjected.report_now()
    except (kube.ApiError, OSError) as exc:  # the first sweep round tries again
        logger.warning("start-up report of Ray pods without Gismo failed: %s", exc)


@kopf.on.cleanup()
async def stop_sweeper(**_: Any) -> None:
    """Stop the periodic sweep."""
    ctx = current()
    task, ctx.sweeper = ctx.sweeper, None
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await ctx.drain_events()
