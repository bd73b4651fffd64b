"""RayCluster opt-in against kmock: the slice, its size, resize, release, and the Warning Events."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import kmock
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _ray_fixtures import (
    GI,
    NS,
    SAMPLES,
    declare_resources,
    eventually,
    pool_body,
    raycluster_from_sample,
    running_operator,
)

from gismo_operator import kube

pytestmark = pytest.mark.skipif(not SAMPLES.exists(), reason="KubeRay samples not found")


@pytest.fixture()
def api(kmock: kmock.KubernetesEmulator) -> kmock.KubernetesEmulator:
    declare_resources(kmock)
    return kmock


async def test_sample_cluster_gets_a_slice_sized_for_its_largest_shape(api: kmock.KubernetesEmulator) -> None:
    async with running_operator(api) as op:
        await op.client.create(kube.POOLS, pool_body())
        rc = raycluster_from_sample()  # head + workergroup maxReplicas 5
        await op.client.create(kube.RAYCLUSTERS, rc, namespace=NS)
        body: dict[str, Any] = await eventually(lambda: op.slice(rc["metadata"]["name"]))
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
        assert await eventually(lambda: op.events("GismoSliceReserved"))
