"""The admission's failure paths, at unit level (the webhook's ``admit_safely`` over a ledger on the
fake API of :mod:`ledger_fakes`): when the region write fails, keeps being refused, or stalls past
the admission budget, the pod is admitted skipped with the reason, carries no region annotation
and no ``GISMO_*`` env, and nothing stays reserved (in the API or in the ledger's free set). And
durability at the answer: an admission that was answered with a region is durable at that instant."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import pytest
from ledger_fakes import NAME, NS, Clock, FakeApi

from gismo.contract import ANN_REGION
from gismo_operator import context as context_module
from gismo_operator import kube
from gismo_operator.context import OperatorContext
from gismo_operator.handlers import raypods
from gismo_operator.ledger.regions import AlreadyExists, RegionLedger
from gismo_operator.testing import kuberay_sim

TTL = dt.timedelta(seconds=30)
POOL = {
    "apiVersion": "gismo.io/v1alpha1",
    "kind": "GismoPool",
    "metadata": {"name": "pool-a", "uid": "pool-uid"},
    "spec": {
        "capacity": 64 << 20,
        "regionSize": 1 << 20,
        "backend": {"type": "shm", "path": "/dev/shm/gismo/pool-a"},
        "agent": {"image": "gismo-agent:test"},
    },
}


@pytest.fixture()
def api() -> Iterator[FakeApi]:
    fake = FakeApi()
    fake.add_slice(4)
    previous = context_module._current
    ctx = OperatorContext()
    ctx._ledger = RegionLedger(fake, clock=Clock(), reservation_ttl=TTL)
    ctx.remember_pool(POOL, "pool-a")
    # These tests are about the ledger: a node advertising the pool's device-plugin resource is taken
    # as already listed (the cache the webhook reads; there is no node API here).
    ctx.advertised = (time.monotonic(), {"gismo.io/pool-a": [{}]})
    context_module.install(ctx)
    yield fake
    context_module._current = previous


def ray_pod() -> dict[str, Any]:
    rc = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": NAME, "namespace": NS, "uid": "rc-uid"},
        "spec": {
            "headGroupSpec": {"template": {"spec": {"containers": [{"name": "ray-head", "image": "ray"}]}}},
            "workerGroupSpecs": [
                {
                    "groupName": "workers",
                    "replicas": 1,
                    "maxReplicas": 3,
                    "template": {"spec": {"containers": [{"name": "ray-worker", "image": "ray"}]}},
                }
            ],
        },
    }
    return kuberay_sim.pod_for(rc, "worker", rc["spec"]["workerGroupSpecs"][0])


def assert_skipped_without_gismo(pod: dict[str, Any], admitted: dict[str, Any] | None, reason: str) -> None:
    assert admitted is not None
    annotations = admitted["metadata"].get("annotations") or {}
    assert reason in annotations.get("gismo.io/skipped", ""), annotations
    assert ANN_REGION not in annotations
    assert "GISMO_" not in str(admitted["spec"])
    assert "gismo-agent" not in str(admitted["spec"])
    unmarked, original = copy.deepcopy(admitted), copy.deepcopy(pod)
    unmarked["metadata"]["annotations"].pop("gismo.io/skipped")
    unmarked["metadata"].setdefault("annotations", {})
    original["metadata"].setdefault("annotations", {})
    assert unmarked == original  # nothing else changed


def nothing_reserved(api: FakeApi) -> None:
    """Nothing held in the API, and every region free again in the ledger's set."""
    assert api.holders() == {}
    state = context_module.current().ledger._states.get((NS, NAME))
    assert state is None or len(state.free) == 4


async def test_an_answered_admission_is_durable_at_the_instant_of_its_answer(api: FakeApi) -> None:
    async def admit_and_probe() -> tuple[int, bool]:
        admitted = await raypods.admit_safely(ray_pod(), dryrun=False)
        assert admitted is not None
        index = int(admitted["metadata"]["annotations"][ANN_REGION])
        return index, index in api.holders()  # read with no await after the answer

    results = await asyncio.gather(*(admit_and_probe() for _ in range(4)))
    assert sorted(i for i, _ in results) == [0, 1, 2, 3]
    assert all(durable for _, durable in results)


