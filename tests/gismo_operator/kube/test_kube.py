"""The operator's API module against kmock: paths, verbs, bodies, and error mapping.

kmock does not enforce resourceVersion preconditions, so these tests check that the precondition is
*sent* (the API server enforces it); the retry loop is tested with a stand-in that raises Conflict.
"""

from __future__ import annotations

from typing import Any

import kopf
import pytest
from operator_harness import Cluster

from gismo_operator import kube
from gismo_operator.context import OperatorContext
from gismo_operator.settings import Settings

POOL = {"metadata": {"name": "pool0"}, "spec": {"capacity": "1Gi", "regionSize": "1Gi"}}


def last_request(cluster: Cluster, method: str) -> Any:
    return [r for r in list(cluster.kmock) if r.method == method][-1]


def test_paths() -> None:
    assert kube.POOLS.path() == "/apis/gismo.io/v1alpha1/gismopools"
    assert kube.POOLS.path(name="p", subresource="status") == "/apis/gismo.io/v1alpha1/gismopools/p/status"
    assert kube.SLICES.path() == "/apis/gismo.io/v1alpha1/gismoslices"
    assert kube.SLICES.path("ray", "rc") == "/apis/gismo.io/v1alpha1/namespaces/ray/gismoslices/rc"
    assert kube.PODS.path("ray") == "/api/v1/namespaces/ray/pods"
    assert kube.RAYCLUSTERS.api_version == "ray.io/v1" and kube.PODS.api_version == "v1"
    with pytest.raises(ValueError, match="cluster-scoped"):
        kube.POOLS.path("ray")
    with pytest.raises(ValueError, match="subresource needs an object name"):
        kube.PODS.path("ray", subresource="status")


async def test_crud(cluster: Cluster) -> None:
    api = cluster.api
    created = await api.create(kube.POOLS, POOL)
    assert created["apiVersion"] == "gismo.io/v1alpha1" and created["kind"] == "GismoPool"
    assert (await api.get(kube.POOLS, "pool0"))["spec"]["capacity"] == "1Gi"
    assert await api.get_or_none(kube.POOLS, "nope") is None
    with pytest.raises(kube.NotFound):
        await api.get(kube.POOLS, "nope")
    with pytest.raises(kube.Conflict):
        await api.create(kube.POOLS, POOL)

    await api.create(kube.SLICES, {"metadata": {"name": "a", "namespace": "ray"}, "spec": {"pool": "pool0"}})
    await api.create(kube.SLICES, {"metadata": {"name": "b"}, "spec": {"pool": "pool0"}}, namespace="other")
    assert sorted(s["metadata"]["name"] for s in await api.list(kube.SLICES)) == ["a", "b"]
    assert [s["metadata"]["name"] for s in await api.list(kube.SLICES, "other")] == ["b"]
    with pytest.raises(ValueError, match="needs a namespace"):
        await api.create(kube.SLICES, {"metadata": {"name": "c"}})

    assert await api.delete(kube.SLICES, "a", "ray") is not None
    assert await api.delete(kube.SLICES, "a", "ray") is None  # already gone, missing_ok
    with pytest.raises(kube.NotFound):
        await api.delete(kube.SLICES, "a", "ray", missing_ok=False)


async def test_patch_is_a_merge_patch_with_optional_precondition(cluster: Cluster) -> None:
    api = cluster.api
    await cluster.create(kube.POOLS, POOL)
    patched = await api.patch(kube.POOLS, "pool0", {"spec": {"capacity": "2Gi"}}, resource_version="1000")
    assert patched["spec"] == {"capacity": "2Gi", "regionSize": "1Gi"}
    request = last_request(cluster, "PATCH")
    assert request.headers["Content-Type"] == "application/merge-patch+json"
    assert request.data == {"spec": {"capacity": "2Gi"}, "metadata": {"resourceVersion": "1000"}}

    await api.patch_status(kube.POOLS, "pool0", {"ready": "True"})
    request = last_request(cluster, "PATCH")
    assert request.url.path == "/apis/gismo.io/v1alpha1/gismopools/pool0/status"
    assert request.data == {"status": {"ready": "True"}}
    assert (await api.get(kube.POOLS, "pool0"))["status"] == {"ready": "True"}


async def test_delete_preconditions_are_sent(cluster: Cluster) -> None:
    await cluster.create(kube.POOLS, POOL)
    await cluster.api.delete(kube.POOLS, "pool0", uid="u-1", resource_version="7")
    request = last_request(cluster, "DELETE")
    assert request.data["preconditions"] == {"uid": "u-1", "resourceVersion": "7"}


