"""Helpers for the RayCluster/injection tests: a kmock API with the resources the operator uses, the
operator running in-process against it (webhooks over real HTTPS), KubeRay-shaped objects, and
AdmissionReview v1 requests.

Pods are created the way the API server does it: the AdmissionReview carries the pod as KubeRay
sends it (generateName, no name, no uid); the test applies the returned JSON patch, then fills in
name and uid and stores the pod, which is when the operator's watch sees it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import ssl
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import kopf
import yaml

from gismo.contract import ANN_POOL
from gismo.testing import wait_until_async
from gismo_operator import kube
from gismo_operator.context import current
from gismo_operator.testing import embedded, kuberay_sim

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "kuberay" / "samples"
GI = 1 << 30
NS = "default"
KUBERAY_CRD = SAMPLES.parent / "ray.io_rayclusters.yaml"
if not SAMPLES.is_dir():  # never skip: these tests are the proof the operator handles KubeRay's shapes
    raise RuntimeError(f"KubeRay's CRD and samples are expected at {SAMPLES.parent} (tests/fixtures/kuberay)")


def declare_resources(api: kmock.KubernetesEmulator) -> None:
    """gismo.io (from the models), KubeRay's RayCluster (its real CRD) and core v1, as in production."""
    embedded.declare_resources(api, kuberay_crd=embedded.load_crd(KUBERAY_CRD))


def pool_body(
    name: str = "pool-a", capacity: str = "16Gi", region_size: str = "1Gi", **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "gismo.io/v1alpha1",
        "kind": "GismoPool",
        # kmock keeps no resourceVersion of its own; kopf's finalizer patch tests for one.
        "metadata": {"name": name, "uid": str(uuid.uuid4()), "resourceVersion": "1"},
        "spec": {
            "capacity": capacity,
            "regionSize": region_size,
            "backend": {"type": "shm", "path": "/dev/shm/gismo/pool-a"},
            "nodeSelector": {"gismo.io/attached": "pool-a"},
            "agent": {"image": "gismo-agent:test"},
            **spec,
        },
    }


def raycluster_from_sample(
    sample: str = "ray-cluster.sample.yaml", *, name: str | None = None, pool: str | None = "pool-a"
) -> dict[str, Any]:
    """A RayCluster from KubeRay's sample, in NS, with a uid and (unless None) the opt-in annotation."""
    docs = [
        d for d in yaml.safe_load_all((SAMPLES / sample).read_text()) if d and d.get("kind") == "RayCluster"
    ]
    body = copy.deepcopy(docs[0])
    meta = body.setdefault("metadata", {})
    if name:
        meta["name"] = name
    meta["namespace"] = NS
    meta["uid"] = str(uuid.uuid4())
    meta["generation"] = 1
    meta["resourceVersion"] = "1"
    if pool:
        meta.setdefault("annotations", {})[ANN_POOL] = pool
    return body


def kuberay_pod(
    raycluster: dict[str, Any], node_type: str = "worker", group_index: int = 0
) -> dict[str, Any]:
    """A Ray pod as KubeRay builds it from the RayCluster (see :mod:`gismo_operator.testing.kuberay_sim`):
    generateName, its labels, containers[0] is Ray, the ``shared-mem`` emptyDir. No name, no uid."""
    group = None if node_type == "head" else raycluster["spec"]["workerGroupSpecs"][group_index]
    return kuberay_sim.pod_for(raycluster, node_type, group)