async def test_the_region_write_failing_admits_the_pod_skipped_with_nothing_reserved(api: FakeApi) -> None:
    def fail() -> None:
        raise kube.ApiError(500, "InternalError", "etcd unavailable", "POST", "/gismoregions")

    api.hooks["create_region"] = fail
    pod = ray_pod()
    admitted = await raypods.admit_safely(pod, dryrun=False)
    assert_skipped_without_gismo(pod, admitted, "operator error: ApiError")
    nothing_reserved(api)


async def test_the_write_failing_after_it_was_stored_gives_the_region_back(api: FakeApi) -> None:
    """The create was applied but the next call (the fence read) failed: the region is deleted
    again (its preconditions name exactly the object created), not left for the TTL."""

    def fail() -> None:
        raise kube.ApiError(503, "ServiceUnavailable", "try again", "GET", "/gismoslices")

    calls = {"n": 0}

    def fail_the_fence() -> None:
        calls["n"] += 1
        if calls["n"] > 1:  # the first read is the ledger's load; the second is the fence
            fail()

    api.hooks["read_slice"] = fail_the_fence
    pod = ray_pod()
    admitted = await raypods.admit_safely(pod, dryrun=False)
    assert_skipped_without_gismo(pod, admitted, "operator error: ApiError")
    await context_module.current().ledger.drain()
    nothing_reserved(api)


async def test_regions_refused_for_ever_admit_the_pod_skipped_not_a_loop(api: FakeApi) -> None:
    """Every create answered AlreadyExists (taken, says the API), while every listing shows them
    free: the ledger gives up after its attempts (fewer than the slice's 64 regions) and the pod
    starts without Gismo."""
    api.slices[NS, NAME]["spec"]["size"] = 64 << 20

    def taken() -> None:
        raise AlreadyExists("taken")

    api.hooks["create_region"] = taken
    pod = ray_pod()
    admitted = await raypods.admit_safely(pod, dryrun=False)
    assert_skipped_without_gismo(pod, admitted, "operator error: TooManyConflicts")
    assert api.holders() == {}


async def test_a_write_stalling_past_the_budget_admits_the_pod_skipped_with_nothing_reserved(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(raypods, "ADMISSION_BUDGET_SECONDS", 0.05)
    release = asyncio.Event()
    original = api.create_region

    async def stall(namespace: str, body: Any) -> dict[str, Any]:
        await release.wait()  # never, within the budget
        return await original(namespace, body)

    api.create_region = stall  # type: ignore[method-assign]
    pod = ray_pod()
    admitted = await raypods.admit_safely(pod, dryrun=False)
    assert_skipped_without_gismo(pod, admitted, "operator error: TimeoutError")
    nothing_reserved(api)
    # The next admission, with the API healthy again, gets region 0: nothing was left taken.
    api.create_region = original  # type: ignore[method-assign]
    monkeypatch.setattr(raypods, "ADMISSION_BUDGET_SECONDS", 8.0)
    again = await raypods.admit_safely(ray_pod(), dryrun=False)
    assert again is not None and again["metadata"]["annotations"][ANN_REGION] == "0"


async def test_a_fence_read_stalling_past_the_budget_leaves_no_region_behind(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stalled after the create was stored: the admission is cut by its budget, and the region it
    created is deleted in the background (the ledger's cancellation), so nothing stays reserved."""
    await context_module.current().ledger.peek(NS, NAME)  # loaded: the next read is a fence
    monkeypatch.setattr(raypods, "ADMISSION_BUDGET_SECONDS", 0.05)
    original = api.read_slice
    stalled = asyncio.Event()

    async def stall(namespace: str, name: str) -> dict[str, Any] | None:
        stalled.set()
        await asyncio.sleep(3600)  # a read that never answers within the admission budget
        return await original(namespace, name)

    api.read_slice = stall  # type: ignore[method-assign]
    pod = ray_pod()
    admitted = await raypods.admit_safely(pod, dryrun=False)
    assert stalled.is_set()
    assert_skipped_without_gismo(pod, admitted, "operator error: TimeoutError")
    api.read_slice = original  # type: ignore[method-assign]
    await context_module.current().ledger.close()  # the stalled read ends with the process
    nothing_reserved(api)
