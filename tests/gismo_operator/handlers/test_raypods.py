"""The mutate-raypod webhook against kmock, over HTTPS with AdmissionReview v1: the patch, durable and
distinct regions under concurrency, a full slice, restart, binding and release."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import kmock
import pytest
from _ray_fixtures import (
    NS,
    SAMPLES,
    RunningOperator,
    admission_review,
    advertising_node,
    apply_response,
    kuberay_pod,
    opted_in_cluster,
    pool_body,
    raycluster_from_sample,
    running_operator,
)

from gismo.testing import wait_until_async
from gismo_operator import kube
from gismo_operator.context import current
from gismo_operator.testing import kuberay_sim

MI = 1 << 20


async def regions_of(op: RunningOperator, name: str = "raycluster-kuberay") -> list[dict[str, Any]]:
    """The slice's regions in use: the specs of its GismoRegion objects, by index."""
    assert await op.slice(name) is not None
    regions = await op.client.list(kube.REGIONS, NS)
    return sorted((r["spec"] for r in regions if r["spec"]["slice"] == name), key=lambda r: r["index"])


def without_skip_reason(pod: dict[str, Any]) -> dict[str, Any]:
    """The admitted pod less ``gismo.io/skipped`` (and the annotations map it alone made)."""
    annotations = pod["metadata"]["annotations"]
    annotations.pop("gismo.io/skipped")
    if not annotations:
        del pod["metadata"]["annotations"]
    return pod


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


async def test_head_and_worker_admissions_get_the_agent_and_a_durable_region(
    api: kmock.KubernetesEmulator,
) -> None:
    async with running_operator(api) as op:
        rc = await opted_in_cluster(op)
        slice_spec = (await op.slice("raycluster-kuberay") or {})["spec"]
        pods = []
        for node_type in ("head", "worker"):
            pod = kuberay_pod(rc, node_type)
            request = admission_review(pod)
            review = await op.review(request)
            assert review["response"]["uid"] == request["request"]["uid"]  # the answer names its request
            admitted = apply_response(pod, review)
            pods.append(admitted)

            spec = admitted["spec"]
            assert spec["containers"][0]["name"] == pod["spec"]["containers"][0]["name"]  # Ray stays first
            assert len(spec["containers"]) == len(pod["spec"]["containers"])
            agent = spec["initContainers"][-1]
            assert agent["name"] == "gismo-agent" and agent["restartPolicy"] == "Always"
            assert agent["image"] == "gismo-agent:test"
            assert agent["securityContext"]["runAsNonRoot"] is True
            assert agent["securityContext"]["allowPrivilegeEscalation"] is False
            assert agent["securityContext"]["readOnlyRootFilesystem"] is True
            assert agent["securityContext"]["capabilities"] == {"drop": ["ALL"]}
            volumes = {v["name"]: v for v in spec["volumes"]}
            assert volumes["shared-mem"]["emptyDir"]["medium"] == "Memory"  # KubeRay's, untouched
            assert volumes["gismo-socket"] == {"name": "gismo-socket", "emptyDir": {}}
            # The pool reaches the containers through the node component's device plugin: no hostPath.
            assert "gismo-pool" not in volumes
            assert not [v for v in spec["volumes"] if "hostPath" in v]
            for container in (spec["containers"][0], agent):
                for part in ("requests", "limits"):
                    assert container["resources"][part]["gismo.io/pool-a"] == "1"
            assert agent["resources"]["requests"] == agent["resources"]["limits"]
            assert agent["startupProbe"]["exec"]["command"] == ["gismo", "health", "--answering"]
            ann = admitted["metadata"]["annotations"]
            index = int(ann["gismo.io/region"])
            assert ann["gismo.io/pool"] == "pool-a"
            assert int(ann["gismo.io/region-offset"]) == slice_spec["offset"] + index * MI
            assert ann["gismo.io/region-size"] == str(MI)
            assert ("ray.io/ft-enabled" in ann) == (node_type == "head")  # KubeRay's, untouched
            for container in (spec["containers"][0], agent):
                env = env_of(container)
                assert env["GISMO_REGION"] == str(index)
                assert env["GISMO_REGION_OFFSET"] == ann["gismo.io/region-offset"]
                assert env["GISMO_SLICE_OFFSET"] == str(slice_spec["offset"])
                assert env["GISMO_SLICE_SIZE"] == str(slice_spec["size"])
                assert env["GISMO_BACKEND"] == "shm" and env["GISMO_DEVICE"] == "/dev/shm/gismo/pool-a"
                assert env["GISMO_SOCKET"] == "/run/gismo/agent.sock" and env["GISMO_POOL"] == "pool-a"
                mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
                assert mounts["gismo-socket"] == "/run/gismo" and "gismo-pool" not in mounts
            terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            assert terms["nodeSelectorTerms"] == [
                {"matchExpressions": [{"key": "gismo.io/attached", "operator": "In", "values": ["pool-a"]}]}
            ]
            assert "name" not in admitted["metadata"]  # generateName only, as KubeRay sent it

        recorded = await regions_of(op)
        assert sorted(r["index"] for r in recorded) == sorted(
            int(p["metadata"]["annotations"]["gismo.io/region"]) for p in pods
        )
        assert all(r["state"] == "Reserved" for r in recorded)
        assert {r["reservedAt"] for r in recorded} and len({r["reservedAt"] for r in recorded}) == 2

        # Re-invocation of the webhook on the already patched pod changes nothing and takes nothing.
        again = await op.admit(pods[0])
        assert apply_response(pods[0], again) == pods[0]
        assert len(await regions_of(op)) == 2


