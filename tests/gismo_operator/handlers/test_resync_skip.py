"""Which RayClusters the sweep's re-reconcile skips (:func:`rayclusters.settled_with`).

With 1,000 opted-in clusters, a forced reconcile of each (a GET of its slice, a shape check) was
most of a sweep round. A cluster is skipped only when a forced reconcile would find nothing to do;
each test below changes one thing a reconcile depends on and expects the cluster not skipped.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from gismo_operator import context as context_module
from gismo_operator.context import OperatorContext
from gismo_operator.handlers import sweep
from gismo_operator.handlers.rayclusters import settled_with, settlement

NS, NAME, UID = "ray", "rc", "rc-uid"


@pytest.fixture()
def ctx() -> Iterator[OperatorContext]:
    previous = context_module._current
    runtime = OperatorContext()
    runtime.remember_pool({"metadata": {"name": "pool-a", "generation": 1}}, "pool-a")
    context_module.install(runtime)
    yield runtime
    context_module._current = previous


def raycluster(generation: int = 1, **annotations: str) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": NS,
            "name": NAME,
            "uid": UID,
            "generation": generation,
            "annotations": {"gismo.io/pool": "pool-a", **annotations},
        },
        "spec": {},
    }


def listed(pool: str = "pool-a", owner: str = UID, deleting: bool = False) -> dict[tuple[str, str], Any]:
    meta: dict[str, Any] = {
        "namespace": NS,
        "name": NAME,
        "ownerReferences": [{"kind": "RayCluster", "name": NAME, "uid": owner}],
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-12-01T00:00:00Z"
    return {(NS, NAME): {"metadata": meta, "spec": {"pool": pool}}}


def settle(ctx: OperatorContext, rc: dict[str, Any]) -> None:
    ctx.settled[UID] = settlement(rc["metadata"])


def test_a_settled_cluster_whose_slice_is_listed_is_skipped(ctx: OperatorContext) -> None:
    rc = raycluster()
    settle(ctx, rc)
    assert settled_with(rc, listed())


def test_a_cluster_never_settled_is_reconciled(ctx: OperatorContext) -> None:
    assert not settled_with(raycluster(), listed())


@pytest.mark.parametrize(
    "slices",
    [
        pytest.param({}, id="slice-not-listed"),
        pytest.param(listed(owner="other-uid"), id="slice-of-an-earlier-cluster"),
        pytest.param(listed(deleting=True), id="slice-being-deleted"),
        pytest.param(listed(pool="pool-b"), id="slice-in-another-pool"),
    ],
)
def test_a_settled_cluster_is_reconciled_when_its_listed_slice_is_not_right(
    ctx: OperatorContext, slices: dict[tuple[str, str], Any]
) -> None:
    rc = raycluster()
    settle(ctx, rc)
    assert not settled_with(rc, slices)


def test_a_new_generation_of_the_cluster_is_reconciled(ctx: OperatorContext) -> None:
    settle(ctx, raycluster(generation=1))
    assert not settled_with(raycluster(generation=2), listed())


def test_a_changed_gismo_annotation_is_reconciled(ctx: OperatorContext) -> None:
    settle(ctx, raycluster())
    assert not settled_with(raycluster(**{"gismo.io/region-size": "2Gi"}), listed())
    other = raycluster(**{"example.com/unrelated": "x"})  # not a gismo.io annotation: still settled
    assert settled_with(other, listed())


def test_a_new_generation_of_the_pool_is_reconciled_but_not_a_status_change(ctx: OperatorContext) -> None:
    rc = raycluster()
    settle(ctx, rc)
    ctx.remember_pool({"metadata": {"name": "pool-a", "generation": 1, "resourceVersion": "9"}}, "pool-a")
    assert settled_with(rc, listed())  # its status was written: same generation
    ctx.remember_pool({"metadata": {"name": "pool-a", "generation": 2}}, "pool-a")
    assert not settled_with(rc, listed())


def _pod(annotations: dict[str, str], containers: list[str], init: list[str], phase: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "namespace": NS,
            "name": "rc-worker-x",
            "uid": "pod-uid",
            "labels": {"ray.io/cluster": NAME, "ray.io/is-ray-node": "yes"},
            "annotations": annotations,
            "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:status": {}}}],
        },
        "spec": {
            "nodeName": "node-1",
            "containers": [
                {"name": n, "image": "ray", "env": [{"name": "A", "value": "1"}]} for n in containers
            ],
            "initContainers": [{"name": n, "image": "gismo"} for n in init],
        },
        "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True"}]},
    }


@pytest.mark.parametrize("phase", ["Running", "Succeeded"])
@pytest.mark.parametrize(
    ("annotations", "containers", "init"),
    [
        pytest.param(
            {"gismo.io/region": "3", "gismo.io/region-offset": "3145728"}, ["ray-worker"], [], id="region"
        ),
        pytest.param({}, ["ray-worker"], [], id="never-handled"),
        pytest.param({}, ["ray-worker", "gismo-agent"], [], id="agent-container"),
        pytest.param({}, ["ray-worker"], ["gismo-agent"], id="agent-init-container"),
        pytest.param({"gismo.io/skipped": "slice full"}, ["ray-worker"], [], id="skipped"),
    ],
)
def test_the_round_keeps_what_its_readers_use_of_a_listed_pod(
    annotations: dict[str, str], containers: list[str], init: list[str], phase: str
) -> None:
    from gismo_operator.core.assignment import PodClaim
    from gismo_operator.core.notinjected import not_injected
    from gismo_operator.injection.pod import is_injected

    pod = _pod(annotations, containers, init, phase)
    kept = sweep.pod_essentials(copy.deepcopy(pod))
    assert "managedFields" not in kept["metadata"]
    assert all(set(c) == {"name"} for c in kept["spec"]["containers"] + kept["spec"]["initContainers"])
    assert PodClaim.from_pod(kept) == PodClaim.from_pod(pod)
    assert is_injected(kept) == is_injected(pod)
    assert not_injected([kept], [(NS, NAME)]) == {
        (NS, NAME): [kept] if not_injected([pod], [(NS, NAME)])[NS, NAME] else []
    }
