"""The gismo.io/v1alpha1 models: parsing, defaults, wire names, and errors that name the field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from gismo_operator.core.models import (
    GismoPool,
    GismoSlice,
    GismoSliceSpec,
    LabelSelector,
    describe_validation_error,
)

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "gismopool.yaml"


def pool_body(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "apiVersion": "gismo.io/v1alpha1",
        "kind": "GismoPool",
        "metadata": {"name": "pool0"},
        "spec": {
            "capacity": "64Gi",
            "regionSize": "1Gi",
            "backend": {"type": "shm", "path": "/dev/shm/gismo"},
        },
    }
    base["spec"].update(spec)
    return base


def slice_body(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "metadata": {"name": "rc", "namespace": "ray"},
        "spec": {"pool": "pool0", "rayCluster": "rc", "offset": 0, "size": 4 << 30, "regionSize": 1 << 30},
    }
    base["spec"].update(spec)
    return base


def error_of(model: type[GismoPool] | type[GismoSlice], body: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        model.model_validate(body)
    return describe_validation_error(info.value)


def test_example_pool_parses() -> None:
    pool = GismoPool.model_validate(yaml.safe_load(EXAMPLE.read_text()))
    assert pool.spec.capacity == 64 << 30
    assert pool.spec.region_size == 1 << 30
    assert pool.spec.backend.type == "shm"
    assert pool.spec.region_count == 64


@pytest.mark.parametrize(
    ("backend", "given", "effective"),
    [
        ("shm", None, "hardware"),
        ("devdax", None, "flush"),
        ("famfs", None, "flush"),
        ("famfs", "hardware", "hardware"),
    ],
)
def test_coherence_defaults_by_backend(backend: str, given: str | None, effective: str) -> None:
    body = pool_body(capacity=8 << 30)
    path = "/dev/dax0.0" if backend == "devdax" else "/dev/shm/gismo/pool0"
    body["spec"]["backend"] = {"type": backend, "path": path, **({"coherence": given} if given else {})}
    assert GismoPool.model_validate(body).spec.backend.effective_coherence == effective


def test_defaults_and_wire_names() -> None:
    pool = GismoPool.model_validate(pool_body(capacity=8 << 30))
    assert pool.spec.agent.native_sidecar is True
    assert pool.spec.node_selector == {}
    assert pool.spec.namespace_selector is None
    wire = pool.to_api()
    assert wire["spec"]["regionSize"] == 1 << 30
    assert wire["spec"]["agent"]["nativeSidecar"] is True
    assert "namespaceSelector" not in wire["spec"]
    assert GismoPool.model_validate(wire).spec == pool.spec


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"capacity": "64Gx"}, "spec.capacity: '64Gx' is not a byte quantity"),
        ({"regionSize": "-1Gi"}, "spec.regionSize: "),
        (
            {"capacity": "64Gi", "regionSize": "3Gi"},
            "spec.capacity: 68719476736 bytes is not a multiple of regionSize",
        ),
        (
            {"capacity": "1Gi", "regionSize": "2Gi"},
            "spec.regionSize: 2147483648 bytes is larger than capacity",
        ),
        ({"capacity": 0}, "spec.capacity: must be greater than zero"),
        ({"backend": {"type": "nvme", "path": "/dev/x"}}, "spec.backend.type: "),
        ({"backend": {"type": "shm", "path": "relative"}}, "spec.backend.path: "),
        ({"capacty": "1Gi"}, "spec.capacty: Extra inputs are not permitted"),
        ({"agent": {"imagePullPolicy": "Sometimes"}}, "spec.agent.imagePullPolicy: "),
    ],
)
def test_bad_pools_name_the_field(spec: dict[str, Any], expected: str) -> None:
    assert expected in error_of(GismoPool, pool_body(**spec))


def test_missing_fields_are_named() -> None:
    body = pool_body()
    del body["spec"]["regionSize"]
    assert "spec.regionSize: Field required" in error_of(GismoPool, body)


def test_label_selector_rules() -> None:
    ok = LabelSelector.model_validate(
        {"matchExpressions": [{"key": "team", "operator": "In", "values": ["a"]}]}
    )
    assert ok.match_expressions[0].values == ["a"]
    with pytest.raises(ValidationError, match="must not be empty when operator is In"):
        LabelSelector.model_validate({"matchExpressions": [{"key": "team", "operator": "In"}]})
    with pytest.raises(ValidationError, match="must be empty when operator is Exists"):
        LabelSelector.model_validate(
            {"matchExpressions": [{"key": "t", "operator": "Exists", "values": ["x"]}]}
        )


def test_slice_with_regions() -> None:
    body = slice_body(
        regions=[
            {
                "index": 0,
                "state": "Bound",
                "podUID": "u-1",
                "podName": "rc-head-x",
                "node": "n1",
                "reservedAt": "2026-01-01T00:00:00Z",
            },
            {"index": 3, "state": "Reserved", "podName": "rc-worker-y"},
        ]
    )
    sl = GismoSlice.model_validate(body)
    assert sl.spec.region_count == 4
    assert sl.spec.end == 4 << 30
    assert [r.index for r in sl.spec.regions] == [0, 3]
    assert sl.spec.regions[0].pod_uid == "u-1"
    wire = sl.to_api()
    assert wire["spec"]["regions"][0]["podUID"] == "u-1"
    assert wire["spec"]["regions"][0]["reservedAt"] == "2026-01-01T00:00:00Z"
    assert wire["spec"]["rayCluster"] == "rc"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"size": 3}, "spec.size: 3 is not a multiple of regionSize"),
        ({"regions": [{"index": 4, "state": "Bound"}]}, "spec.regions[0].index: 4 is outside the slice"),
        (
            {"regions": [{"index": 1, "state": "Bound"}, {"index": 1, "state": "Reserved"}]},
            "spec.regions[1].index: region 1 is assigned twice",
        ),
        ({"regions": [{"index": 0, "state": "Lost"}]}, "spec.regions.0.state: "),
        ({"offset": -1}, "spec.offset: "),
        ({"pool": ""}, "spec.pool: "),
    ],
)
def test_bad_slices_name_the_field(spec: dict[str, Any], expected: str) -> None:
    assert expected in error_of(GismoSlice, slice_body(**spec))


def test_slice_spec_is_independent_of_input_dict() -> None:
    body = slice_body(regions=[{"index": 0, "state": "Bound"}])
    before = copy.deepcopy(body)
    GismoSliceSpec.model_validate(body["spec"])
    assert body == before


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ({}, {}, True),
        ({"matchLabels": {"team": "a"}}, {"team": "a", "x": "y"}, True),
        ({"matchLabels": {"team": "a"}}, {"team": "b"}, False),
        (
            {"matchExpressions": [{"key": "team", "operator": "In", "values": ["a", "b"]}]},
            {"team": "b"},
            True,
        ),
        ({"matchExpressions": [{"key": "team", "operator": "In", "values": ["a"]}]}, {}, False),
        ({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]}, {}, True),
        ({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]}, {"team": "a"}, False),
        ({"matchExpressions": [{"key": "gismo", "operator": "Exists"}]}, {"gismo": ""}, True),
        ({"matchExpressions": [{"key": "gismo", "operator": "Exists"}]}, {}, False),
        ({"matchExpressions": [{"key": "gismo", "operator": "DoesNotExist"}]}, {"gismo": "1"}, False),
        (
            {"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "Exists"}]},
            {"a": "1"},
            False,
        ),
    ],
)
def test_label_selector_matches(selector: dict[str, Any], labels: dict[str, str], expected: bool) -> None:
    assert LabelSelector.model_validate(selector).matches(labels) is expected


def test_pool_admits_namespaces() -> None:
    open_pool = GismoPool.model_validate(pool_body())
    assert open_pool.spec.admits_namespace({})
    closed = GismoPool.model_validate(
        pool_body(namespaceSelector={"matchLabels": {"gismo.io/allowed": "true"}})
    )
    assert closed.spec.admits_namespace({"gismo.io/allowed": "true"})
    assert not closed.spec.admits_namespace({"kubernetes.io/metadata.name": "other"})