async def test_pods_of_clusters_without_gismo_are_left_alone(api: kmock.KubernetesEmulator) -> None:
    async with running_operator(api) as op:
        await op.client.create(kube.POOLS, pool_body())
        rc = raycluster_from_sample(name="plain", pool=None)
        await op.client.create(kube.RAYCLUSTERS, rc, namespace=NS)
        pod = kuberay_pod(rc)
        review = await op.admit(pod)
        assert apply_response(pod, review) == pod


async def test_fifty_concurrent_admissions_get_fifty_distinct_regions(api: kmock.KubernetesEmulator) -> None:
    async with running_operator(api) as op:
        rc = await opted_in_cluster(op, max_replicas=59)  # 60 regions
        pods = [kuberay_pod(rc) for _ in range(50)]
        reviews = await asyncio.gather(*(op.admit(p) for p in pods))
        admitted = [apply_response(p, r) for p, r in zip(pods, reviews, strict=True)]
        indexes = [int(p["metadata"]["annotations"]["gismo.io/region"]) for p in admitted]
        offsets = sorted(int(p["metadata"]["annotations"]["gismo.io/region-offset"]) for p in admitted)
        assert len(set(indexes)) == 50
        assert all(b - a >= MI for a, b in itertools.pairwise(offsets))  # no overlap
        recorded = await regions_of(op)
        assert sorted(r["index"] for r in recorded) == sorted(indexes)


async def test_full_slice_admits_the_pod_without_injection_and_warns(api: kmock.KubernetesEmulator) -> None:
    async with running_operator(api) as op:
        rc = await opted_in_cluster(op, max_replicas=1)  # 2 regions: head + 1 worker
        for _ in range(2):
            await op.admit(kuberay_pod(rc))
        pod = kuberay_pod(rc)
        admitted = apply_response(pod, await op.admit(pod))
        assert "slice full" in admitted["metadata"]["annotations"]["gismo.io/skipped"]
        assert "gismo.io/region" not in admitted["metadata"]["annotations"]
        assert without_skip_reason(admitted) == pod
        events = await wait_until_async(lambda: op.events("GismoSliceFull"), "a GismoSliceFull Event")
        assert events[0]["type"] == "Warning"
        assert events[0]["involvedObject"]["kind"] == "RayCluster"
        assert events[0]["involvedObject"]["name"] == "raycluster-kuberay"
        assert len(await regions_of(op)) == 2


async def test_dry_run_admission_records_nothing(api: kmock.KubernetesEmulator) -> None:
    async with running_operator(api) as op:
        rc = await opted_in_cluster(op)
        pod = kuberay_pod(rc)
        admitted = apply_response(pod, await op.admit(pod, dry_run=True))
        assert admitted["metadata"]["annotations"]["gismo.io/region"] == "0"
        assert await regions_of(op) == []


