"""Units of the embedded API and the demo: API-server-like creation, KubeRay's pods, applying an
admission answer, the tables. The whole demo runs in tests/test_demo.py."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from gismo_demo import demo
from gismo_operator import kube
from gismo_operator.testing import embedded, kuberay_sim


def test_seed_new_object_fills_what_the_api_server_would() -> None:
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "rc-head-"}, "spec": {}}
    obj = embedded.seed_new_object(kube.PODS, body, "1001")
    meta = obj["metadata"]
    assert meta["name"].startswith("rc-head-") and len(meta["name"]) == len("rc-head-") + 5
    assert meta["namespace"] == "default"
    assert meta["resourceVersion"] == "1001" and meta["generation"] == 1
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert "name" not in body["metadata"]  # the input is not modified


def test_seed_new_object_keeps_given_identity_and_cluster_scope() -> None:
    body = {"metadata": {"name": "pool0", "uid": "u-1", "namespace": "ignored"}}
    obj = embedded.seed_new_object(kube.POOLS, body, "7")
    assert obj["metadata"]["uid"] == "u-1" and obj["metadata"]["name"] == "pool0"
    with pytest.raises(ValueError, match="generateName"):
        embedded.seed_new_object(kube.PODS, {"metadata": {}}, "8")


def test_resource_of_manifests() -> None:
    assert embedded.resource_of({"apiVersion": "gismo.io/v1alpha1", "kind": "GismoPool"}) == kube.POOLS
    assert embedded.resource_of({"apiVersion": "ray.io/v1", "kind": "RayCluster"}) == kube.RAYCLUSTERS
    with pytest.raises(ValueError, match="unknown kind"):
        embedded.resource_of({"apiVersion": "apps/v1", "kind": "Deployment"})


def test_kuberay_pods_head_first_then_replicas_times_hosts() -> None:
    rc, source = kuberay_sim.load_raycluster(demo.REPO / "no-such-folder" / "raycluster.yaml")
    assert "built-in" in source
    rc["metadata"]["uid"] = "rc-uid"
    rc["spec"]["workerGroupSpecs"][0].update(replicas=2, numOfHosts=2)
    pods = kuberay_sim.pods_for(rc)
    assert [p["metadata"]["labels"]["ray.io/node-type"] for p in pods] == ["head"] + ["worker"] * 4
    head = pods[0]
    assert head["metadata"]["generateName"] == "raycluster-gismo-head-"
    assert "name" not in head["metadata"]
    assert head["metadata"]["labels"]["ray.io/is-ray-node"] == "yes"
    assert head["metadata"]["ownerReferences"][0]["uid"] == "rc-uid"
    assert head["spec"]["containers"][0]["name"] == "ray-head"  # containers[0] is Ray
    assert pods[1]["metadata"]["generateName"] == "raycluster-gismo-workergroup-worker-"


def _response(ops: list[dict[str, Any]] | None, allowed: bool = True) -> dict[str, Any]:
    answer: dict[str, Any] = {"uid": "x", "allowed": allowed}
    if ops is not None:
        answer.update(patchType="JSONPatch", patch=base64.b64encode(json.dumps(ops).encode()).decode())
    return answer


def test_apply_admission_patch_unchanged_and_denied() -> None:
    pod = {"metadata": {"annotations": {}}, "spec": {"containers": [{"name": "ray"}]}}
    ops = [
        {"op": "add", "path": "/metadata/annotations/gismo.io~1region", "value": "3"},
        {"op": "add", "path": "/spec/containers/-", "value": {"name": "extra"}},
    ]
    patched = kuberay_sim.apply_admission(pod, _response(ops))
    assert patched["metadata"]["annotations"] == {"gismo.io/region": "3"}
    assert [c["name"] for c in patched["spec"]["containers"]] == ["ray", "extra"]
    assert pod["metadata"]["annotations"] == {}  # not modified in place
    assert kuberay_sim.apply_admission(pod, _response(None)) == pod
    with pytest.raises(RuntimeError, match="denied"):
        kuberay_sim.apply_admission(pod, _response(None, allowed=False))


def test_table_aligns_columns_and_right_aligns_numbers() -> None:
    text = demo.table(["NAME", "SIZE"], [["a", 1], ["longer", 1000]], indent="")
    assert text.splitlines() == ["NAME     SIZE", "a           1", "longer   1000"]


def test_overlap() -> None:
    assert not demo._overlap([(0, 0, 10), (1, 10, 10)])
    assert demo._overlap([(0, 0, 10), (1, 5, 10)])
