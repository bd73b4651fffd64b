"""Injection on every Ray pod shape KubeRay v1.7 builds for the samples (kuberay_shapes): the pods
stay valid Kubernetes objects, KubeRay's containers are untouched, everything Gismo adds passes the
Pod Security Standards (baseline and restricted, podsecurity.py's table from the Kubernetes docs),
and the pod's QoS class does not change."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
from kuberay_shapes import SHAPE_IDS, shape
from podsecurity import BASELINE, RESTRICTED, violations

from gismo_operator.core.models import ACCESS_DEVICE_PLUGIN, ACCESS_HOST_PATH
from gismo_operator.injection import AgentSpec, InjectionPlan, inject_pod
from gismo_operator.injection.qos import BEST_EFFORT, BURSTABLE, GUARANTEED, qos_class
from gismo_operator.injection.resources import agent_resources

GI = 1 << 30
MI = 1 << 20
KUBE_VERSION = "1.37.0"


def plan_for(pod: dict[str, Any], access: str = ACCESS_DEVICE_PLUGIN, backend: str = "shm") -> InjectionPlan:
    path = "/dev/dax0.0" if backend == "devdax" else "/dev/shm/gismo/pool-a"
    resources = agent_resources(pod, None, backend=backend, region_size=GI, cpu="200m", memory="128Mi")
    return InjectionPlan(
        pool="pool-a", backend=backend, device_path=path, slice_offset=0, slice_size=4 * GI,  # type: ignore[arg-type]
        region_index=1, region_offset=GI, region_size=GI,
        agent=AgentSpec(image="gismo-agent:0.1.0", resources=resources),
        node_selector={"gismo.io/attached": "pool-a"}, reservation="r-1", access=access,
    )  # fmt: skip


def stored(pod: dict[str, Any]) -> dict[str, Any]:
    """The pod as the API server stores it (a name from generateName)."""
    out = copy.deepcopy(pod)
    out["metadata"]["name"] = out["metadata"]["generateName"] + "x7k2q"
    return out


@pytest.mark.parametrize("shape_id", SHAPE_IDS)
@pytest.mark.parametrize("access", [ACCESS_DEVICE_PLUGIN, ACCESS_HOST_PATH])
def test_the_injected_pod_is_valid_and_keeps_kuberays_containers(shape_id: str, access: str) -> None:
    pod = shape(shape_id)
    kubernetes_validate.validate(stored(pod), KUBE_VERSION, strict=True)  # the shape itself is valid
    out = inject_pod(pod, plan_for(pod, access))
    kubernetes_validate.validate(stored(out), KUBE_VERSION, strict=True)
    spec, before = out["spec"], pod["spec"]
    # containers[0] stays the Ray container; every other container of KubeRay's is untouched.
    assert [c["name"] for c in spec["containers"]] == [c["name"] for c in before["containers"]]
    assert spec["containers"][1:] == before["containers"][1:]
    assert spec["initContainers"][:-1] == before.get("initContainers", [])
    ray_before, ray = before["containers"][0], spec["containers"][0]
    changed = {k for k in set(ray) | set(ray_before) if ray.get(k) != ray_before.get(k)}
    assert changed <= {"env", "volumeMounts", "resources"}
    # No duplicate names anywhere.
    for key in ("initContainers", "containers", "volumes"):
        names = [x["name"] for x in spec.get(key, [])]
        assert len(names) == len(set(names)), key
    for c in [*spec["initContainers"], *spec["containers"]]:
        paths = [m["mountPath"] for m in c.get("volumeMounts", [])]
        assert len(paths) == len(set(paths)), c["name"]


def _added(pod: dict[str, Any], out: dict[str, Any], level: str) -> set[tuple[str, str]]:
    return violations(out, level) - violations(pod, level)


@pytest.mark.parametrize("shape_id", SHAPE_IDS)
@pytest.mark.parametrize("backend", ["shm", "devdax"])
def test_gismo_adds_nothing_pod_security_baseline_or_restricted_refuses(shape_id: str, backend: str) -> None:
    pod = shape(shape_id)
    out = inject_pod(pod, plan_for(pod, ACCESS_DEVICE_PLUGIN, backend))
    assert _added(pod, out, BASELINE) == set()
    assert _added(pod, out, RESTRICTED) == set()
    # What Gismo adds, alone in a pod, passes restricted: the agent and the socket volume.
    agent = out["spec"]["initContainers"][-1]
    alone = {"spec": {"initContainers": [agent], "containers": [], "volumes": [
        v for v in out["spec"]["volumes"] if v["name"] == "gismo-socket"
    ]}}  # fmt: skip
    assert violations(alone, RESTRICTED) == set()


@pytest.mark.parametrize("shape_id", SHAPE_IDS)
def test_hostpath_access_is_what_baseline_refuses(shape_id: str) -> None:
    """Why the webhook never uses hostPath in a baseline or restricted namespace: PodSecurity would
    refuse the pod (after the webhook, so failurePolicy Ignore would not help)."""
    pod = shape(shape_id)
    out = inject_pod(pod, plan_for(pod, ACCESS_HOST_PATH))
    assert {c for c, _ in _added(pod, out, BASELINE)} == {"HostPath Volumes"}
    assert {c for c, _ in _added(pod, out, RESTRICTED)} == {"HostPath Volumes", "Volume Types"}


def test_the_table_catches_what_it_claims() -> None:
    """Each control of the table can fail (no check that passes everything)."""
    bad = {
        "spec": {
            "hostNetwork": True,
            "securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]},
            "volumes": [{"name": "h", "hostPath": {"path": "/"}}, {"name": "n", "nfs": {"server": "s"}}],
            "containers": [{
                "name": "c", "image": "i",
                "ports": [{"containerPort": 80, "hostPort": 80}],
                "securityContext": {
                    "privileged": True, "capabilities": {"add": ["SYS_ADMIN"]}, "procMount": "Unmasked",
                    "seccompProfile": {"type": "Unconfined"}, "runAsUser": 0,
                    "seLinuxOptions": {"type": "spc_t"}, "appArmorProfile": {"type": "Unconfined"},
                    "windowsOptions": {"hostProcess": True},
                },
            }],
        }
    }  # fmt: skip
    baseline = {c for c, _ in violations(bad, BASELINE)}
    assert baseline == {
        "HostProcess", "Host Namespaces", "Privileged Containers", "Capabilities (baseline)",
        "HostPath Volumes", "Host Ports", "AppArmor", "SELinux", "/proc Mount Type",
        "Seccomp (baseline)", "Sysctls",
    }  # fmt: skip
    restricted = {c for c, _ in violations(bad, RESTRICTED)} - baseline
    assert restricted == {
        "Volume Types", "Privilege Escalation", "Running as Non-root", "Running as Non-root user",
        "Seccomp (restricted)", "Capabilities (restricted)",
    }  # fmt: skip


# --------------------------------------------------------------------------------------------------
# QoS


def guaranteed(pod: dict[str, Any]) -> dict[str, Any]:
    """The shape with requests = limits (cpu and memory) on every container, as a user who wants
    CPU pinning writes it."""
    out = copy.deepcopy(pod)
    for c in [*out["spec"].get("initContainers", []), *out["spec"]["containers"]]:
        limits = {
            "cpu": "1",
            "memory": "1Gi",
            **{k: v for k, v in (c.get("resources") or {}).get("limits", {}).items()},
        }
        limits = {k: limits[k] for k in ("cpu", "memory")}
        c["resources"] = {"requests": dict(limits), "limits": dict(limits)}
    return out


def best_effort(pod: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(pod)
    for c in [*out["spec"].get("initContainers", []), *out["spec"]["containers"]]:
        c["resources"] = {}
    return out


@pytest.mark.parametrize("shape_id", SHAPE_IDS)
@pytest.mark.parametrize("backend", ["shm", "devdax"])
def test_injection_keeps_the_qos_class(shape_id: str, backend: str) -> None:
    for variant in (shape(shape_id), guaranteed(shape(shape_id)), best_effort(shape(shape_id))):
        before = qos_class(variant)
        out = inject_pod(variant, plan_for(variant, ACCESS_DEVICE_PLUGIN, backend))
        assert qos_class(out) == before, shape_id
    assert qos_class(guaranteed(shape(shape_id))) == GUARANTEED


def test_agent_default_resources_are_small_equal_and_hold_the_region_for_files() -> None:
    pod = guaranteed(shape("sample/workergroup"))
    shm = agent_resources(pod, None, backend="shm", region_size=GI, cpu="200m", memory="128Mi")
    assert shm["requests"] == shm["limits"] == {"cpu": "200m", "memory": str(128 * MI + GI)}
    dax = agent_resources(pod, None, backend="devdax", region_size=GI, cpu="200m", memory="128Mi")
    assert dax["requests"] == dax["limits"] == {"cpu": "200m", "memory": str(128 * MI)}
    own = {"limits": {"cpu": "1", "memory": "2Gi"}}
    assert agent_resources(pod, own, backend="shm", region_size=GI, cpu="200m", memory="128Mi") == own
    assert agent_resources(best_effort(pod), None, backend="shm", region_size=GI, cpu="1", memory="1Gi") == {}


def _pod(*containers: dict[str, Any], init: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    spec = {
        "containers": [{"name": f"c{i}", "resources": r} for i, r in enumerate(containers)],
        "initContainers": [{"name": f"i{i}", "resources": r} for i, r in enumerate(init)],
    }
    return {"spec": spec}


G = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        # The examples of the Kubernetes "Pod Quality of Service Classes" page, and the edges.
        (_pod(G), GUARANTEED),
        (_pod({"limits": {"cpu": "700m", "memory": "200Mi"}}), GUARANTEED),  # requests default to limits
        (
            _pod(
                {"requests": {"cpu": "0.7", "memory": "200Mi"}, "limits": {"cpu": "700m", "memory": "200Mi"}}
            ),
            GUARANTEED,
        ),  # the same quantity written two ways
        (_pod({"requests": {"memory": "100Mi"}, "limits": {"memory": "200Mi"}}), BURSTABLE),
        (_pod({"limits": {"memory": "1Gi"}}), BURSTABLE),  # no CPU limit
        (_pod(G, {}), BURSTABLE),  # one container without resources
        (_pod(G, init=({"requests": {"cpu": "100m"}},)), BURSTABLE),  # init containers count
        (_pod({}, {}), BEST_EFFORT),
        (_pod({"requests": {"cpu": "0"}}), BEST_EFFORT),  # zero is not a request
        (_pod({"limits": {"nvidia.com/gpu": "1"}}), BEST_EFFORT),  # only CPU and memory count
        (
            _pod(
                {
                    **G,
                    "limits": {**G["limits"], "gismo.io/p": "1"},
                    "requests": {**G["requests"], "gismo.io/p": "1"},
                }
            ),
            GUARANTEED,
        ),
    ],
)
def test_qos_class_follows_the_kubernetes_rules(pod: dict[str, Any], expected: str) -> None:
    assert qos_class(pod) == expected