async def test_events(cluster: Cluster) -> None:
    pool = await cluster.create(kube.POOLS, POOL)
    await cluster.api.post_event(pool, "Warning", "GismoPoolInUse", "first")
    await cluster.api.post_event(pool, "Normal", "Other", "second")
    events = await cluster.events("pool0")
    assert sorted(e["message"] for e in events) == ["first", "second"]
    warning = next(e for e in events if e["reason"] == "GismoPoolInUse")
    assert warning["type"] == "Warning"
    assert warning["metadata"]["namespace"] == "default"  # cluster-scoped object: context namespace
    assert warning["involvedObject"] == {
        "apiVersion": "gismo.io/v1alpha1",
        "kind": "GismoPool",
        "name": "pool0",
        "uid": pool["metadata"]["uid"],
        "resourceVersion": pool["metadata"]["resourceVersion"],
    }
    assert warning["source"] == {"component": "gismo-operator"}


async def test_event_failures_do_not_raise(cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    broken = kube.Client(kopf.ConnectionInfo(server=cluster.api.server + "/nowhere"))
    try:
        await broken.post_event({"metadata": {"name": "x"}}, "Normal", "R", "m")
    finally:
        await broken.close()
    # It did try, and the failure was reported rather than raised.
    assert "could not post event R/x" in caplog.text


async def test_the_contexts_client_needs_login() -> None:
    with pytest.raises(RuntimeError, match="has not logged in yet"):
        OperatorContext(settings=Settings()).client()


async def test_rejected_credentials_trigger_one_fresh_login(unused_tcp_port: int) -> None:
    # A stand-in API server that accepts only the rotated token.
    from aiohttp import web

    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != "Bearer new":
            return web.json_response(
                {"kind": "Status", "reason": "Unauthorized", "message": "token expired"}, status=401
            )
        return web.json_response({"metadata": {"name": "pool0"}})

    app = web.Application()
    app.router.add_get("/apis/gismo.io/v1alpha1/gismopools/pool0", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", unused_tcp_port)
    await site.start()
    server = f"http://127.0.0.1:{unused_tcp_port}"
    logins: list[str] = []

    async def relogin() -> kopf.ConnectionInfo:
        logins.append("again")
        return kopf.ConnectionInfo(server=server, token="new")

    api = kube.Client(kopf.ConnectionInfo(server=server, token="old"), relogin=relogin)
    stale = kube.Client(kopf.ConnectionInfo(server=server, token="old"))
    try:
        assert (await api.get(kube.POOLS, "pool0"))["metadata"]["name"] == "pool0"
        assert logins == ["again"]
        assert seen == ["Bearer old", "Bearer new"]
        with pytest.raises(kube.Unauthorized, match="token expired"):
            await stale.get(kube.POOLS, "pool0")
    finally:
        await api.close()
        await stale.close()
        await runner.cleanup()


async def test_pages_follow_the_continue_token_and_send_the_selectors(unused_tcp_port: int) -> None:
    """A LIST read a page at a time: ``limit`` and every ``continue`` token sent back, the selectors
    kept on every page, and the pages handed out one by one (the sweep drops each before the next)."""
    from aiohttp import web

    items = [{"metadata": {"name": f"r{i}"}} for i in range(7)]
    queries: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        queries.append(dict(request.query))
        start = int(request.query.get("continue") or 0)
        limit = int(request.query["limit"])
        meta = {"continue": str(start + limit)} if start + limit < len(items) else {}
        return web.json_response(
            {"kind": "GismoRegionList", "metadata": meta, "items": items[start : start + limit]}
        )

    app = web.Application()
    app.router.add_get("/apis/gismo.io/v1alpha1/gismoregions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    api = kube.Client(kopf.ConnectionInfo(server=f"http://127.0.0.1:{unused_tcp_port}"))
    try:
        pages = [
            [i["metadata"]["name"] for i in page]
            async for page in api.pages(kube.REGIONS, label_selector="gismo.io/slice=s", page_size=3)
        ]
        assert pages == [["r0", "r1", "r2"], ["r3", "r4", "r5"], ["r6"]]
        assert [q.get("continue") for q in queries] == [None, "3", "6"]
        assert all(q["limit"] == "3" and q["labelSelector"] == "gismo.io/slice=s" for q in queries)
        queries.clear()
        assert len(await api.list(kube.REGIONS, page_size=3)) == 7 and len(queries) == 3
    finally:
        await api.close()
        await runner.cleanup()
