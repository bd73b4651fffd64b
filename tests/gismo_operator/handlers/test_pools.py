"""GismoPool reconciliation, the validating webhook, and the deletion guard, against kmock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from operator_harness import Cluster, OperatorHandle
from prometheus_client import REGISTRY

from gismo_operator import kube

GI = 1 << 30
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "gismopool.yaml"


def example_pool(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    body["spec"].update(spec)
    return body


def a_slice(
    name: str, pool: str, offset: int, size: int, namespace: str = "ray", regions: int = 0
) -> dict[str, Any]:
    return {
        "apiVersion": "gismo.io/v1alpha1",
        "kind": "GismoSlice",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "pool": pool,
            "rayCluster": name,
            "offset": offset,
            "size": size,
            "regionSize": GI,
            "regions": [{"index": i, "state": "Bound", "podName": f"{name}-{i}"} for i in range(regions)],
        },
    }


def condition(pool: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for cond in ((pool or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


async def test_valid_pool_becomes_ready_with_right_figures(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    await cluster.create(kube.SLICES, a_slice("alpha", "pool0", 0, 4 * GI, regions=2))
    await cluster.create(kube.SLICES, a_slice("beta", "pool0", 8 * GI, 2 * GI, namespace="team-b", regions=1))
    await cluster.create(kube.SLICES, a_slice("other", "pool9", 0, 16 * GI))
    await cluster.create(kube.POOLS, example_pool())

    async def ready() -> dict[str, Any] | None:
        pool = await cluster.get(kube.POOLS, "pool0")
        cond = condition(pool, "Ready")
        return (
            pool if cond and cond["status"] == "True" and pool and pool["status"].get("slices") == 2 else None
        )

    pool = await cluster.wait_for(ready, "pool0 to be Ready with 2 slices")
    status = pool["status"]
    assert status["capacity"] == "64Gi"
    assert status["allocated"] == "6Gi"
    assert status["free"] == "58Gi"
    assert status["largestFreeExtent"] == "54Gi"
    assert status["capacityBytes"] == 64 * GI
    assert status["allocatedBytes"] == 6 * GI
    assert status["freeBytes"] == 58 * GI
    assert status["largestFreeExtentBytes"] == 54 * GI
    assert status["regions"] == 3
    assert status["ready"] == "True"
    assert status["observedGeneration"] == 1
    assert condition(pool, "Ready")["reason"] == "Available"  # type: ignore[index]
    degraded = condition(pool, "Degraded")
    assert degraded is not None and degraded["status"] == "False"
    assert REGISTRY.get_sample_value("gismo_pool_allocated_bytes", {"pool": "pool0"}) == 6 * GI

    # A new slice changes the figures without touching the pool.
    await cluster.create(kube.SLICES, a_slice("gamma", "pool0", 4 * GI, 4 * GI))

    async def refreshed() -> dict[str, Any] | None:
        p = await cluster.get(kube.POOLS, "pool0")
        return p if p and p["status"].get("allocatedBytes") == 10 * GI else None

    pool = await cluster.wait_for(refreshed, "pool0 to count slice gamma")
    assert pool["status"]["slices"] == 3
    assert pool["status"]["largestFreeExtent"] == "54Gi"


async def test_overlapping_slices_degrade_the_pool(cluster: Cluster, operator: OperatorHandle) -> None:
    await cluster.create(kube.SLICES, a_slice("one", "pool0", 0, 4 * GI))
    await cluster.create(kube.SLICES, a_slice("two", "pool0", 2 * GI, 4 * GI))
    await cluster.create(kube.POOLS, example_pool())

    async def degraded() -> dict[str, Any] | None:
        cond = condition(await cluster.get(kube.POOLS, "pool0"), "Degraded")
        return cond if cond and cond["status"] == "True" else None

    cond = await cluster.wait_for(degraded, "pool0 to be Degraded")
    assert cond["reason"] == "InconsistentSlices"
    assert "ray/one" in cond["message"] and "overlaps ray/two" in cond["message"]
    pool = await cluster.get(kube.POOLS, "pool0")
    assert pool is not None and pool["status"]["allocatedBytes"] == 6 * GI  # overlap counted once


async def test_invalid_pool_is_refused_by_the_webhook(operator: OperatorHandle) -> None:
    bad = example_pool(capacity="10Gi", regionSize="3Gi")
    response = await operator.admit("validate-gismopool", resource=kube.POOLS, operation="CREATE", obj=bad)
    assert response["allowed"] is False
    assert response["status"]["code"] == 422
    assert "spec.capacity" in response["status"]["message"]
    assert "not a multiple of regionSize" in response["status"]["message"]

    too_big = example_pool(capacity="1Gi", regionSize="2Gi")
    response = await operator.admit(
        "validate-gismopool", resource=kube.POOLS, operation="CREATE", obj=too_big
    )
    assert response["allowed"] is False
    assert "spec.regionSize" in response["status"]["message"]
    assert "larger than capacity" in response["status"]["message"]

    garbage = example_pool(capacity="lots")
    response = await operator.admit(
        "validate-gismopool", resource=kube.POOLS, operation="CREATE", obj=garbage
    )
    assert response["allowed"] is False
    assert "spec.capacity: 'lots' is not a byte quantity" in response["status"]["message"]

    good = example_pool()
    response = await operator.admit("validate-gismopool", resource=kube.POOLS, operation="CREATE", obj=good)
    assert response["allowed"] is True


async def test_webhook_refuses_shrinking_and_backend_change_while_in_use(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    old = await cluster.create(kube.POOLS, example_pool())
    await cluster.create(kube.SLICES, a_slice("alpha", "pool0", 24 * GI, 8 * GI))

    shrunk = example_pool(capacity="16Gi")
    response = await operator.admit(
        "validate-gismopool", resource=kube.POOLS, operation="UPDATE", obj=shrunk, old=old
    )
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert "spec.capacity: 16Gi is below what is allocated" in message
    assert "ray/alpha" in message

    # Shrinking down to the end of the last slice is fine.
    fits = example_pool(capacity="32Gi")
    response = await operator.admit(
        "validate-gismopool", resource=kube.POOLS, operation="UPDATE", obj=fits, old=old
    )
    assert response["allowed"] is True

    moved = example_pool(backend={"type": "devdax", "path": "/dev/dax0.0"})
    response = await operator.admit(
        "validate-gismopool", resource=kube.POOLS, operation="UPDATE", obj=moved, old=old
    )
    assert response["allowed"] is False
    assert "spec.backend: cannot change" in response["status"]["message"]

    await cluster.delete(kube.SLICES, "alpha", "ray")
    response = await operator.admit(
        "validate-gismopool", resource=kube.POOLS, operation="UPDATE", obj=moved, old=old
    )
    assert response["allowed"] is True


async def test_pool_with_slices_is_not_deleted_until_they_are_gone(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    await cluster.create(kube.POOLS, example_pool())
    await cluster.create(kube.SLICES, a_slice("alpha", "pool0", 0, 4 * GI))
    await cluster.create(kube.SLICES, a_slice("beta", "pool0", 4 * GI, 4 * GI, namespace="team-b"))

    async def has_finalizer() -> bool:
        pool = await cluster.get(kube.POOLS, "pool0")
        return bool(pool and "gismo.io/finalizer" in pool["metadata"].get("finalizers", []))

    await cluster.wait_for(has_finalizer, "the operator's finalizer on pool0")
    await cluster.delete(kube.POOLS, "pool0")

    warnings = await cluster.wait_for(
        lambda: cluster.events("pool0", "GismoPoolInUse"), "a GismoPoolInUse event about pool0"
    )
    assert warnings[0]["type"] == "Warning"
    assert warnings[0]["metadata"]["namespace"] == operator.settings.namespace  # the operator's own
    assert "ray/alpha" in warnings[0]["message"] and "team-b/beta" in warnings[0]["message"]
    pool = await cluster.get(kube.POOLS, "pool0")
    assert pool is not None, "the pool must stay while slices use it"
    assert pool["metadata"].get("deletionTimestamp")

    await cluster.delete(kube.SLICES, "alpha", "ray")
    await cluster.delete(kube.SLICES, "beta", "team-b")

    async def gone() -> bool:
        return await cluster.get(kube.POOLS, "pool0") is None

    await cluster.wait_for(gone, "pool0 to be deleted after its slices")


async def test_unused_pool_is_deleted(cluster: Cluster, operator: OperatorHandle) -> None:
    await cluster.create(kube.POOLS, example_pool())

    async def has_finalizer() -> bool:
        pool = await cluster.get(kube.POOLS, "pool0")
        return bool(pool and "gismo.io/finalizer" in pool["metadata"].get("finalizers", []))

    await cluster.wait_for(has_finalizer, "the operator's finalizer on pool0")
    await cluster.delete(kube.POOLS, "pool0")

    async def gone() -> bool:
        return await cluster.get(kube.POOLS, "pool0") is None

    await cluster.wait_for(gone, "pool0 to be deleted")
    assert await cluster.events("pool0", "GismoPoolInUse") == []


async def test_webhook_never_blocks_metadata_only_updates(cluster: Cluster, operator: OperatorHandle) -> None:
    # A pool that is already too small for its slices (changed while the webhook was down) must
    # still accept finalizer/annotation changes, or it could never be deleted.
    await cluster.create(kube.SLICES, a_slice("alpha", "pool0", 24 * GI, 8 * GI))
    small = example_pool(capacity="16Gi")
    relabelled = {**small, "metadata": {**small["metadata"], "labels": {"x": "y"}, "finalizers": []}}
    response = await operator.admit(
        "validate-gismopool", resource=kube.POOLS, operation="UPDATE", obj=relabelled, old=small
    )
    assert response["allowed"] is True
    response = await operator.admit(
        "validate-gismopool",
        resource=kube.POOLS,
        operation="UPDATE",
        obj=example_pool(capacity="20Gi"),
        old=small,
    )
    assert response["allowed"] is False


async def test_slice_moving_or_going_updates_both_pools(cluster: Cluster, operator: OperatorHandle) -> None:
    await cluster.create(kube.POOLS, example_pool())
    other = example_pool()
    other["metadata"]["name"] = "pool1"
    await cluster.create(kube.POOLS, other)
    await cluster.create(kube.SLICES, a_slice("alpha", "pool0", 0, 4 * GI))

    async def allocated(pool: str, expected: int) -> bool:
        body = await cluster.get(kube.POOLS, pool)
        return bool(body and (body.get("status") or {}).get("allocatedBytes") == expected)

    await cluster.wait_for(lambda: allocated("pool0", 4 * GI), "pool0 to count alpha")
    await cluster.patch(kube.SLICES, "alpha", {"spec": {"pool": "pool1"}}, "ray")
    await cluster.wait_for(lambda: allocated("pool1", 4 * GI), "pool1 to count alpha")
    await cluster.wait_for(lambda: allocated("pool0", 0), "pool0 to forget alpha")
    await cluster.delete(kube.SLICES, "alpha", "ray")
    await cluster.wait_for(lambda: allocated("pool1", 0), "pool1 to forget alpha")
