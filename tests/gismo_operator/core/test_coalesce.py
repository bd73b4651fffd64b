"""Coalesced background refreshes (:mod:`gismo_operator.core.coalesce`) and the pool status refresh on it.

No timing assertions: every test waits on events and counts runs; delays are only made short so
the tests are quick.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from gismo_operator import kube
from gismo_operator.context import OperatorContext, current, install
from gismo_operator.core.coalesce import Coalescer
from gismo_operator.handlers import pools
from gismo_operator.settings import Settings

GI = 1 << 30


class Blocking:
    """A run function that records each run and, while ``gate`` is closed, blocks inside it."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.fail_next = 0

    async def __call__(self, key: str) -> None:
        self.started.append(key)
        self.entered.set()
        await self.gate.wait()
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("API unavailable")


async def test_requests_during_a_run_give_exactly_one_more_run() -> None:
    fn = Blocking()
    coalescer: Coalescer[str] = Coalescer(fn, delay=0)
    coalescer.request("p")
    await fn.entered.wait()  # the first run is executing (and blocked)
    for _ in range(50):
        coalescer.request("p")
    assert fn.started == ["p"]
    fn.gate.set()
    await coalescer.idle()
    assert fn.started == ["p", "p"]
    assert not coalescer.busy("p")


async def test_requests_while_waiting_to_start_merge_into_that_run() -> None:
    fn = Blocking()
    fn.gate.set()
    coalescer: Coalescer[str] = Coalescer(fn, delay=0.01)
    for _ in range(20):
        coalescer.request("p")
    await coalescer.idle()
    assert fn.started == ["p"]


async def test_keys_are_independent() -> None:
    fn = Blocking()
    fn.gate.set()
    coalescer: Coalescer[str] = Coalescer(fn, delay=0)
    for key in ("a", "b", "a", "c", "b"):
        coalescer.request(key)
    await coalescer.idle()
    assert sorted(fn.started) == ["a", "b", "c"]


async def test_a_failed_run_is_retried() -> None:
    fn = Blocking()
    fn.gate.set()
    fn.fail_next = 2
    coalescer: Coalescer[str] = Coalescer(fn, delay=0.001, max_backoff=0.01)
    coalescer.request("p")
    await coalescer.idle()
    assert fn.started == ["p", "p", "p"]  # two failures, then a success ends it


async def test_close_cancels_scheduled_runs() -> None:
    fn = Blocking()
    coalescer: Coalescer[str] = Coalescer(fn, delay=0)
    coalescer.request("p")
    await fn.entered.wait()
    coalescer.request("p")
    await coalescer.close()
    assert not coalescer.busy("p")
    assert fn.started == ["p"]


# ------------------------------------------------------------------------------------------------
# The pool status refresh, coalesced, over a fake API


class FakeApi:
    """The three calls :func:`pools.refresh_pool` makes; LIST blocks while ``gate`` is closed."""

    def __init__(self) -> None:
        self.pool: dict[str, Any] = {
            "apiVersion": "gismo.io/v1alpha1",
            "kind": "GismoPool",
            "metadata": {"name": "p", "uid": "pool-uid", "resourceVersion": "1", "generation": 1},
            "spec": {
                "capacity": "64Gi",
                "regionSize": "1Gi",
                "backend": {"type": "shm", "path": "/dev/shm/p"},
            },
        }
        self.slices: dict[str, dict[str, Any]] = {}
        self.rv = 1
        self.lists = 0
        self.status_writes = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.listing = asyncio.Event()

    def put_slice(self, name: str, offset: int, size: int) -> None:
        self.rv += 1
        self.slices[name] = {
            "metadata": {
                "name": name,
                "namespace": "ray",
                "uid": f"uid-{name}",
                "resourceVersion": str(self.rv),
            },
            "spec": {
                "pool": "p",
                "rayCluster": name,
                "offset": offset,
                "size": size,
                "regionSize": GI,
                "regions": [],
            },
        }

    async def get_or_none(self, resource: kube.Resource, name: str, namespace: str | None = None) -> Any:
        assert resource is kube.POOLS and name == "p"
        return copy.deepcopy(self.pool)

    async def list(self, resource: kube.Resource, namespace: str | None = None, **_: Any) -> list[Any]:
        assert resource is kube.SLICES
        self.lists += 1
        snapshot = copy.deepcopy(list(self.slices.values()))  # what the API holds when asked
        self.listing.set()
        await self.gate.wait()
        return snapshot

    async def patch_status(
        self, resource: kube.Resource, name: str, status: dict[str, Any], namespace: str | None = None
    ) -> Any:
        self.status_writes += 1
        self.pool["status"] = copy.deepcopy(status)
        return copy.deepcopy(self.pool)


@pytest.fixture
def fake_api(monkeypatch: pytest.MonkeyPatch) -> Any:
    api = FakeApi()
    # A fresh context whose client is the fake (the context's only API client).
    install(OperatorContext(settings=Settings(), api=api))  # type: ignore[arg-type]
    monkeypatch.setattr(pools, "REFRESH_DELAY", 0.001)
    return api