async def test_pod_binds_to_its_uid_and_node_and_deletion_frees_its_region(
    api: kmock.KubernetesEmulator,
) -> None:
    async with running_operator(api) as op:
        rc = await opted_in_cluster(op, max_replicas=0)  # one region: the head's
        created = await op.create_pod(kuberay_pod(rc, "head"), node="node-1")
        uid, name = created["metadata"]["uid"], created["metadata"]["name"]

        async def bound() -> list[dict[str, Any]]:
            return [r for r in await regions_of(op) if r.get("podUID") == uid and r["state"] == "Bound"]

        entry = (await wait_until_async(bound, "the head pod's region to be Bound to its uid"))[0]
        assert entry["podName"] == name and entry["node"] == "node-1" and entry["index"] == 0

        late = kuberay_pod(rc, "head")
        assert "gismo.io/skipped" in apply_response(late, await op.admit(late))["metadata"]["annotations"]

        await op.client.delete(kube.PODS, name, NS)
        await wait_until_async(lambda: _empty(op), "the deleted pod's region to be freed")
        again = kuberay_pod(rc, "head")
        assert (
            apply_response(again, await op.admit(again))["metadata"]["annotations"]["gismo.io/region"] == "0"
        )


async def _empty(op: RunningOperator) -> bool:
    return await regions_of(op) == []


async def test_a_restarted_operator_sees_every_assignment_and_double_assigns_nothing(
    api: kmock.KubernetesEmulator,
) -> None:
    async with running_operator(api) as op:
        rc = await opted_in_cluster(op, max_replicas=9)  # 10 regions
        created = [await op.create_pod(kuberay_pod(rc), node="node-1") for _ in range(3)]
        reserved_only = [apply_response(p, await op.admit(p)) for p in [kuberay_pod(rc) for _ in range(2)]]
        first = {int(p["metadata"]["annotations"]["gismo.io/region"]) for p in created + reserved_only}
        assert len(first) == 5
    # The process is gone; a new one starts over the same API state with empty caches.
    async with running_operator(api) as op:
        pods = [kuberay_pod(rc) for _ in range(7)]
        reviews = await asyncio.gather(*(op.admit(p) for p in pods))
        admitted = [apply_response(p, r) for p, r in zip(pods, reviews, strict=True)]
        second = [
            int(p["metadata"]["annotations"]["gismo.io/region"])
            for p in admitted
            if "gismo.io/region" in p["metadata"]["annotations"]
        ]
        skipped = [p for p in admitted if "gismo.io/skipped" in p["metadata"]["annotations"]]
        assert len(second) == 5 and len(skipped) == 2
        assert not first & set(second)
        assert sorted(first | set(second)) == list(range(10))
        recorded = await regions_of(op)
        assert sorted(r["index"] for r in recorded) == list(range(10))


async def test_raycluster_deletion_frees_its_slice_and_the_pool_capacity(
    api: kmock.KubernetesEmulator,
) -> None:
    async with running_operator(api) as op:
        rc = await opted_in_cluster(op, capacity="16Mi")  # slice of 6Mi
        await op.create_pod(kuberay_pod(rc, "head"), node="node-1")

        async def pool_free() -> int | None:
            body = await op.client.get(kube.POOLS, "pool-a")
            return (body.get("status") or {}).get("freeBytes")

        assert await wait_until_async(
            lambda: _equals(pool_free, 10 * MI), "the pool status to show 10Mi free"
        )
        head = (await op.client.list(kube.PODS, NS))[0]
        await wait_until_async(lambda: _bound(op), "the head pod's region to be Bound")
        await op.client.delete(kube.RAYCLUSTERS, "raycluster-kuberay", NS)
        assert await wait_until_async(lambda: op.events("GismoSliceReleased"), "a GismoSliceReleased Event")
        # The head pod is still terminating: its region, hence the slice's bytes, stay allocated.
        body = await op.slice("raycluster-kuberay")
        assert body is not None and body["metadata"].get("deletionTimestamp")
        assert await pool_free() == 10 * MI
        # Kubernetes' garbage collector deletes the cluster's pods; kmock has none, so the test does.
        await op.client.delete(kube.PODS, head["metadata"]["name"], NS)
        await wait_until_async(lambda: _gone(op), "the slice to be deleted")
        assert await wait_until_async(
            lambda: _equals(pool_free, 16 * MI), "the pool status to show all 16Mi free"
        )


async def _bound(op: RunningOperator) -> bool:
    return any(r["state"] == "Bound" for r in await regions_of(op))


async def _equals(fn: Any, value: Any) -> bool:
    return bool(await fn() == value)