def admission_review(pod: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
    """An AdmissionReview v1 for a Pod CREATE, as the API server sends it."""
    return kuberay_sim.admission_review(pod, dry_run=dry_run)


def apply_response(pod: dict[str, Any], review: dict[str, Any]) -> dict[str, Any]:
    """The pod after the API server applied the webhook's JSON patch (a denial fails the test)."""
    response = review["response"]
    assert response["allowed"] is True, response
    return kuberay_sim.apply_admission(pod, response)


# ------------------------------------------------------------------------------------------------
# The operator, in-process


@dataclasses.dataclass
class RunningOperator:
    api: kmock.KubernetesEmulator
    client: kube.Client
    webhook_url: str
    ssl: ssl.SSLContext
    session: aiohttp.ClientSession
    kopf_thread: embedded.KopfThread

    async def admit(self, pod: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        """POST an AdmissionReview for ``pod`` over HTTPS to /mutate-raypod; return the review's answer."""
        return await self.review(admission_review(pod, dry_run=dry_run))

    async def review(self, request: dict[str, Any]) -> dict[str, Any]:
        """POST the AdmissionReview ``request``; return the answer, which must answer that request."""
        async with self.session.post(f"{self.webhook_url}/mutate-raypod", json=request, ssl=self.ssl) as resp:
            assert resp.status == 200, await resp.text()
            result: dict[str, Any] = await resp.json()
        assert result["response"]["uid"] == request["request"]["uid"], result
        return result

    async def create_pod(self, pod: dict[str, Any], node: str | None = None) -> dict[str, Any]:
        """Admit the pod, then store it as the API server would (name and uid filled in)."""
        review = await self.admit(pod)
        admitted = apply_response(pod, review)
        meta = admitted["metadata"]
        meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        meta["uid"] = str(uuid.uuid4())
        if node:
            admitted["spec"]["nodeName"] = node
        created: dict[str, Any] = await self.client.create(kube.PODS, admitted, namespace=meta["namespace"])
        return created

    async def slice(self, name: str, namespace: str = NS) -> dict[str, Any] | None:
        return await self.client.get_or_none(kube.SLICES, name, namespace)

    async def events(self, reason: str | None = None) -> list[dict[str, Any]]:
        await self.kopf_thread.run_in_loop(current().drain_events())  # posted in kopf's own loop
        items = await self.client.list(kube.EVENTS)
        return [e for e in items if reason is None or e.get("reason") == reason]


async def opted_in_cluster(
    op: RunningOperator,
    *,
    max_replicas: int = 5,
    capacity: str = "256Mi",
    sample: str = "ray-cluster.sample.yaml",
    **pool_spec: Any,
) -> dict[str, Any]:
    """A pool of 1Mi regions and the KubeRay sample opted in; the RayCluster, once its slice exists."""
    await op.client.create(kube.POOLS, pool_body(capacity=capacity, region_size="1Mi", **pool_spec))
    rc = raycluster_from_sample(sample)
    rc["spec"]["workerGroupSpecs"][0]["maxReplicas"] = max_replicas
    await op.client.create(kube.RAYCLUSTERS, rc, namespace=NS)
    await wait_until_async(lambda: op.slice(rc["metadata"]["name"]), "the slice of the opted-in RayCluster")
    return rc


def _test_kopf(settings: kopf.OperatorSettings) -> None:
    embedded.quiet_kopf(settings)
    settings.watching.server_timeout = 10


def advertising_node(pool: str = "pool-a", labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A node where the node component advertises ``gismo.io/<pool>`` (as the kubelet reports it)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": f"node-{pool}", "labels": labels or {"gismo.io/attached": pool}},
        "status": {"allocatable": {"cpu": "8", "memory": "32Gi", f"gismo.io/{pool}": "128"}},
    }


@contextlib.asynccontextmanager
async def running_operator(
    api: kmock.KubernetesEmulator, *, node_component: bool = True, **settings: Any
) -> AsyncIterator[RunningOperator]:
    """Run the whole operator (all handler modules) against ``api`` until the block ends
    (:func:`gismo_operator.testing.embedded.run_operator`: kopf in its own thread, webhooks over HTTPS).

    Each call is a fresh "process" as far as the operator's caches go (they are reset first), so
    two calls in a row over one ``api`` model an operator restart. With ``node_component`` a node of
    pool-a advertises ``gismo.io/pool-a`` (what the chart's node component makes the kubelet report).
    """
    async with embedded.run_operator(str(api.url), tune=_test_kopf, **settings) as op:
        client = kube.Client(kopf.ConnectionInfo(server=str(api.url).rstrip("/")))
        if node_component:
            with contextlib.suppress(kube.Conflict):  # a restart: the node is there already
                await client.create(kube.NODES, advertising_node())
        try:
            async with aiohttp.ClientSession() as session:
                yield RunningOperator(api, client, op.webhook_url, op.ssl_context(), session, op.kopf_thread)
        finally:
            await client.close()