async def test_slice_events_during_a_refresh_cost_one_more_refresh_and_converge(fake_api: FakeApi) -> None:
    fake_api.put_slice("a", 0, 4 * GI)
    fake_api.gate.clear()
    pools.request_refresh("p")
    await fake_api.listing.wait()  # the first refresh has listed (one slice) and is blocked
    for i in range(30):  # 30 changes arrive meanwhile, each with its event
        fake_api.put_slice(f"s{i}", (8 + i) * GI, GI)
        pools.request_refresh("p")
    assert fake_api.lists == 1
    fake_api.gate.set()
    await pools.refresher().idle()
    assert fake_api.lists == 2  # exactly one more refresh for the 30 events
    status = fake_api.pool["status"]
    assert status["slices"] == 31
    assert status["allocatedBytes"] == 4 * GI + 30 * GI
    assert status["freeBytes"] == 64 * GI - 34 * GI
    await pools.refresher().close()


async def test_an_unchanged_slice_is_not_validated_again(
    fake_api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_api.put_slice("a", 0, 4 * GI)
    fake_api.put_slice("b", 4 * GI, 4 * GI)
    validated: list[str] = []
    real = pools.status.slice_view

    def counting(body: Any) -> Any:
        validated.append(body["metadata"]["name"])
        return real(body)

    monkeypatch.setattr(pools.status, "slice_view", counting)
    await pools.refresh_pool("p")
    fake_api.put_slice("b", 4 * GI, 8 * GI)  # b changes (new resourceVersion), a does not
    await pools.refresh_pool("p")
    assert sorted(validated) == ["a", "b", "b"]
    assert fake_api.pool["status"]["allocatedBytes"] == 12 * GI


# ------------------------------------------------------------------------------------------------
# The GismoSlice watch that requests the refreshes


def slice_body(name: str, pool: str, rv: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ray", "resourceVersion": rv}, "spec": {"pool": pool}}


async def test_a_refresh_reads_the_watch_index_and_never_lists(fake_api: FakeApi) -> None:
    fake_api.put_slice("a", 0, 4 * GI)
    index = current().pool_index
    index.replace(list(fake_api.slices.values()))  # what the watch's first listing does
    fake_api.put_slice("b", 4 * GI, 8 * GI)
    index.apply("ADDED", fake_api.slices["b"])  # and its event
    await pools.refresh_pool("p")
    assert fake_api.lists == 0
    assert (fake_api.pool["status"]["slices"], fake_api.pool["status"]["allocatedBytes"]) == (2, 12 * GI)
    index.synced = False  # the watch failed: refreshes list until it has listed again
    fake_api.put_slice("c", 12 * GI, GI)
    await pools.refresh_pool("p")
    assert fake_api.lists == 1
    assert fake_api.pool["status"]["slices"] == 3


class WatchApi:
    """list_with_version + watch: scripted streams; each watch call takes the next script."""

    def __init__(self, lists: list[Any], streams: list[list[dict[str, Any]]]) -> None:
        self.lists, self.streams = lists, streams
        self.watched_from: list[str] = []
        self.done = asyncio.Event()

    async def list_with_version(self, resource: kube.Resource) -> Any:
        return self.lists.pop(0)

    async def watch(self, resource: kube.Resource, *, resource_version: str = "") -> Any:
        self.watched_from.append(resource_version)
        if not self.streams:
            self.done.set()
            await asyncio.Event().wait()  # hold the last watch open
        for event in self.streams.pop(0):
            yield event


async def test_slice_watch_requests_refreshes_and_relists_after_410(monkeypatch: pytest.MonkeyPatch) -> None:
    api = WatchApi(
        lists=[
            ([slice_body("a", "p0", "5"), slice_body("b", "p1", "6")], "10"),
            ([slice_body("a", "p0", "20")], "21"),  # b was deleted while we were away
        ],
        streams=[
            [
                {"type": "MODIFIED", "object": slice_body("a", "p2", "11")},  # moved p0 -> p2
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}},
                {"type": "ERROR", "object": {"code": 410, "reason": "Expired"}},
            ],
        ],
    )
    requested: list[str] = []
    install(OperatorContext(settings=Settings(), api=api))  # type: ignore[arg-type]
    monkeypatch.setattr(pools, "request_refresh", requested.append)
    monkeypatch.setattr(pools, "WATCH_BACKOFF", 0.001)
    task = asyncio.create_task(pools.watch_slices())
    await asyncio.wait_for(api.done.wait(), 10)  # a guard against hangs, not a timing assertion
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert api.watched_from == ["10", "21"]  # from the list's version, then the relist's
    assert requested[:2] == ["p0", "p1"]  # first list
    assert requested[2:4] == ["p2", "p0"]  # the move
    assert set(requested[4:]) == {"p2", "p1", "p0"}  # relist: known pools and the listed ones
