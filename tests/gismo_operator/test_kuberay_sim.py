"""The KubeRay simulator builds what KubeRay v1.7 builds (gismo_operator.testing.kuberay_pods): the
shapes every injection and webhook test runs on must be right themselves."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kuberay_shapes import SHAPE_IDS, clusters, shape

from gismo_operator.testing import kuberay_sim


def _cluster(name: str) -> dict[str, Any]:
    return dict(clusters())[name]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_generate_name_is_cut_to_50_characters_and_lowercased() -> None:
    assert kuberay_sim.generate_name("MyCluster", "head") == "mycluster-head-"
    long = "a" * 60
    assert kuberay_sim.generate_name(f"{long}-grp", "worker") == "a" * 50 + "-worker-"
    rc = _cluster("sample")
    rc["metadata"]["name"] = "Big" + "x" * 60
    pod = kuberay_sim.pod_for(rc, "worker", rc["spec"]["workerGroupSpecs"][0])
    assert pod["metadata"]["generateName"] == ("big" + "x" * 60)[:50] + "-worker-"
    assert "name" not in pod["metadata"]


@pytest.mark.parametrize(
    ("group", "expected"),
    [
        ({"replicas": 3, "minReplicas": 1, "maxReplicas": 5}, 3),
        ({"replicas": 9, "minReplicas": 1, "maxReplicas": 5}, 5),
        ({"replicas": 0, "minReplicas": 2, "maxReplicas": 5}, 2),
        ({"minReplicas": 1, "maxReplicas": 5}, 1),  # CRD default replicas 0, clamped up
        ({"replicas": 2, "minReplicas": 0, "maxReplicas": 5, "numOfHosts": 4}, 8),
        ({"replicas": 2, "minReplicas": 0, "maxReplicas": 5, "suspend": True}, 0),
        ({"replicas": 7}, 7),  # maxReplicas defaults to 2^31-1
    ],
)
def test_worker_replicas_are_clamped_like_kuberay(group: dict[str, Any], expected: int) -> None:
    assert kuberay_sim.desired_workers(group) == expected


def test_pods_for_starts_the_head_and_the_clamped_workers() -> None:
    rc = _cluster("autoscaler")  # replicas 0, min 0: the autoscaler adds workers later
    pods = kuberay_sim.pods_for(rc)
    assert [p["metadata"]["labels"]["ray.io/node-type"] for p in pods] == ["head"]
    rc = _cluster("kai-gpu-sharing")  # replicas 2
    assert [p["metadata"]["labels"]["ray.io/node-type"] for p in kuberay_sim.pods_for(rc)] == [
        "head", "worker", "worker",
    ]  # fmt: skip


def test_workers_wait_for_the_gcs_with_the_ray_containers_env_and_fixed_resources() -> None:
    rc = _cluster("sample")
    pod = shape("sample/workergroup")
    (init,) = pod["spec"]["initContainers"]
    ray = pod["spec"]["containers"][0]
    assert init["name"] == "wait-gcs-ready" and init["image"] == ray["image"]
    assert init["command"] == ["/bin/bash", "-c", "--"]
    fqdn = f"{rc['metadata']['name']}-head-svc.default.svc.cluster.local"
    assert f"ray health-check --address {fqdn}:6379" in init["args"][0]
    assert init["resources"] == {
        "limits": {"cpu": "200m", "memory": "256Mi"},
        "requests": {"cpu": "200m", "memory": "256Mi"},
    }
    assert _env(init)["FQ_RAY_IP"] == fqdn and _env(init)["RAY_IP"] == f"{rc['metadata']['name']}-head-svc"
    assert "wait-gcs-ready" not in str(shape("sample/head")["spec"].get("initContainers"))


def test_the_ray_container_gets_kuberays_env_as_field_refs_command_probes_and_port() -> None:
    for shape_id in ("sample/head", "sample/workergroup"):
        ray = shape(shape_id)["spec"]["containers"][0]
        env = _env(ray)
        assert env["RAY_CLUSTER_NAME"] == {
            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.labels['ray.io/cluster']"}
        }
        assert env["RAY_CLUSTER_NAMESPACE"]["fieldRef"]["fieldPath"] == "metadata.namespace"
        assert env["RAY_CLOUD_INSTANCE_ID"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert env["RAY_NODE_TYPE_NAME"]["fieldRef"]["fieldPath"] == "metadata.labels['ray.io/group']"
        assert env["RAY_PORT"] == "6379" and env["RAY_USAGE_STATS_KUBERAY_IN_USE"] == "1"
        assert ray["command"] == ["/bin/bash", "-c", "--"]
        assert ray["args"][0].startswith("ulimit -n ${RAY_START_ULIMIT_OPEN_FILES:-65536}; ray start ")
        assert " --block " in ray["args"][0] and env["KUBERAY_GEN_RAY_START_CMD"] in ray["args"][0]
        assert {"name": "metrics", "containerPort": 8080, "protocol": "TCP"} in ray["ports"]
        for probe in ("livenessProbe", "readinessProbe"):
            assert "52365/api/local_raylet_healthz" in ray[probe]["exec"]["command"][2]  # rayVersion 2.52
    head = _env(shape("sample/head")["spec"]["containers"][0])
    assert head["RAY_ADDRESS"] == "127.0.0.1:6379" and "FQ_RAY_IP" not in head
    assert "kuberay_version=v1.7.0" in head["RAY_USAGE_STATS_EXTRA_TAGS"]
    worker = _env(shape("sample/workergroup")["spec"]["containers"][0])
    assert worker["RAY_ADDRESS"].endswith("-head-svc.default.svc.cluster.local:6379")
    assert shape("sample/head")["spec"]["containers"][0]["livenessProbe"]["timeoutSeconds"] == 5
    assert shape("sample/workergroup")["spec"]["containers"][0]["livenessProbe"]["timeoutSeconds"] == 2


def test_from_ray_2_53_the_probes_are_http() -> None:
    rc = _cluster("sample")
    rc["spec"]["rayVersion"] = "2.53.0"
    ray = kuberay_sim.pod_for(rc, "head")["spec"]["containers"][0]
    assert ray["livenessProbe"]["httpGet"] == {"path": "/api/healthz", "port": 52365}


def test_shared_mem_is_sized_from_the_ray_containers_memory() -> None:
    for shape_id in SHAPE_IDS:
        pod = shape(shape_id)
        ray = pod["spec"]["containers"][0]
        volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
        mounts = {m["mountPath"]: m["name"] for m in ray.get("volumeMounts", [])}
        if mounts.get("/dev/shm") != "shared-mem":
            continue  # the template mounts /dev/shm itself: KubeRay adds nothing
        resources = ray.get("resources") or {}
        want = (resources.get("limits") or {}).get("memory") or (resources.get("requests") or {}).get(
            "memory"
        )
        empty = volumes["shared-mem"]["emptyDir"]
        assert empty["medium"] == "Memory"
        assert empty.get("sizeLimit") == want, shape_id


def test_the_autoscaler_head_gets_the_autoscaler_container_ray_logs_and_its_service_account() -> None:
    for name in ("autoscaler", "autoscaler-v2"):
        pod = shape(f"{name}/head")
        names = [c["name"] for c in pod["spec"]["containers"]]
        assert names == ["ray-head", "autoscaler"]
        autoscaler = pod["spec"]["containers"][1]
        assert autoscaler["resources"]["limits"] == {"cpu": "500m", "memory": "512Mi"}
        assert autoscaler["args"][0].startswith("ray kuberay-autoscaler --cluster-name $(RAY_CLUSTER_NAME)")
        assert _env(autoscaler)["RAY_HEAD_POD_NAME"]["fieldRef"]["fieldPath"] == "metadata.name"
        for container in pod["spec"]["containers"]:
            assert {"name": "ray-logs", "mountPath": "/tmp/ray"} in container["volumeMounts"]
        assert {"name": "ray-logs", "emptyDir": {}} in pod["spec"]["volumes"]
        assert pod["spec"]["serviceAccountName"] == _cluster(name)["metadata"]["name"]
        assert " --no-monitor " in pod["spec"]["containers"][0]["args"][0]
    v2 = shape("autoscaler-v2/head")
    assert _env(v2["spec"]["containers"][0])["RAY_enable_autoscaler_v2"] == "true"
    assert v2["spec"]["restartPolicy"] == "Never"
    assert shape("autoscaler-v2/small-group")["spec"]["restartPolicy"] == "Never"
    assert shape("autoscaler/head")["spec"]["restartPolicy"] == "Always"  # the API server's default


def test_a_long_cluster_name_is_cut_in_ray_io_identifier_only_never_in_ray_io_cluster() -> None:
    """KubeRay's CheckLabel (keep the last 63 characters, a leading punctuation mark becomes "r")
    applies to ``ray.io/identifier``; ``ray.io/cluster`` is the RayCluster's name as is, which is
    what the webhook reads to find the slice. (A name over 63 characters gets no pods at all: the
    API server refuses the label value; KubeRay >= 1.4 refuses RayCluster names over 53.)"""
    rc = _cluster("sample")
    name = "cccc-" + "x" * 55  # 60 characters: "<name>-worker" is 67, cut where the "-" is
    rc["metadata"]["name"] = name
    pod = kuberay_sim.pod_for(rc, "worker", rc["spec"]["workerGroupSpecs"][0])
    labels = pod["metadata"]["labels"]
    assert labels["ray.io/cluster"] == name
    assert labels["ray.io/identifier"] == "r" + "x" * 55 + "-worker"  # kept the end, "-" -> "r"
    assert len(labels["ray.io/identifier"]) == 63
    (owner,) = pod["metadata"]["ownerReferences"]
    assert owner["name"] == name


def test_labels_annotations_and_owner() -> None:
    head, worker = shape("sample/head"), shape("sample/workergroup")
    name = _cluster("sample")["metadata"]["name"]
    for pod, node_type, group in ((head, "head", "headgroup"), (worker, "worker", "workergroup")):
        labels = pod["metadata"]["labels"]
        assert labels["ray.io/is-ray-node"] == "yes" and labels["ray.io/cluster"] == name
        assert labels["ray.io/node-type"] == node_type and labels["ray.io/group"] == group
        assert labels["ray.io/identifier"] == f"{name}-{node_type}"
        assert labels["app.kubernetes.io/created-by"] == "kuberay-operator"
        (owner,) = pod["metadata"]["ownerReferences"]
        assert owner["kind"] == "RayCluster" and owner["controller"] is True
    assert head["metadata"]["annotations"]["ray.io/ft-enabled"] == "false"
    assert "annotations" not in worker["metadata"]  # ft-enabled is the head's only
    assert shape("persistent-redis-sidecar/head")["metadata"]["annotations"]["ray.io/ft-enabled"] == "true"


def test_the_api_servers_defaults_are_applied() -> None:
    pod = shape("sample/workergroup")
    spec = pod["spec"]
    assert spec["serviceAccountName"] == "default" and spec["restartPolicy"] == "Always"
    token = [v for v in spec["volumes"] if v["name"].startswith("kube-api-access-")]
    assert len(token) == 1 and "projected" in token[0]
    for c in [*spec["initContainers"], *spec["containers"]]:
        assert {
            "name": token[0]["name"],
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
            "readOnly": True,
        } in c["volumeMounts"]
        assert c["imagePullPolicy"] == "IfNotPresent" and c["terminationMessagePolicy"] == "File"
    assert {t["key"] for t in spec["tolerations"]} >= {
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    }


def test_the_redis_cleanup_pod_is_no_ray_node() -> None:
    rc = _cluster("persistent-redis-sidecar")
    pod = kuberay_sim.redis_cleanup_pod(rc)
    labels = pod["metadata"]["labels"]
    assert labels["ray.io/is-ray-node"] == "yes" and labels["ray.io/node-type"] == "redis-cleanup"
    assert [c["name"] for c in pod["spec"]["containers"]] == ["ray-head"]
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "Job"
    assert pod["spec"]["restartPolicy"] == "Never"
    assert "livenessProbe" not in pod["spec"]["containers"][0]


def test_the_builder_does_not_mutate_the_raycluster() -> None:
    rc = _cluster("autoscaler")
    before = copy.deepcopy(rc)
    kuberay_sim.pods_for(rc)
    kuberay_sim.pod_for(rc, "worker", rc["spec"]["workerGroupSpecs"][0])
    assert rc == before
