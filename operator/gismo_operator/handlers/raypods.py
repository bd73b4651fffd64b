"""Ray pods: the ``mutate-raypod`` admission webhook, and binding/release on pod events.

Admission (Pod CREATE, objectSelector ``ray.io/is-ray-node=yes``, failurePolicy Ignore): for a pod
whose RayCluster (label ``ray.io/cluster``) has a GismoSlice, reserve a region in the ledger —
durably, by creating its GismoRegion object, before answering — and patch the pod with the agent,
volumes, env, affinity and annotations (:mod:`gismo_operator.injection`). The pod has no name and
no uid yet (generateName), so the reservation is identified by its token (annotation
``gismo.io/reservation``). A full slice, or any problem, admits the pod unchanged but for
``gismo.io/skipped: <reason>``, with a Warning Event on the RayCluster: Ray never waits for Gismo.

Pod events: once the pod exists its GismoRegion is bound to its uid (and node once scheduled) and
owned by it (the garbage collector deletes it with the pod); on deletion its region is released at
once. The periodic sweep (:mod:`gismo_operator.handlers.sweep`) catches whatever events were missed.

Failure: whatever goes wrong within the admission budget (the API fails, regions keep being taken,
a call stalls) admits the pod unchanged but for ``gismo.io/skipped``: no region annotation, no
``GISMO_*`` env. A region created before the failure is deleted in the background (or expires).

API calls: through the ledger (:mod:`gismo_operator.ledger.sliceapi`), GET gismopools (cache misses),
LIST nodes (DevicePlugin pools: which advertise the resource, at most every 30 s), GET namespaces
(HostPath pools: the Pod Security level, at most every 30 s per namespace), POST events; pods are
only watched (LIST/WATCH), never written.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Mapping
from typing import Any

import kopf
from pydantic import ValidationError

from gismo.contract import ANN_REGION, RESOURCE_PREFIX
from gismo_operator import kube, metrics
from gismo_operator.constants import (
    LABEL_CLUSTER,
    LABEL_IS_RAY_NODE,
    LABEL_NODE_TYPE,
    RAY_NODE_TYPES,
    REASON_NOT_ADVERTISED,
    REASON_NOT_INJECTED,
    REASON_POD_SECURITY,
    REASON_REGION_CONFLICT,
    REASON_SLICE_FULL,
    WEBHOOK_MUTATE_RAYPOD,
)
from gismo_operator.context import current, raycluster_ref
from gismo_operator.core.assignment import Outcome, PodClaim
from gismo_operator.core.models import (
    ACCESS_DEVICE_PLUGIN,
    ACCESS_HOST_PATH,
    GismoPool,
    describe_validation_error,
)
from gismo_operator.injection import (
    AgentSpec,
    InjectionError,
    InjectionPlan,
    inject_pod,
    is_injected,
    mark_skipped,
)
from gismo_operator.injection.diff import json_patch
from gismo_operator.injection.resources import agent_resources
from gismo_operator.ledger.regions import RegionLedger, Reservation, SliceGone, TooManyConflicts
from gismo_operator.settings import Settings
from gismo_operator.webhook.kopf_overrides import fast_admission

logger = logging.getLogger(__name__)

#: Pod Security levels whose PodSecurity admission refuses hostPath volumes.
HOSTPATH_FORBIDDEN = ("baseline", "restricted")
#: Our own deadline inside the API server's (timeoutSeconds 10): answer "unchanged" before it gives up.
ADMISSION_BUDGET_SECONDS = 8.0


def build_plan(
    pool: GismoPool, reservation: Reservation, settings: Settings, pod: Mapping[str, Any]
) -> InjectionPlan:
    """The injection plan for a reserved region of a pool's slice, for this pod (whose QoS class
    decides the agent's default resources)."""
    spec = pool.spec
    region_size = reservation.slice.spec.region_size
    return InjectionPlan(
        pool=pool.metadata.name or reservation.slice.spec.pool,
        backend=spec.backend.type,
        device_path=spec.backend.path,
        slice_offset=reservation.slice.spec.offset,
        slice_size=reservation.slice.spec.size,
        region_index=reservation.index,
        region_offset=reservation.offset,
        region_size=region_size,
        agent=AgentSpec(
            image=spec.agent.image or settings.default_agent_image,
            image_pull_policy=spec.agent.image_pull_policy,
            resources=agent_resources(
                pod,
                spec.agent.resources.to_api() or None,
                backend=spec.backend.type,
                region_size=region_size,
                cpu=settings.agent_cpu,
                memory=settings.agent_memory,
            ),
            native_sidecar=spec.agent.native_sidecar,
        ),
        node_selector=dict(spec.node_selector),
        reservation=reservation.token,
        file_prefixes=settings.file_backend_prefixes,
        access=spec.access,
        coherence=spec.backend.effective_coherence,
    )


