"""The chart's ClusterRole against the API calls the operator really makes (issue 6).

One end-to-end scenario runs the real operator (the harness's ``operator`` fixture: kopf and every
handler module, webhooks over HTTPS) against kmock and goes through every code path that talks to
the API: a GismoPool (with a namespaceSelector, so the Namespace is read) created, updated and
deleted while in use (finalizer path, GismoPoolInUse Warning) and then released; a KubeRay sample
RayCluster opted in with ``gismo.io/pool``; a head and a worker pod admitted through the
``mutate-raypod`` webhook (AdmissionReview v1 over HTTPS), created on a node (regions bound), the
worker deleted (region released); a region reserved by another operator replica (read, bound,
released); sweep rounds (interval shortened below); the RayCluster deleted
(slice deleted, held by its finalizer until the head pod goes); Events posted on the way.
Two things a real API server has and the harness's kmock lacks are added on the test side (neither
makes a request): apiextensions.k8s.io CustomResourceDefinitions, which kopf lists and watches
(:func:`crds_served`), and an answer to GET of the Namespace (kmock reads that path as a
namespace prefix).

Then every request kmock received from the operator is mapped to what kube-apiserver's RBAC
authorizer would check, (apiGroup, resource[/subresource], verb): GET of a collection is ``list``,
with ``watch=true`` ``watch``, GET of a named object ``get``, POST ``create``, PATCH ``patch``, PUT
``update``, DELETE ``delete`` (``deletecollection`` without a name). Discovery (``/api``,
``/apis``, ``/apis/<group>[/<version>]``, ``/version``) is made of non-resource URLs, granted to
every authenticated user by the default ``system:discovery`` ClusterRole: they are listed apart and
need no rule. The chart's ClusterRole (``helm template``, default values) must then (1) allow every
recorded call and (2) grant nothing the scenario did not use, except :data:`UNREACHABLE`.

Telling the operator's requests from the test's own: the test talks to kmock only through its own
:class:`gismo_operator.kube.Client` whose credentials carry a bearer token, :data:`TEST_TOKEN`, that
the operator never sends (the harness logs the operator in without credentials), and kmock records
every request's headers. A request is the operator's iff it lacks that ``Authorization`` header.
This is what an API server does (the identity travels with the request); unlike snapshotting the
log around each test-side call, it cannot misattribute operator requests that run concurrently
with a test call (watch events make the operator act at any moment). The test checks that it sees
its own marked requests, so a change that stopped the marking would fail rather than pass silently.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import kmock
import kopf
import pytest
from _ray_fixtures import advertising_node, kuberay_pod, pool_body, raycluster_from_sample
from operator_harness import GISMO_CRDS, KUBERAY_CRD, VERBS, Cluster, OperatorHandle, _load_yaml

from gismo_operator import context as context_module
from gismo_operator import kube
from gismo_operator.handlers import sweep as sweep_module
from gismo_operator.testing import embedded as embedded_module
from gismo_operator.testing import kuberay_sim

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "chart"))
import chartkit  # tests/chart is not a package: imported from its folder

#: The test client's bearer token: every request carrying it is the test's, not the operator's.
TEST_TOKEN = "gismo-rbac-test-client"

NS = "default"
POOL = "pool-a"
CLUSTER = "raycluster-kuberay"
SWEEP_INTERVAL = 0.3

#: What the ClusterRole grants that no kmock run can reach, each with the reason.
UNREACHABLE: dict[tuple[str, str, str], str] = {
    # kopf peering: the chart sets --peering only with replicaCount > 1 (one active replica, the
    # others standby); the harness runs a single operator with standalone=True, so kopf neither
    # lists/watches ClusterKopfPeerings nor patches its keep-alives into one.
    ("kopf.dev", "clusterkopfpeerings", "list"): "kopf peering (replicaCount > 1) only",
    ("kopf.dev", "clusterkopfpeerings", "watch"): "kopf peering (replicaCount > 1) only",
    ("kopf.dev", "clusterkopfpeerings", "patch"): "kopf peering (replicaCount > 1) only",
}

#: The non-resource URLs of the default system:discovery ClusterRole (granted to everybody).
DISCOVERY_URLS = ("/api", "/api/*", "/apis", "/apis/*", "/version", "/version/", "/openapi", "/openapi/*")

Call = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)


# --------------------------------------------------------------------------------------------------
# RBAC attributes of a request, as kube-apiserver's RequestInfoFactory computes them


@dataclasses.dataclass(frozen=True)
class Attributes:
    """One request as the authorizer sees it: a resource call, or a non-resource URL."""

    call: Call | None
    path: str
    method: str


def attributes(method: str, path: str, query: Mapping[str, str]) -> Attributes:
    """(apiGroup, resource[/subresource], verb) of a request, or a non-resource path.

    Follows k8s.io/apiserver's request info: ``/api/<version>/...`` is the core group,
    ``/apis/<group>/<version>/...`` a named group; fewer segments are discovery (non-resource);
    ``namespaces/<ns>/<resource>...`` is a namespaced resource (``namespaces/<ns>`` and its
    ``status``/``finalize`` are the Namespace itself); an optional legacy ``watch/`` prefix.
    """
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 3:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 4:
        group, rest = parts[1], parts[3:]
    else:
        return Attributes(None, path, method)
    verb = ""
    if rest[0] == "watch":
        verb, rest = "watch", rest[1:]
    if rest[0] == "namespaces" and len(rest) > 2 and rest[2] not in ("status", "finalize"):
        rest = rest[2:]
    resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
    named = len(rest) > 1
    if not verb:
        watching = query.get("watch", "").lower() in ("true", "1")
        read = "get" if named else "watch" if watching else "list"
        verb = {
            "GET": read,
            "HEAD": read,
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete" if named else "deletecollection",
        }.get(method, method.lower())
    return Attributes((group, resource, verb), path, method)


def allows(rules: Iterable[Mapping[str, Any]], call: Call) -> bool:
    """Whether some PolicyRule allows the call (wildcards as RBAC has them; no resourceNames here)."""
    group, resource, verb = call
    for rule in rules:
        groups, resources, verbs = rule.get("apiGroups", []), rule.get("resources", []), rule.get("verbs", [])
        resource_ok = (
            "*" in resources
            or resource in resources
            or ("/" in resource and f"*/{resource.split('/', 1)[1]}" in resources)
        )
        if (group in groups or "*" in groups) and resource_ok and (verb in verbs or "*" in verbs):
            assert not rule.get("resourceNames"), "resourceNames are not modelled here"
            return True
    return False


def granted(rules: Iterable[Mapping[str, Any]]) -> set[Call]:
    """Every (group, resource, verb) the rules name explicitly (a wildcard would be reported)."""
    return {
        (g, r, v)
        for rule in rules
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


def is_discovery(path: str) -> bool:
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in DISCOVERY_URLS)


def cluster_role_rules() -> list[dict[str, Any]]:
    """The ClusterRole's rules, rendered by helm with the chart's default values."""
    rules: list[dict[str, Any]] = chartkit.find(chartkit.render(), "ClusterRole")["rules"]
    return rules


# --------------------------------------------------------------------------------------------------
# The recorded requests


def is_test_request(headers: Mapping[str, str]) -> bool:
    auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    return auth == f"Bearer {TEST_TOKEN}"


def operator_requests(kmock: Any) -> Iterator[tuple[Attributes, str]]:
    """(attributes, User-Agent) of every request kmock received that the test did not make."""
    for request in kmock:
        if is_test_request(request.headers):
            continue
        agent = next((v for k, v in request.headers.items() if k.lower() == "user-agent"), "")
        yield attributes(request.method.value, request.url.path, request.params), agent


def count_test_requests(kmock: Any) -> int:
    return sum(1 for request in kmock if is_test_request(request.headers))


# --------------------------------------------------------------------------------------------------
# The scenario


@pytest.fixture(autouse=True)
def fast_sweep(monkeypatch: pytest.MonkeyPatch) -> list[sweep_module.SweepReport]:
    """Sweep rounds every SWEEP_INTERVAL s (the operator's setting, as GISMO_OPERATOR_SWEEP_INTERVAL
    would), and a record of each round's report. Autouse, so it is in place before ``operator``
    starts kopf, whose startup handler starts the sweep loop."""
    real_install, real_sweep = context_module.install, sweep_module.sweep_once
    reports: list[sweep_module.SweepReport] = []

    def install(ctx: context_module.OperatorContext) -> context_module.OperatorContext:
        ctx.settings = dataclasses.replace(ctx.settings, sweep_interval=SWEEP_INTERVAL)
        return real_install(ctx)

    async def sweep_once() -> sweep_module.SweepReport:
        report = await real_sweep()
        reports.append(report)
        return report

    monkeypatch.setattr(embedded_module, "install", install)
    monkeypatch.setattr(sweep_module, "sweep_once", sweep_once)
    return reports


@pytest.fixture(autouse=True)
def crds_served(cluster: Cluster) -> None:
    """Serve apiextensions.k8s.io/v1 CustomResourceDefinitions (with our CRDs and KubeRay's in it)
    as every real API server does. The harness's kmock does not declare that group, so kopf's
    resource observer, which lists and watches CRDs to notice resources appearing and going, would
    find nothing to watch and that path would go unrecorded. Autouse: in place before ``operator``."""
    resource = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    cluster.kmock.resources[resource] = kmock.ResourceInfo(
        kind="CustomResourceDefinition",
        singular="customresourcedefinition",
        namespaced=False,
        shortnames={"crd", "crds"},
        verbs=VERBS,
    )
    for path in [*GISMO_CRDS, KUBERAY_CRD]:
        crd = _load_yaml(path)
        cluster.kmock.objects[resource, None, crd["metadata"]["name"]] = crd


async def admit_and_create(tester: Cluster, operator: OperatorHandle, pod: dict[str, Any]) -> dict[str, Any]:
    """What the API server does with a KubeRay pod: call the webhook, apply its patch, store the pod
    (on a node, as after scheduling)."""
    response = await operator.admit(
        "mutate-raypod", resource=kube.PODS, operation="CREATE", obj=pod, namespace=NS
    )
    admitted = kuberay_sim.apply_admission(pod, response)
    assert "gismo.io/region" in admitted["metadata"]["annotations"], admitted["metadata"]
    admitted["spec"]["nodeName"] = "node-1"
    return await tester.create(kube.PODS, admitted, NS)


async def run_scenario(
    tester: Cluster, operator: OperatorHandle, sweeps: list[sweep_module.SweepReport]
) -> None:
    emulator = tester.kmock

    async def slice_regions() -> list[dict[str, Any]]:
        regions = await tester.list(kube.REGIONS, NS)
        return [r["spec"] for r in regions if r["spec"]["slice"] == CLUSTER]

    async def pool_status(key: str, value: Any) -> bool:
        body = await tester.get(kube.POOLS, POOL)
        return bool(body and (body.get("status") or {}).get(key) == value)

    # kmock parses /api/v1/namespaces/<name> as a namespace prefix, not as a Namespace object:
    # a canned answer for that GET (configuring kmock makes no request).
    emulator[f"get /api/v1/namespaces/{NS}"] << {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": NS, "labels": {"gismo": "yes"}},
    }

    # The node component advertises the pool's resource on a node of the pool (the webhook lists nodes).
    await tester.create(kube.NODES, advertising_node(POOL))

    # A pool, created then updated (a spec change: generation 2).
    await tester.create(
        kube.POOLS,
        pool_body(
            POOL, capacity="64Mi", region_size="1Mi", namespaceSelector={"matchLabels": {"gismo": "yes"}}
        ),
    )
    await tester.wait_for(lambda: pool_status("capacityBytes", 64 << 20), "the pool's status")
    await tester.patch(kube.POOLS, POOL, {"spec": {"capacity": "128Mi"}})
    await tester.wait_for(lambda: pool_status("capacityBytes", 128 << 20), "the updated pool's status")

    # A RayCluster opted in: its slice (the namespace is read for the pool's namespaceSelector).
    rc = await tester.create(kube.RAYCLUSTERS, raycluster_from_sample(pool=POOL), NS)
    await tester.wait_for(lambda: tester.get(kube.SLICES, CLUSTER, NS), "the RayCluster's slice")

    # Its pods, through the webhook, then stored: their regions are bound to them.
    head = await admit_and_create(tester, operator, kuberay_pod(rc, "head"))
    worker = await admit_and_create(tester, operator, kuberay_pod(rc, "worker"))

    async def bound() -> bool:
        regions = await slice_regions()
        return len(regions) == 2 and all(r["state"] == "Bound" for r in regions)

    await tester.wait_for(bound, "both regions bound")

    # A pod admitted by another operator replica: its GismoRegion, made by that replica and so not
    # in this operator's cache, is read (GET) and bound when the pod appears, and released with it.
    spec = ((await tester.get(kube.SLICES, CLUSTER, NS)) or {})["spec"]
    index = spec["size"] // spec["regionSize"] - 1
    token = "2026-01-01T00:00:00.000001+00:00"
    await tester.create(
        kube.REGIONS,
        {
            "metadata": {
                "name": f"{CLUSTER}-{index}",
                "namespace": NS,
                "labels": {"gismo.io/slice": CLUSTER},
            },
            "spec": {"slice": CLUSTER, "index": index, "state": "Reserved", "reservedAt": token},
        },
        NS,
    )
    elsewhere = kuberay_pod(rc, "worker")
    elsewhere["metadata"].setdefault("annotations", {}).update(
        {
            "gismo.io/region": str(index),
            "gismo.io/region-offset": str(spec["offset"] + index * spec["regionSize"]),
            "gismo.io/reservation": token,
        }
    )
    elsewhere["spec"]["nodeName"] = "node-1"
    elsewhere = await tester.create(kube.PODS, elsewhere, NS)

    async def bound_elsewhere() -> bool:
        return any(r.get("podUID") == elsewhere["metadata"]["uid"] for r in await slice_regions())

    await tester.wait_for(bound_elsewhere, "the other replica's region bound")
    await tester.delete(kube.PODS, elsewhere["metadata"]["name"], NS)

    async def released_elsewhere() -> bool:
        return len(await slice_regions()) == 2

    await tester.wait_for(released_elsewhere, "the other replica's region released")

    # The worker goes: its region is released.
    await tester.delete(kube.PODS, worker["metadata"]["name"], NS)

    async def one_left() -> bool:
        return [r.get("podUID") for r in await slice_regions()] == [head["metadata"]["uid"]]

    await tester.wait_for(one_left, "the worker's region released")

    # Sweep rounds over the slice and its pods (at least one complete after everything exists).
    seen = len(sweeps)

    async def swept() -> bool:
        return len(sweeps) >= seen + 2

    await tester.wait_for(swept, "two sweep rounds")

    # The pool is deleted while in use: held by the finalizer, with a Warning.
    await tester.delete(kube.POOLS, POOL)
    await tester.wait_for(lambda: tester.events(POOL, "GismoPoolInUse"), "a GismoPoolInUse event")

    # The RayCluster goes: the slice is deleted, and held until the head pod (its last) is gone.
    await tester.delete(kube.RAYCLUSTERS, CLUSTER, NS)
    await tester.wait_for(lambda: tester.events(CLUSTER, "GismoSliceReleased"), "a GismoSliceReleased event")
    await tester.delete(kube.PODS, head["metadata"]["name"], NS)

    async def gone(resource: kube.Resource, name: str, namespace: str | None = None) -> bool:
        return await tester.get(resource, name, namespace) is None

    await tester.wait_for(lambda: gone(kube.SLICES, CLUSTER, NS), "the slice deleted")
    await tester.wait_for(lambda: gone(kube.POOLS, POOL), "the pool deleted once unused")
    assert await tester.events(CLUSTER, "GismoSliceReserved")


async def test_cluster_role_covers_exactly_the_operators_api_calls(
    cluster: Cluster, operator: OperatorHandle, fast_sweep: list[sweep_module.SweepReport]
) -> None:
    rules = cluster_role_rules()  # rendered first: a helm failure fails before the scenario runs
    tester = Cluster(
        kmock=cluster.kmock,
        api=kube.Client(
            kopf.ConnectionInfo(server=cluster.api.server, token=TEST_TOKEN, default_namespace=NS)
        ),
    )
    try:
        await run_scenario(tester, operator, fast_sweep)
        await operator.kopf_thread.run_in_loop(context_module.current().drain_events())  # kopf's loop
    finally:
        await tester.api.close()
    assert count_test_requests(cluster.kmock) > 0, "the test's own requests must carry its token"

    recorded = list(operator_requests(cluster.kmock))
    calls: dict[Call, set[str]] = {}
    non_resource: set[tuple[str, str]] = set()
    for attrs, agent in recorded:
        if attrs.call is None:
            non_resource.add((attrs.method, attrs.path))
        else:
            calls.setdefault(attrs.call, set()).add(agent.split("/")[0] or "?")
    table = "\n".join(
        f"  {g or 'core'} {r} {v}  ({', '.join(sorted(a))})" for (g, r, v), a in sorted(calls.items())
    )
    print(f"operator API calls:\n{table}\nnon-resource URLs: {sorted(non_resource)}")

    not_discovery = sorted(p for p in non_resource if not is_discovery(p[1]))
    assert not not_discovery, f"non-resource URLs outside system:discovery: {not_discovery}"

    denied = sorted(call for call in calls if not allows(rules, call))
    assert not denied, f"the ClusterRole does not allow these calls of the operator: {denied}"

    unused = sorted(granted(rules) - set(calls) - set(UNREACHABLE))
    assert not unused, f"the ClusterRole grants what the operator never used: {unused}"
    stale = sorted(set(UNREACHABLE) & set(calls))
    assert not stale, f"UNREACHABLE lists calls the scenario did make (remove them): {stale}"
    assert set(UNREACHABLE) <= granted(rules), "UNREACHABLE lists calls the ClusterRole does not grant"


def test_attributes_follow_the_api_servers_request_info() -> None:
    assert attributes("GET", "/apis/gismo.io/v1alpha1/gismopools", {}).call == (
        "gismo.io",
        "gismopools",
        "list",
    )
    assert attributes("GET", "/apis/gismo.io/v1alpha1/gismopools", {"watch": "true"}).call == (
        "gismo.io",
        "gismopools",
        "watch",
    )
    assert attributes("GET", "/api/v1/namespaces/ns/pods/p", {}).call == ("", "pods", "get")
    assert attributes("GET", "/api/v1/namespaces/ns", {}).call == ("", "namespaces", "get")
    assert attributes("PUT", "/api/v1/namespaces/ns/finalize", {}).call == (
        "",
        "namespaces/finalize",
        "update",
    )
    assert attributes("PATCH", "/apis/gismo.io/v1alpha1/gismopools/p/status", {}).call == (
        "gismo.io",
        "gismopools/status",
        "patch",
    )
    assert attributes("POST", "/api/v1/namespaces/ns/events", {}).call == ("", "events", "create")
    assert attributes("DELETE", "/apis/gismo.io/v1alpha1/namespaces/ns/gismoslices", {}).call == (
        "gismo.io",
        "gismoslices",
        "deletecollection",
    )
    for path in ("/api", "/api/v1", "/apis", "/apis/gismo.io", "/apis/gismo.io/v1alpha1", "/version"):
        assert attributes("GET", path, {}).call is None and is_discovery(path)
    rules = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]
    assert allows(rules, ("", "pods", "list"))
    assert not allows(rules, ("", "pods/status", "list")) and not allows(rules, ("", "pods", "get"))
    assert granted(rules) == {("", "pods", "list")}
