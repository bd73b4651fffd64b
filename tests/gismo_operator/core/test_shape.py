"""RayCluster shape -> slice size, from KubeRay's own samples."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from gismo_operator.core.shape import (
    UNBOUNDED_REPLICAS,
    ShapeError,
    cluster_shape,
    region_size_for,
    slice_size,
)
from gismo_operator.testing import embedded

SAMPLES = Path(__file__).resolve().parents[2] / "fixtures" / "kuberay" / "samples"
GI = 1 << 30


def sample(name: str) -> dict[str, Any]:
    path = SAMPLES / name
    assert path.exists(), f"KubeRay's samples are expected at {SAMPLES} (tests/fixtures/kuberay)"
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "RayCluster"]
    return dict(docs[0])


def test_sample_shape_is_head_plus_max_replicas() -> None:
    rc = sample("ray-cluster.sample.yaml")  # one group: replicas 1, maxReplicas 5
    assert cluster_shape(rc).pods == 1 + 5
    assert slice_size(cluster_shape(rc), GI) == 6 * GI


def test_complete_sample() -> None:
    assert cluster_shape(sample("ray-cluster.complete.yaml")).pods == 1 + 10


def test_replicas_are_used_when_max_replicas_is_absent_or_kuberays_unbounded_default() -> None:
    rc = sample("ray-cluster.kai-gpu-sharing.yaml")  # replicas 2, no maxReplicas
    assert cluster_shape(rc).pods == 1 + 2
    defaulted = copy.deepcopy(rc)
    defaulted["spec"]["workerGroupSpecs"][0]["maxReplicas"] = UNBOUNDED_REPLICAS  # what the API server stores
    assert cluster_shape(defaulted).pods == 1 + 2


def test_num_of_hosts_multiplies_and_groups_add_up() -> None:
    rc = sample("ray-cluster.sample.yaml")
    group = rc["spec"]["workerGroupSpecs"][0]
    tpu = {**copy.deepcopy(group), "groupName": "tpu", "replicas": 1, "maxReplicas": 2, "numOfHosts": 4}
    rc["spec"]["workerGroupSpecs"].append(tpu)
    shape = cluster_shape(rc)
    assert [(g.name, g.pods) for g in shape.groups] == [("workergroup", 5), ("tpu", 8)]
    assert shape.pods == 1 + 5 + 8


def test_head_only_cluster() -> None:
    rc = sample("ray-cluster.sample.yaml")
    del rc["spec"]["workerGroupSpecs"]
    assert cluster_shape(rc).pods == 1


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda rc: rc["spec"].pop("headGroupSpec"), r"spec\.headGroupSpec"),
        (
            lambda rc: rc["spec"]["workerGroupSpecs"][0].update(maxReplicas="5"),
            r"workerGroupSpecs\[0\]\.maxReplicas",
        ),
        (
            lambda rc: rc["spec"]["workerGroupSpecs"][0].update(numOfHosts=-1),
            r"workerGroupSpecs\[0\]\.numOfHosts",
        ),
        (lambda rc: rc["spec"].update(workerGroupSpecs="oops"), r"spec\.workerGroupSpecs"),
        (lambda rc: rc.pop("spec"), r"spec"),
    ],
)
def test_bad_shapes_name_the_field(mutate: Any, field: str) -> None:
    rc = sample("ray-cluster.sample.yaml")
    mutate(rc)
    with pytest.raises(ShapeError, match=field):
        cluster_shape(rc)


def test_region_size_override_must_be_a_multiple_of_the_pools() -> None:
    rc = sample("ray-cluster.sample.yaml")
    assert region_size_for(rc, GI) == GI
    rc["metadata"]["annotations"] = {"gismo.io/region-size": "2Gi"}
    assert region_size_for(rc, GI) == 2 * GI
    rc["metadata"]["annotations"] = {"gismo.io/region-size": "1536Mi"}
    with pytest.raises(ShapeError, match=r"gismo\.io/region-size.*multiple"):
        region_size_for(rc, GI)
    rc["metadata"]["annotations"] = {"gismo.io/region-size": "lots"}
    with pytest.raises(ShapeError, match=r"gismo\.io/region-size"):
        region_size_for(rc, GI)


def test_the_example_raycluster_opts_in_and_is_valid_against_kuberays_crd() -> None:
    import jsonschema

    root = Path(__file__).resolve().parents[3]
    example = yaml.safe_load((root / "examples" / "raycluster.yaml").read_text())
    assert example["metadata"]["annotations"]["gismo.io/pool"] == "pool0"
    assert cluster_shape(example).pods == 6
    crd_path = SAMPLES.parent / "ray.io_rayclusters.yaml"
    assert crd_path.exists(), f"KubeRay's CRD is expected at {crd_path} (tests/fixtures/kuberay)"
    crd = embedded.load_crd(crd_path)
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]
    jsonschema.validate(example, schema)
