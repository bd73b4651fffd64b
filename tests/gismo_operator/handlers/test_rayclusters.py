"""RayCluster opt-in against kmock: the slice, its size, resize, release, and the Warning Events."""

from __future__ import annotations

from typing import Any

import kmock
import pytest
from _ray_fixtures import (
    GI,
    NS,
    pool_body,
    raycluster_from_sample,
    running_operator,
)

from gismo.testing import wait_until_async
from gismo_operator import kube


async def test_sample_cluster_gets_a_slice_sized_for_its_largest_shape(api: kmock.KubernetesEmulator) -> None:
    async with running_operator(api) as op:
        await op.client.create(kube.POOLS, pool_body())
        rc = raycluster_from_sample()  # head + workergroup maxReplicas 5
        await op.client.create(kube.RAYCLUSTERS, rc, namespace=NS)
        body: dict[str, Any] = await wait_until_async(
            lambda: op.slice(rc["metadata"]["name"]), "the slice of the RayCluster"
        )
        assert body["spec"]["size"] == 6 * GI
        assert body["spec"]["regionSize"] == GI
        assert body["spec"]["offset"] % GI == 0
        assert body["spec"]["pool"] == "pool-a"
        assert body["spec"]["rayCluster"] == "raycluster-kuberay"
        assert body["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "ray.io/v1",
                "kind": "RayCluster",
                "name": "raycluster-kuberay",
                "uid": rc["metadata"]["uid"],
                "controller": True,
            }
        ]
        assert await wait_until_async(lambda: op.events("GismoSliceReserved"), "a GismoSliceReserved Event")