async def access_problem(pool: GismoPool, namespace: str) -> tuple[str, str] | None:
    """(Event reason, why) the pool cannot reach a pod in ``namespace`` now; None when it can."""
    if pool.spec.access == ACCESS_HOST_PATH:
        refused = await pod_security_problem(pool, namespace)
        return None if refused is None else (REASON_POD_SECURITY, refused)
    unseen = await unadvertised_problem(pool)
    return None if unseen is None else (REASON_NOT_ADVERTISED, unseen)


async def unadvertised_problem(pool: GismoPool) -> str | None:
    """Why a DevicePlugin pool's pods could not be scheduled (None: some node of the pool advertises
    ``gismo.io/<pool>``). Without a node component on the pool's nodes the resource request would
    keep the pod Pending for ever; admitted without Gismo instead, it runs on Ray's own store."""
    name = pool.metadata.name or ""
    resource = RESOURCE_PREFIX + name
    try:
        nodes = await current().nodes_advertising(resource)
    except kube.ApiError as exc:
        return f"cannot list nodes to see which advertise {resource}: {exc}"
    wanted = pool.spec.node_selector.items()
    if any(all(labels.get(k) == v for k, v in wanted) for labels in nodes):
        return None
    return (
        f"no node of GismoPool {name} advertises {resource}: the node component (chart value node.enabled, "
        "node.pools) is not running on the pool's nodes, or the pool's device or file is missing there "
        "(its logs say which)"
    )


async def pod_security_problem(pool: GismoPool, namespace: str) -> str | None:
    """Why the pool cannot reach a pod in ``namespace`` (None: it can). Only hostPath access can be
    refused: PodSecurity admission runs after the mutating webhooks, so a hostPath volume in a
    baseline or restricted namespace would have the pod refused (and KubeRay retry for ever)."""
    if pool.spec.access != ACCESS_HOST_PATH:
        return None
    try:
        level = await current().pod_security_level(namespace)
    except kube.ApiError as exc:
        return f"cannot read namespace {namespace} to check its Pod Security level: {exc}"
    if level in HOSTPATH_FORBIDDEN:
        return (
            f"namespace {namespace} enforces Pod Security level {level!r}, which forbids the hostPath "
            f"volume of GismoPool {pool.metadata.name} (spec.access: {ACCESS_HOST_PATH}); run the node "
            f"component and use spec.access: {ACCESS_DEVICE_PLUGIN}, or relabel the namespace"
        )
    return None


def _answer_with(patch: kopf.Patch, old_body: dict[str, Any], new_body: dict[str, Any]) -> None:
    """Make kopf answer the admission with the JSON patch from ``old_body`` to ``new_body``.

    kopf turns its ``patch`` into the answer with ``jsonpatch.make_patch`` over the whole pod, a
    minimal-edit search that was the largest cost of an admission (several ms). Injection only
    adds and replaces, so :func:`json_patch` computes the same result by a structural walk, and it
    is handed to kopf by overriding ``as_json_patch`` on this one request's patch object (kopf
    calls exactly that method to build the response). Equivalent output, a fraction of the cost.
    """
    ops = json_patch(old_body, new_body)
    patch.fns.append(lambda body: None)  # non-empty, so kopf asks for the operations
    setattr(patch, "as_json_patch", lambda body=None: ops)  # noqa: B010