async def _gone(op: RunningOperator) -> bool:
    return await op.slice("raycluster-kuberay") is None


async def test_a_broken_pool_admits_the_pod_unchanged_returns_the_region_and_warns(
    api: kmock.KubernetesEmulator,
) -> None:
    async with running_operator(api) as op:
        rc = await opted_in_cluster(op)
        await op.client.patch(kube.POOLS, "pool-a", {"spec": {"backend": {"path": "relative/path"}}})

        def operator_saw_the_change() -> bool:
            """The state the webhook reads the pool from: the operator's watch cache of pools."""
            body = current().pools.get("pool-a") or {}
            return bool(body.get("spec", {}).get("backend", {}).get("path") == "relative/path")

        await wait_until_async(operator_saw_the_change, "the operator to see the pool's new backend.path")
        pod = kuberay_pod(rc)
        admitted = apply_response(pod, await op.admit(pod))
        assert "backend.path" in admitted["metadata"]["annotations"]["gismo.io/skipped"]
        assert "gismo.io/region" not in admitted["metadata"]["annotations"]
        assert "gismo-agent" not in str(admitted["spec"])
        assert await regions_of(op) == []  # the skipped pod's reservation was given back
        assert await wait_until_async(lambda: op.events("GismoNotInjected"), "a GismoNotInjected Event")


def store_namespace(api: kmock.KubernetesEmulator, labels: dict[str, str]) -> None:
    """Serve the namespace NS with ``labels``. kmock 0.8 parses /api/v1/namespaces/<name> as a
    namespace prefix and cannot store or serve namespaces, so the GET is answered by a kmock rule."""
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": labels}}
    api[f"get /api/v1/namespaces/{NS}"] << body


@pytest.mark.parametrize("level", ["baseline", "restricted"])
async def test_hostpath_pool_in_a_namespace_whose_pod_security_forbids_it_is_admitted_without_gismo(
    api: kmock.KubernetesEmulator, level: str
) -> None:
    """PodSecurity runs after the mutating webhooks and would refuse a pod with a hostPath volume:
    the pod is admitted unchanged but for the reason, never refused, and its region is given back."""
    store_namespace(api, {"pod-security.kubernetes.io/enforce": level})
    async with running_operator(api) as op:
        rc = await opted_in_cluster(op, access="HostPath")
        pod = kuberay_pod(rc)
        review = await op.admit(pod)
        assert review["response"]["allowed"] is True
        admitted = apply_response(pod, review)
        reason = admitted["metadata"]["annotations"]["gismo.io/skipped"]
        assert f"enforces Pod Security level {level!r}" in reason and "hostPath" in reason
        assert without_skip_reason(admitted) == pod
        assert await regions_of(op) == []
        events = await wait_until_async(lambda: op.events("GismoPodSecurity"), "a GismoPodSecurity Event")
        assert events[0]["type"] == "Warning" and events[0]["involvedObject"]["kind"] == "RayCluster"
        assert "starts without Gismo" in events[0]["message"]


@pytest.mark.parametrize("labels", [{"pod-security.kubernetes.io/enforce": "privileged"}, {}])
async def test_hostpath_pool_where_pod_security_allows_it_mounts_the_path(
    api: kmock.KubernetesEmulator, labels: dict[str, str]
) -> None:
    store_namespace(api, labels)  # no label: the cluster default (privileged unless configured)
    async with running_operator(api) as op:
        rc = await opted_in_cluster(op, access="HostPath")
        admitted = apply_response(kuberay_pod(rc), await op.admit(kuberay_pod(rc)))
        volumes = {v["name"]: v for v in admitted["spec"]["volumes"]}
        assert volumes["gismo-pool"]["hostPath"] == {"path": "/dev/shm/gismo/pool-a", "type": "File"}
        agent = admitted["spec"]["initContainers"][-1]
        for container in (admitted["spec"]["containers"][0], agent):
            mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
            assert mounts["gismo-pool"] == "/dev/shm/gismo/pool-a"
            assert "gismo.io/pool-a" not in str(container.get("resources"))


