"""A Ray pod created while the operator is down is reported once it is up (kmock): a GismoNotInjected
Warning on the pod and on its RayCluster, the metric, and the GismoSlice status; once, also across a
restart of the operator (the slice's status remembers what was reported)."""

from __future__ import annotations

import uuid

import kmock
from _ray_fixtures import (
    NS,
    kuberay_pod,
    opted_in_cluster,
    running_operator,
)
from prometheus_client import REGISTRY

from gismo.testing import wait_until_async
from gismo_operator import kube
from gismo_operator.constants import REASON_NOT_INJECTED
from gismo_operator.context import current
from gismo_operator.handlers import notinjected


def reported() -> float:
    return REGISTRY.get_sample_value("gismo_pods_not_injected_reported_total") or 0.0


async def test_a_pod_created_while_the_operator_is_down_is_reported(api: kmock.KubernetesEmulator) -> None:
    async with running_operator(api) as op:
        rc = await opted_in_cluster(op)
        admitted = await op.create_pod(kuberay_pod(rc, "head"), node="node-1")  # through the webhook
    # The operator is down: KubeRay creates a worker, failurePolicy Ignore lets it through unchanged.
    missed = kuberay_pod(rc)
    missed["metadata"]["name"] = missed["metadata"]["generateName"] + "missed"
    missed["metadata"]["uid"] = str(uuid.uuid4())
    before = reported()
    async with running_operator(api) as op:
        await op.client.create(kube.PODS, missed, namespace=NS)

        async def events() -> list[dict[str, object]]:
            found = await op.events(REASON_NOT_INJECTED)
            names = {e["involvedObject"]["name"] for e in found}  # type: ignore[index]
            return found if {missed["metadata"]["name"], rc["metadata"]["name"]} <= names else []

        found = await wait_until_async(events, "GismoNotInjected on the pod and its RayCluster")
        assert all(e["type"] == "Warning" for e in found)
        assert admitted["metadata"]["name"] not in {e["involvedObject"]["name"] for e in found}  # type: ignore[index]
        body = await wait_until_async(
            lambda: _slice_with_status(op, rc["metadata"]["name"]), "podsNotInjected in the slice's status"
        )
        assert body["status"]["podsNotInjected"] == 1
        assert body["status"]["podsNotInjectedNames"] == [missed["metadata"]["name"]]
        assert reported() == before + 1
        # Once: another round finds the same pod and says nothing new.
        assert await op.kopf_thread.run_in_loop(notinjected.report_now()) == 1
        again = await op.events(REASON_NOT_INJECTED)
        assert len(again) == len(found), "\n".join(
            str((e["involvedObject"], e["message"][:80])) for e in again
        )
        assert reported() == before + 1
        status = body["status"]
        assert status["podsNotInjectedReported"] == [missed["metadata"]["uid"]]  # type: ignore[index]
    # The operator restarts: a fresh process (running_operator resets its caches), told by the slice.
    async with running_operator(api) as op:
        assert await op.kopf_thread.run_in_loop(notinjected.report_now()) == 1
        after = await op.events(REASON_NOT_INJECTED)
        assert len(after) == len(found), "\n".join(
            str((e["involvedObject"], e["message"][:80])) for e in after
        )
        assert reported() == before + 1
        # Not this process's own memory: it never posted for that pod.
        assert missed["metadata"]["uid"] not in await op.kopf_thread.run_in_loop(_posted_by_this_process())


async def _posted_by_this_process() -> set[str]:
    return set(current().reported_not_injected)


async def _slice_with_status(op: object, name: str) -> dict[str, object] | None:
    body = await op.slice(name)  # type: ignore[attr-defined]
    return body if body and (body.get("status") or {}).get("podsNotInjected") else None