async def _reserve(ledger: RegionLedger, namespace: str, cluster: str, dryrun: bool) -> Reservation | None:
    # "Full" is only said after the ledger re-listed the slice and reclaimed what nobody holds.
    if dryrun:
        return await ledger.peek(namespace, cluster)
    return await ledger.reserve(namespace, cluster)


async def admit(pod: Mapping[str, Any], *, dryrun: bool = False) -> dict[str, Any] | None:
    """The pod as it should be admitted, or None to leave it exactly as it is. Never raises for
    problems of the pod or the pool: those end in ``gismo.io/skipped`` and an Event."""
    if is_injected(pod):
        return None
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    cluster = labels.get(LABEL_CLUSTER)
    namespace = meta.get("namespace")
    if not cluster or not namespace:
        return None
    if labels.get(LABEL_NODE_TYPE) not in RAY_NODE_TYPES:
        # Not a Ray node (KubeRay's Redis cleanup Job pod carries ray.io/is-ray-node too): no region.
        return None
    ledger = current().ledger
    try:
        reservation = await _reserve(ledger, namespace, cluster, dryrun)
    except SliceGone:
        return None  # the cluster did not opt in, or got no slice (it was told by an Event)
    involved = raycluster_ref(namespace, cluster)
    if reservation is None:
        cached = ledger.cached(namespace, cluster)
        count = cached.spec.region_count if cached else 0
        reason = f"slice full: all {count} regions of GismoSlice {namespace}/{cluster} are in use"
        metrics.count_allocation("region", "full")
        if not dryrun:
            current().post_event(
                involved, "Warning", REASON_SLICE_FULL, f"a Ray pod starts without Gismo: {reason}"
            )
        return mark_skipped(pod, reason)

    problem: str | None = None
    event_reason = REASON_NOT_INJECTED
    try:
        pool = await current().get_pool_model(reservation.slice.spec.pool)
        if pool is None:
            problem = f"GismoPool {reservation.slice.spec.pool} does not exist"
        elif (refused := await access_problem(pool, namespace)) is not None:
            event_reason, problem = refused
        else:
            plan = build_plan(pool, reservation, current().settings, pod)
            result = inject_pod(pod, plan)
    except ValidationError as exc:
        problem = f"GismoPool {reservation.slice.spec.pool}: {describe_validation_error(exc)}"
    except (InjectionError, ValueError) as exc:
        problem = str(exc)
    if problem is not None:
        if not dryrun:
            await ledger.cancel(namespace, cluster, reservation)
            current().post_event(
                involved, "Warning", event_reason, f"a Ray pod starts without Gismo: {problem}"
            )
        metrics.count_allocation("region", "error")
        return mark_skipped(pod, problem)
    metrics.count_allocation("region", "ok")
    return result


@kopf.on.mutate(
    "",
    "v1",
    "pods",
    id=WEBHOOK_MUTATE_RAYPOD,
    operations=["CREATE"],
    labels={LABEL_IS_RAY_NODE: "yes"},
    ignore_failures=True,
    side_effects=True,
)
async def mutate_raypod(body: kopf.Body, patch: kopf.Patch, dryrun: bool, **_: Any) -> None:
    """Inject the agent and a durably reserved region into a Ray pod at creation.

    Requests normally take the fast path (:func:`serve_review`); kopf calls this for the rest."""
    with metrics.webhook_timer(WEBHOOK_MUTATE_RAYPOD):
        pod = dict(body)
        new = await admit_safely(pod, dryrun=dryrun)
        if new is not None:
            _answer_with(patch, pod, new)