async def test_device_plugin_pools_need_no_namespace_check(api: kmock.KubernetesEmulator) -> None:
    store_namespace(api, {"pod-security.kubernetes.io/enforce": "restricted"})
    async with running_operator(api) as op:
        rc = await opted_in_cluster(op)
        admitted = apply_response(kuberay_pod(rc), await op.admit(kuberay_pod(rc)))
        assert "gismo.io/skipped" not in admitted["metadata"]["annotations"]
        assert admitted["spec"]["containers"][0]["resources"]["limits"]["gismo.io/pool-a"] == "1"


async def test_the_redis_cleanup_job_pod_and_other_non_node_pods_get_no_region(
    api: kmock.KubernetesEmulator,
) -> None:
    """KubeRay's Redis cleanup Job pod carries ray.io/is-ray-node=yes and ray.io/cluster, but it is no
    Ray node: it is left exactly as it is, and takes no region."""
    async with running_operator(api) as op:
        rc = await opted_in_cluster(op, sample="ray-cluster.persistent-redis-sidecar.yaml")
        cleanup = kuberay_sim.redis_cleanup_pod(rc)
        assert cleanup["metadata"]["labels"]["ray.io/is-ray-node"] == "yes"
        assert cleanup["metadata"]["labels"]["ray.io/node-type"] == "redis-cleanup"
        assert apply_response(cleanup, await op.admit(cleanup)) == cleanup
        other = kuberay_pod(rc)
        other["metadata"]["labels"]["ray.io/node-type"] = "something-else"
        assert apply_response(other, await op.admit(other)) == other
        assert await regions_of(op, rc["metadata"]["name"]) == []
        # The cluster's head and workers still get theirs.
        head = apply_response(kuberay_pod(rc, "head"), await op.admit(kuberay_pod(rc, "head")))
        assert "gismo.io/region" in head["metadata"]["annotations"]


async def test_every_sample_shape_is_admitted_with_the_agent(api: kmock.KubernetesEmulator) -> None:
    """The webhook over HTTPS on the head and each worker group of every KubeRay sample."""
    async with running_operator(api) as op:
        await op.client.create(kube.POOLS, pool_body(capacity="256Mi", region_size="1Mi"))
        for i, path in enumerate(sorted(SAMPLES.glob("*.yaml"))):
            # Two samples share a name (autoscaler and autoscaler-v2): each gets its own.
            rc = raycluster_from_sample(path.name)
            rc["metadata"]["name"] = f"{rc['metadata']['name']}-{i}"
            await op.client.create(kube.RAYCLUSTERS, rc, namespace=NS)
            name = rc["metadata"]["name"]
            await wait_until_async(lambda name=name: op.slice(name), f"the slice of {name}")
            groups = rc["spec"].get("workerGroupSpecs") or []
            pods = [kuberay_pod(rc, "head")] + [kuberay_pod(rc, "worker", i) for i in range(len(groups))]
            for pod in pods:
                admitted = apply_response(pod, await op.admit(pod))
                assert "gismo.io/region" in admitted["metadata"]["annotations"], (
                    path.name,
                    admitted["metadata"],
                )
                names = [c["name"] for c in admitted["spec"]["initContainers"]]
                assert names[-1] == "gismo-agent" and names[:-1] == [
                    c["name"] for c in pod["spec"].get("initContainers", [])
                ]
                assert admitted["spec"]["containers"][0]["name"] == pod["spec"]["containers"][0]["name"]


async def test_without_a_node_advertising_the_pool_the_pod_starts_without_gismo(
    api: kmock.KubernetesEmulator,
) -> None:
    """A DevicePlugin pool whose nodes run no node component: the resource request would keep the pod
    Pending for ever, so it is admitted without Gismo, its region given back, and told why."""
    async with running_operator(api, node_component=False) as op:
        # A node advertises the resource, but it is not one of the pool's nodes (nodeSelector).
        await op.client.create(kube.NODES, advertising_node("pool-a", labels={"gismo.io/attached": "other"}))
        rc = await opted_in_cluster(op)
        pod = kuberay_pod(rc)
        admitted = apply_response(pod, await op.admit(pod))
        reason = admitted["metadata"]["annotations"]["gismo.io/skipped"]
        assert "no node of GismoPool pool-a advertises gismo.io/pool-a" in reason
        assert without_skip_reason(admitted) == pod
        assert await regions_of(op) == []
        events = await wait_until_async(
            lambda: op.events("GismoResourceNotAdvertised"), "a GismoResourceNotAdvertised Event"
        )
        assert events[0]["type"] == "Warning" and "starts without Gismo" in events[0]["message"]
