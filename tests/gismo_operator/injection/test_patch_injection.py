"""The pod patch builder: merging with what the pod already has, KubeRay's containers[0] rule, idempotency."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kuberay_shapes import shape

from gismo.contract import ENV_BACKEND, ENV_COHERENCE, SOCKET_PATH, SOCKET_VOLUME
from gismo_operator.constants import AGENT_CONTAINER, CLIENT_DIR, CLIENT_VOLUME, POOL_VOLUME
from gismo_operator.core.models import ACCESS_HOST_PATH
from gismo_operator.injection import (
    AgentSpec,
    InjectionError,
    InjectionPlan,
    inject_pod,
    is_injected,
    mark_skipped,
)

GI = 1 << 30


def hostpath_plan(**overrides: Any) -> InjectionPlan:
    return plan(access=ACCESS_HOST_PATH, **overrides)


def plan(**overrides: Any) -> InjectionPlan:
    values: dict[str, Any] = dict(
        pool="pool-a",
        backend="devdax",
        device_path="/dev/dax0.0",
        slice_offset=4 * GI,
        slice_size=7 * GI,
        region_index=2,
        region_offset=6 * GI,
        region_size=GI,
        agent=AgentSpec(image="gismo-agent:dev", image_pull_policy="IfNotPresent"),
        node_selector={"gismo.io/pool-a": "attached"},
        reservation="2026-01-01T00:00:00.000001+00:00",
    )
    values.update(overrides)
    return InjectionPlan(**values)


def kuberay_pod(**spec_extra: Any) -> dict[str, Any]:
    """The worker pod KubeRay v1.7 builds for its sample cluster (kuberay_shapes), as the webhook
    receives it; ``spec_extra`` replaces fields of its spec."""
    pod = shape("sample/workergroup")
    pod["spec"].update(spec_extra)
    return pod


def env_of(container: dict[str, Any]) -> dict[str, str]:
    """Plain values; downward-API entries as ``fieldRef:<path>``."""
    return {
        e["name"]: e["value"] if "value" in e else "fieldRef:" + e["valueFrom"]["fieldRef"]["fieldPath"]
        for e in container.get("env", [])
    }


def test_native_sidecar_is_appended_after_existing_init_containers() -> None:
    pod = kuberay_pod()  # KubeRay's worker: wait-gcs-ready first (the agent starts once the GCS is up)
    out = inject_pod(pod, plan())
    inits = out["spec"]["initContainers"]
    assert [c["name"] for c in inits] == ["wait-gcs-ready", AGENT_CONTAINER]
    assert inits[0] == pod["spec"]["initContainers"][0]
    assert inits[1]["restartPolicy"] == "Always"
    assert [c["name"] for c in out["spec"]["containers"]] == ["ray-worker"]


def test_without_native_sidecars_the_agent_is_the_last_container_never_the_first() -> None:
    pod = kuberay_pod()
    pod["spec"]["containers"].append({"name": "fluentbit", "image": "fluent/fluent-bit"})
    out = inject_pod(pod, plan(agent=AgentSpec(image="gismo-agent:dev", native_sidecar=False)))
    names = [c["name"] for c in out["spec"]["containers"]]
    assert names == ["ray-worker", "fluentbit", AGENT_CONTAINER]
    assert "restartPolicy" not in out["spec"]["containers"][-1]
    assert out["spec"]["initContainers"] == pod["spec"]["initContainers"]  # KubeRay's wait-gcs-ready only


def test_ray_container_gets_env_and_mounts_other_containers_do_not() -> None:
    pod = kuberay_pod()
    pod["spec"]["containers"].append({"name": "sidecar", "image": "x"})
    before = copy.deepcopy(pod["spec"]["containers"][0])
    out = inject_pod(pod, hostpath_plan())
    ray, other = out["spec"]["containers"]
    env = env_of(ray)
    assert env["RAY_CLUSTER_NAME"] == "fieldRef:metadata.labels['ray.io/cluster']"  # KubeRay's, kept
    assert [
        e for e in ray["env"] if not e["name"].startswith("GISMO_") and e["name"] != "PYTHONPATH"
    ] == before["env"]  # KubeRay's, kept (PYTHONPATH: the delivered client, see test_client_delivery)
    assert env["GISMO_POOL"] == "pool-a"
    assert env["GISMO_BACKEND"] == "devdax"
    assert env["GISMO_DEVICE"] == "/dev/dax0.0"
    assert env["GISMO_SLICE_OFFSET"] == str(4 * GI)
    assert env["GISMO_SLICE_SIZE"] == str(7 * GI)
    assert env["GISMO_REGION"] == "2"
    assert env["GISMO_REGION_OFFSET"] == str(6 * GI)
    assert env["GISMO_REGION_SIZE"] == str(GI)
    assert env["GISMO_SOCKET"] == SOCKET_PATH
    mounts = {m["name"]: m["mountPath"] for m in ray["volumeMounts"]}
    assert mounts == {
        **{m["name"]: m["mountPath"] for m in before["volumeMounts"]},  # shared-mem, the SA token
        POOL_VOLUME: "/dev/dax0.0",
        SOCKET_VOLUME: "/run/gismo",
        CLIENT_VOLUME: CLIENT_DIR,
    }
    assert other == {"name": "sidecar", "image": "x"}
    agent = out["spec"]["initContainers"][-1]
    assert env_of(agent) == {
        **{k: v for k, v in env.items() if k.startswith("GISMO_")},
        "GISMO_OWNER": "fieldRef:metadata.uid",  # the pod, never the host (hostNetwork shares it)
    }
    assert {m["name"] for m in agent["volumeMounts"]} == {POOL_VOLUME, SOCKET_VOLUME, CLIENT_VOLUME}
    # The startup probe passes once the agent answers, serving or degraded (Ray never waits for Gismo).
    assert agent["startupProbe"]["exec"]["command"] == ["gismo", "health", "--answering"]
    # hostPath access asks the kubelet for nothing.
    assert "gismo.io/pool-a" not in str(ray.get("resources")) + str(agent.get("resources"))


def test_with_the_device_plugin_containers_ask_for_the_pool_resource_and_mount_no_pool() -> None:
    pod = kuberay_pod()
    before = copy.deepcopy(pod["spec"]["containers"][0])
    out = inject_pod(pod, plan(agent=AgentSpec(image="a", resources={"requests": {"cpu": "1"}})))
    ray, agent = out["spec"]["containers"][0], out["spec"]["initContainers"][-1]
    for container in (ray, agent):
        assert container["resources"]["requests"]["gismo.io/pool-a"] == "1"
        assert container["resources"]["limits"]["gismo.io/pool-a"] == "1"
        assert POOL_VOLUME not in {m["name"] for m in container["volumeMounts"]}
    # The Ray container's own resources are kept; the agent's come from the plan.
    for part in ("requests", "limits"):
        assert {k: v for k, v in ray["resources"][part].items() if k != "gismo.io/pool-a"} == before[
            "resources"
        ][part]
    assert agent["resources"] == {
        "requests": {"cpu": "1", "gismo.io/pool-a": "1"},
        "limits": {"gismo.io/pool-a": "1"},
    }
    assert POOL_VOLUME not in {v["name"] for v in out["spec"]["volumes"]}
    assert not [v for v in out["spec"]["volumes"] if "hostPath" in v]
    # GISMO_DEVICE is the path the kubelet puts the device or file at (the node component uses the
    # host path inside the container too).
    assert env_of(ray)["GISMO_DEVICE"] == "/dev/dax0.0"


def test_a_pool_name_the_resource_cannot_carry_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="access: DevicePlugin needs a pool name"):
        plan(pool="p" * 64)
    hostpath_plan(pool="p" * 64)  # hostPath access has no such limit


def test_stale_gismo_env_in_the_ray_container_is_replaced_not_duplicated() -> None:
    pod = kuberay_pod()
    pod["spec"]["containers"][0]["env"].append({"name": "GISMO_REGION", "value": "99"})
    out = inject_pod(pod, plan())
    names = [e["name"] for e in out["spec"]["containers"][0]["env"]]
    assert names.count("GISMO_REGION") == 1
    assert env_of(out["spec"]["containers"][0])["GISMO_REGION"] == "2"


@pytest.mark.parametrize(
    ("backend", "path", "kind"),
    [("devdax", "/dev/dax0.0", "CharDevice"), ("shm", "/dev/shm/gismo/pool0", "File")],
)
def test_volumes_are_added_next_to_kuberays_shared_mem(backend: str, path: str, kind: str) -> None:
    out = inject_pod(kuberay_pod(), hostpath_plan(backend=backend, device_path=path))
    volumes = {v["name"]: v for v in out["spec"]["volumes"]}
    assert volumes["shared-mem"] == {
        "name": "shared-mem",
        "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"},  # KubeRay: the Ray container's memory limit
    }
    assert volumes[POOL_VOLUME]["hostPath"] == {"path": path, "type": kind}
    assert volumes[SOCKET_VOLUME] == {"name": SOCKET_VOLUME, "emptyDir": {}}


def test_volume_name_clash_is_a_clear_error() -> None:
    pod = kuberay_pod()
    pod["spec"]["volumes"].append({"name": POOL_VOLUME, "emptyDir": {}})
    with pytest.raises(InjectionError, match=r"spec\.volumes: .*'gismo-pool'"):
        inject_pod(pod, hostpath_plan())


def test_mount_path_clash_is_a_clear_error() -> None:
    pod = kuberay_pod()
    pod["spec"]["containers"][0]["volumeMounts"].append({"name": "mine", "mountPath": "/run/gismo"})
    with pytest.raises(InjectionError, match=r"spec\.containers\[0\]\.volumeMounts: '/run/gismo'"):
        inject_pod(pod, plan())


def test_pod_without_containers_is_a_clear_error() -> None:
    pod = kuberay_pod()
    pod["spec"]["containers"] = []
    with pytest.raises(InjectionError, match=r"spec\.containers"):
        inject_pod(pod, plan())


def test_affinity_is_created_when_the_pod_has_none() -> None:
    out = inject_pod(kuberay_pod(), plan())
    terms = out["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms == [
        {"matchExpressions": [{"key": "gismo.io/pool-a", "operator": "In", "values": ["attached"]}]}
    ]


def test_affinity_is_added_to_every_existing_term_and_nothing_else_is_touched() -> None:
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]},
                ]
            },
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "preference": {"matchExpressions": [{"key": "ssd", "operator": "Exists"}]}}
            ],
        },
        "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []},
    }
    pod = kuberay_pod(affinity=copy.deepcopy(affinity))
    out = inject_pod(pod, plan(node_selector={"b": "2", "a": "1"}))
    got = out["spec"]["affinity"]
    terms = got["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    pool = [
        {"key": "a", "operator": "In", "values": ["1"]},
        {"key": "b", "operator": "In", "values": ["2"]},
    ]
    assert terms[0]["matchExpressions"] == [{"key": "zone", "operator": "In", "values": ["a"]}, *pool]
    assert terms[1]["matchFields"] == [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]
    assert terms[1]["matchExpressions"] == pool
    assert (
        got["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        == affinity["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    )
    assert got["podAntiAffinity"] == affinity["podAntiAffinity"]
    assert pod["spec"]["affinity"] == affinity  # input untouched


def test_empty_node_selector_leaves_affinity_alone() -> None:
    out = inject_pod(kuberay_pod(), plan(node_selector={}))
    assert "affinity" not in out["spec"]


def test_agent_security_context_is_least_privilege() -> None:
    agent = inject_pod(kuberay_pod(), plan())["spec"]["initContainers"][-1]
    sc = agent["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert agent["image"] == "gismo-agent:dev" and agent["imagePullPolicy"] == "IfNotPresent"


def test_annotations_name_the_region_and_keep_existing_ones() -> None:
    pod = kuberay_pod()
    pod["metadata"]["annotations"] = {"ray.io/ft-enabled": "false"}
    out = inject_pod(pod, plan())
    assert out["metadata"]["annotations"] == {
        "ray.io/ft-enabled": "false",
        "gismo.io/pool": "pool-a",
        "gismo.io/region": "2",
        "gismo.io/region-offset": str(6 * GI),
        "gismo.io/region-size": str(GI),
        "gismo.io/reservation": "2026-01-01T00:00:00.000001+00:00",
    }
    assert out["metadata"]["generateName"] == pod["metadata"]["generateName"]
    assert "name" not in out["metadata"]


def test_injection_is_idempotent_and_does_not_mutate_its_input() -> None:
    pod = kuberay_pod()
    before = copy.deepcopy(pod)
    once = inject_pod(pod, plan())
    assert pod == before
    assert is_injected(once)
    assert inject_pod(once, plan(region_index=3, region_offset=7 * GI)) == once


def test_a_pod_with_the_agent_but_no_annotation_counts_as_injected() -> None:
    pod = kuberay_pod(initContainers=[{"name": AGENT_CONTAINER, "image": "x"}])
    assert is_injected(pod)
    assert inject_pod(pod, plan()) == pod


def test_skipped_pod_only_gets_the_reason() -> None:
    pod = kuberay_pod()
    before = copy.deepcopy(pod)
    out = mark_skipped(pod, "slice full")
    assert pod == before  # the input is never mutated (its parts are shared, not copied)
    assert out["metadata"]["annotations"] == {"gismo.io/skipped": "slice full"}
    out["metadata"].pop("annotations")
    assert out == pod
    assert is_injected(mark_skipped(pod, "x"))


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"backend": "nvme"}, "backend.type"),
        ({"device_path": "dev/dax0.0"}, "backend.path"),
        ({"agent": AgentSpec(image="")}, "agent.image"),
        ({"region_offset": 100 * GI}, "region 2"),
        ({"region_size": -1}, "region_size"),
    ],
)
def test_bad_plans_name_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        plan(**overrides)


@pytest.mark.parametrize(
    ("backend", "path", "coherence", "kind", "env"),
    [
        ("shm", "/dev/shm/gismo/pool0", "", "File", "hardware"),
        ("devdax", "/dev/dax0.0", "", "CharDevice", "flush"),
        ("famfs", "/dev/shm/famfs/pool0", "", "File", "flush"),  # famfs files: under an allowed folder
        ("devdax", "/dev/dax0.0", "hardware", "CharDevice", "hardware"),
    ],
)
def test_backend_and_coherence_reach_both_containers(
    backend: str, path: str, coherence: str, kind: str, env: str
) -> None:
    # A HostPath pool: the pool volume shows the backend's hostPath type (DevicePlugin pools have none).
    hostpath = plan(backend=backend, device_path=path, coherence=coherence, access="HostPath")
    out = inject_pod(kuberay_pod(), hostpath)
    volumes = {v["name"]: v for v in out["spec"]["volumes"]}
    assert volumes[POOL_VOLUME]["hostPath"] == {"path": path, "type": kind}
    containers = [*out["spec"]["containers"], *out["spec"].get("initContainers", [])]
    agent = next(c for c in containers if c["name"] == AGENT_CONTAINER)
    for c in (out["spec"]["containers"][0], agent):
        assert env_of(c)[ENV_COHERENCE] == env and env_of(c)[ENV_BACKEND] == backend
    with pytest.raises(ValueError, match=r"backend\.coherence"):
        plan(coherence="sometimes")