async def _events(op: Any, reason: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = await op.events(reason)
    return events


async def _no_slice(op: Any, name: str = "raycluster-kuberay") -> bool:
    return await op.slice(name) is None


def _with_max_replicas(rc: dict[str, Any], value: int, generation: int) -> dict[str, Any]:
    groups = [dict(g) for g in rc["spec"]["workerGroupSpecs"]]
    groups[0]["maxReplicas"] = value
    # kmock does not bump metadata.generation on spec changes; the API server does.
    return {"metadata": {"generation": generation}, "spec": {"workerGroupSpecs": groups}}


async def test_growing_cluster_resizes_its_slice_in_place_and_never_writes_the_raycluster(
    api: kmock.KubernetesEmulator,
) -> None:
    async with running_operator(api) as op:
        await op.client.create(kube.POOLS, pool_body())
        rc = raycluster_from_sample()
        await op.client.create(kube.RAYCLUSTERS, rc, namespace=NS)
        first: dict[str, Any] = await wait_until_async(
            lambda: op.slice("raycluster-kuberay"), "the slice of raycluster-kuberay"
        )
        await op.client.patch(kube.RAYCLUSTERS, "raycluster-kuberay", _with_max_replicas(rc, 7, 2), NS)

        async def grown() -> dict[str, Any] | None:
            body = await op.slice("raycluster-kuberay")
            return body if body and body["spec"]["size"] == 8 * GI else None

        body = await wait_until_async(grown, "the slice to grow")
        assert body["spec"]["offset"] == first["spec"]["offset"]
        assert await wait_until_async(lambda: _events(op, "GismoSliceResized"), "a GismoSliceResized Event")
        stored = await op.client.get(kube.RAYCLUSTERS, "raycluster-kuberay", NS)
        assert "status" not in stored and not stored["metadata"].get("finalizers")
        assert stored["metadata"]["annotations"] == rc["metadata"]["annotations"]
        writes = [r for r in api if "/rayclusters" in str(r.url) and r.method.value in ("PATCH", "PUT")]
        assert len(writes) == 1  # the test's own resize; the operator wrote nothing


async def test_resize_blocked_by_a_neighbour_keeps_the_size_and_warns(api: kmock.KubernetesEmulator) -> None:
    async with running_operator(api) as op:
        await op.client.create(kube.POOLS, pool_body())
        rc = raycluster_from_sample()
        await op.client.create(kube.RAYCLUSTERS, rc, namespace=NS)
        await wait_until_async(lambda: op.slice("raycluster-kuberay"), "the slice of raycluster-kuberay")
        neighbour = raycluster_from_sample(name="neighbour")
        await op.client.create(kube.RAYCLUSTERS, neighbour, namespace=NS)
        await wait_until_async(lambda: op.slice("neighbour"), "the slice of neighbour")
        await op.client.patch(kube.RAYCLUSTERS, "raycluster-kuberay", _with_max_replicas(rc, 7, 2), NS)
        events = await wait_until_async(
            lambda: _events(op, "GismoResizeBlocked"), "a GismoResizeBlocked Event"
        )
        assert events[0]["type"] == "Warning" and "not free" in events[0]["message"]
        body = await op.slice("raycluster-kuberay")
        assert body is not None and body["spec"]["size"] == 6 * GI


@pytest.mark.parametrize(
    ("pool", "reason"),
    [
        (None, "GismoUnknownPool"),
        (pool_body(capacity="4Gi"), "GismoPoolFull"),
        (pool_body(namespaceSelector={"matchLabels": {"gismo": "yes"}}), "GismoNamespaceNotAdmitted"),
    ],
)
async def test_no_slice_and_a_warning_when_the_pool_cannot_take_the_cluster(
    api: kmock.KubernetesEmulator, pool: dict[str, Any] | None, reason: str
) -> None:
    async with running_operator(api) as op:
        # kmock cannot POST namespaces (it parses the path as a namespaced URL): store it directly.
        api.objects["v1/namespaces", None, NS] = {"metadata": {"name": NS, "labels": {"gismo": "no"}}}
        if pool is not None:
            await op.client.create(kube.POOLS, pool)
        rc = raycluster_from_sample()  # needs 6Gi
        await op.client.create(kube.RAYCLUSTERS, rc, namespace=NS)
        events = await wait_until_async(lambda: _events(op, reason), "an Event with the expected reason")
        assert events[0]["type"] == "Warning"
        assert events[0]["involvedObject"]["name"] == "raycluster-kuberay"
        assert "without Gismo" in events[0]["message"]
        assert await op.slice("raycluster-kuberay") is None
        # Its pods are admitted untouched: Ray runs on its own object store.
        from _ray_fixtures import apply_response, kuberay_pod

        pod = kuberay_pod(rc)
        assert apply_response(pod, await op.admit(pod)) == pod


async def test_removing_the_annotation_releases_the_slice(api: kmock.KubernetesEmulator) -> None:
    async with running_operator(api) as op:
        await op.client.create(kube.POOLS, pool_body())
        rc = raycluster_from_sample()
        await op.client.create(kube.RAYCLUSTERS, rc, namespace=NS)
        await wait_until_async(lambda: op.slice("raycluster-kuberay"), "the slice of raycluster-kuberay")
        await op.client.patch(
            kube.RAYCLUSTERS, "raycluster-kuberay", {"metadata": {"annotations": {"gismo.io/pool": None}}}, NS
        )
        await wait_until_async(lambda: _no_slice(op), "the slice to be deleted")
        assert await wait_until_async(lambda: _events(op, "GismoSliceReleased"), "a GismoSliceReleased Event")


async def test_region_size_override_and_sweep_of_an_orphaned_slice(api: kmock.KubernetesEmulator) -> None:
    from gismo_operator.handlers import sweep

    async with running_operator(api) as op:
        await op.client.create(kube.POOLS, pool_body())
        rc = raycluster_from_sample()
        rc["metadata"]["annotations"]["gismo.io/region-size"] = "2Gi"
        await op.client.create(kube.RAYCLUSTERS, rc, namespace=NS)
        body: dict[str, Any] = await wait_until_async(
            lambda: op.slice("raycluster-kuberay"), "the slice of raycluster-kuberay"
        )
        assert body["spec"]["regionSize"] == 2 * GI and body["spec"]["size"] == 12 * GI
        # The cluster vanishes while nobody watches (no DELETED event reaches the operator):
        del api.objects["ray.io/v1/rayclusters", NS, "raycluster-kuberay"]
        report = await op.kopf_thread.run_in_loop(sweep.sweep_once())  # the operator's own loop
        assert report.slices_released == [f"{NS}/raycluster-kuberay"]
        assert await op.slice("raycluster-kuberay") is None


async def test_the_sweep_reconciles_only_a_cluster_that_may_need_it(api: kmock.KubernetesEmulator) -> None:
    """A settled cluster whose slice the round listed costs the round no read of its own (with 1,000
    clusters those were most of a round); one whose slice vanished unseen gets it back."""
    from gismo_operator.handlers import sweep

    name = "raycluster-kuberay"
    async with running_operator(api) as op:
        await op.client.create(kube.POOLS, pool_body())
        await op.client.create(kube.RAYCLUSTERS, raycluster_from_sample(), namespace=NS)
        first = await wait_until_async(lambda: op.slice(name), "the slice of the RayCluster")
        await op.kopf_thread.run_in_loop(sweep.sweep_once())  # settles it, whatever the events did
        seen = len(list(api))
        report = await op.kopf_thread.run_in_loop(sweep.sweep_once())
        assert report.errors == []
        reads = [
            r
            for r in list(api)[seen:]
            if r.method.value == "GET" and str(r.url).endswith(f"/gismoslices/{name}")
        ]
        assert reads == []
        # The slice goes while nobody watches (no DELETED event reaches the operator): the next
        # round does not find it listed, reconciles the cluster and makes it again.
        del api.objects["gismo.io/v1alpha1/gismoslices", NS, name]
        report = await op.kopf_thread.run_in_loop(sweep.sweep_once())
        assert report.errors == []
        again = await wait_until_async(lambda: op.slice(name), "the slice made again by the sweep")
        assert again["spec"]["size"] == first["spec"]["size"]