async def admit_safely(pod: dict[str, Any], *, dryrun: bool) -> dict[str, Any] | None:
    """:func:`admit` within the admission budget; any failure admits the pod, marked skipped."""
    try:
        async with asyncio.timeout(ADMISSION_BUDGET_SECONDS):  # no extra task, unlike wait_for
            return await admit(pod, dryrun=dryrun)
    except (TimeoutError, TooManyConflicts, kube.ApiError, OSError) as exc:
        # A region created before the failure is given back by the ledger (or expires); Ray starts.
        logger.warning("pod of %s not injected: %s", (pod.get("metadata") or {}).get("labels"), exc)
        return mark_skipped(pod, f"operator error: {type(exc).__name__}")
    except Exception as exc:  # a bug must not cost Ray its pod either: admit it, say why, log it
        logger.exception("pod of %s not injected", (pod.get("metadata") or {}).get("labels"))
        return mark_skipped(pod, f"operator error: {type(exc).__name__}")


@fast_admission(WEBHOOK_MUTATE_RAYPOD)
async def serve_review(review: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``mutate-raypod`` answer without kopf's per-request machinery (see
    :class:`gismo_operator.webhook.kopf_overrides.FastAdmissionServer`): the same patch and response
    kopf builds from :func:`mutate_raypod`. Returns None, so kopf answers, for anything but what the
    handler is registered for (a CREATE of a core/v1 pod labelled ``ray.io/is-ray-node=yes``, with
    userInfo)."""
    request = review.get("request")
    if not isinstance(request, Mapping):
        return None
    pod = request.get("object")
    resource = request.get("resource") or {}
    if (
        request.get("operation") != "CREATE"
        or request.get("subResource")
        or request.get("userInfo") is None
        or not isinstance(pod, dict)
        or (resource.get("group"), resource.get("version"), resource.get("resource")) != ("", "v1", "pods")
        or ((pod.get("metadata") or {}).get("labels") or {}).get(LABEL_IS_RAY_NODE) != "yes"
    ):
        return None
    with metrics.webhook_timer(WEBHOOK_MUTATE_RAYPOD):
        new = await admit_safely(pod, dryrun=bool(request.get("dryRun")))
        response: dict[str, Any] = {"uid": request.get("uid", ""), "allowed": True}
        ops = json_patch(pod, new) if new is not None else []
        if ops:
            response["patch"] = base64.b64encode(json.dumps(ops).encode()).decode("ascii")
            response["patchType"] = "JSONPatch"
    return {
        "apiVersion": review.get("apiVersion", "admission.k8s.io/v1"),
        "kind": review.get("kind", "AdmissionReview"),
        "response": response,
    }


@kopf.on.event("", "v1", "pods", labels={LABEL_IS_RAY_NODE: "yes"}, annotations={ANN_REGION: kopf.PRESENT})
async def raypod_event(event: Mapping[str, Any], body: kopf.Body, **_: Any) -> None:
    """Bind the region to the pod once it exists (uid, node); release it when the pod is deleted."""
    raw = dict(body)
    claim = PodClaim.from_pod(raw)
    meta = raw.get("metadata") or {}
    cluster = (meta.get("labels") or {}).get(LABEL_CLUSTER)
    namespace = meta.get("namespace")
    if claim is None or not cluster or not namespace:
        return
    ledger = current().ledger
    try:
        if event.get("type") == "DELETED":
            if await ledger.release(namespace, cluster, claim) is Outcome.RELEASED:
                metrics.count_release("region")
                # The last pod of a cluster being deleted lets its slice go now, not at the next
                # sweep: one GET of the slice (its cached body may predate the deletion).
                await ledger.finalize_if_idle(namespace, cluster)
            return
        outcome = await ledger.bind(namespace, cluster, claim)
    except SliceGone:
        return
    except (TooManyConflicts, kube.ApiError) as exc:  # the sweep repairs what this missed
        logger.warning(
            "pod %s/%s: region bookkeeping deferred to the sweep: %s", namespace, meta.get("name"), exc
        )
        return
    if outcome is Outcome.CONFLICT:
        message = (
            f"pod {meta.get('name')} uses region {claim.index} of GismoSlice {namespace}/{cluster}, "
            "which is recorded for another pod; delete the pod so it is recreated with a free region"
        )
        logger.error(message)
        current().warn_once(raw, REASON_REGION_CONFLICT, message)
        current().warn_once(raycluster_ref(namespace, cluster), REASON_REGION_CONFLICT, message)
