"""The committed CRDs equal what the models generate, are structural, and their schemas accept the
example pool and reject malformed ones (validated with jsonschema from openAPIV3Schema)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gismo_operator import crdgen

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "gismopool.yaml"


@pytest.mark.parametrize("folder", ["crds", "charts/gismo/crds"])
def test_committed_crds_are_current(folder: str) -> None:
    expected = crdgen.all_crds()
    present = sorted(p.name for p in (REPO / folder).glob("gismo.io_*.yaml"))
    assert present == sorted(expected), f"{folder}: run `make crds`"
    for name, crd in expected.items():
        text = (REPO / folder / name).read_text()
        assert text == crdgen.render(crd), f"{folder}/{name} is stale: run `make crds`"


def schema_of(plural: str) -> dict[str, Any]:
    crd = next(c for c in crdgen.all_crds().values() if c["spec"]["names"]["plural"] == plural)
    version = crd["spec"]["versions"][0]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        out.append((path, node))
        for key, sub in node.get("properties", {}).items():
            out += walk(sub, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            out += walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            out += walk(node["additionalProperties"], f"{path}{{}}")
    return out


@pytest.mark.parametrize("plural", ["gismopools", "gismoslices"])
def test_schemas_are_structural(plural: str) -> None:
    for path, node in walk(schema_of(plural)):
        text = yaml.safe_dump(node)
        assert "$ref" not in text and "$defs" not in text, path
        assert "const" not in node and "title" not in node, path
        assert node.get("additionalProperties") is not False, path
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
            assert "type" not in node, path
        else:
            assert "type" in node, f"{path} has no type"
            assert "anyOf" not in node and "oneOf" not in node, path
        if "properties" in node:
            assert node["type"] == "object" and "additionalProperties" not in node, path


def test_crd_metadata() -> None:
    crds = {c["spec"]["names"]["plural"]: c for c in crdgen.all_crds().values()}
    pools, slices = crds["gismopools"], crds["gismoslices"]
    assert pools["spec"]["scope"] == "Cluster" and slices["spec"]["scope"] == "Namespaced"
    assert pools["spec"]["names"]["shortNames"] == ["gpool"]
    assert slices["spec"]["names"]["shortNames"] == ["gslice"]
    for crd in (pools, slices):
        assert crd["metadata"]["name"] == f"{crd['spec']['names']['plural']}.gismo.io"
        (version,) = crd["spec"]["versions"]
        assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
        assert version["subresources"] == {"status": {}}
    columns = [
        c["name"].upper()
        for c in pools["spec"]["versions"][0]["additionalPrinterColumns"]
        if c.get("priority", 0) == 0
    ]
    assert columns == ["CAPACITY", "ALLOCATED", "FREE", "SLICES", "READY", "AGE"]
    regions = slices["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "regions"
    ]
    assert regions["x-kubernetes-list-type"] == "map" and regions["x-kubernetes-list-map-keys"] == ["index"]
    assert regions["items"]["required"] == ["index", "state"]


def pool_validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(schema_of("gismopools"))


def example() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return data


def test_example_pool_is_accepted() -> None:
    errors = list(pool_validator().iter_errors(example()))
    assert errors == []


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda p: p["spec"].pop("capacity"), "capacity"),
        (lambda p: p["spec"].update(capacity="64Gx"), "capacity"),
        (lambda p: p["spec"].update(capacity="-1Gi"), "capacity"),
        (lambda p: p["spec"].update(regionSize=True), "regionSize"),
        (lambda p: p["spec"].update(regionSize=[1]), "regionSize"),
        (lambda p: p["spec"]["backend"].update(type="nvme"), "type"),
        (lambda p: p["spec"]["backend"].pop("path"), "path"),
        (lambda p: p["spec"]["backend"].update(path="relative/path"), "path"),
        (lambda p: p["spec"].update(nodeSelector={"zone": 1}), "nodeSelector"),
        (lambda p: p["spec"]["agent"].update(nativeSidecar="yes"), "nativeSidecar"),
        (lambda p: p["spec"]["agent"].update(imagePullPolicy="Sometimes"), "imagePullPolicy"),
        (lambda p: p["spec"]["agent"].update(resources={"requests": {"cpu": "lots"}}), "cpu"),
        (lambda p: p["spec"].update(access="Mount"), "access"),
        (
            lambda p: p["spec"].update(
                namespaceSelector={"matchExpressions": [{"key": "a", "operator": "Is"}]}
            ),
            "operator",
        ),
        (lambda p: p.pop("spec"), "spec"),
    ],
)
def test_malformed_pools_are_rejected(mutate: Any, where: str) -> None:
    pool = copy.deepcopy(example())
    mutate(pool)
    errors = list(pool_validator().iter_errors(pool))
    assert errors, "the schema accepted a malformed pool"
    assert any(where in "/".join(map(str, e.absolute_path)) or where in e.message for e in errors), errors


def test_integer_quantities_are_accepted() -> None:
    pool = example()
    pool["spec"].update(capacity=64 << 30, regionSize=1 << 30)
    assert list(pool_validator().iter_errors(pool)) == []


def test_slice_schema_accepts_a_slice_with_regions() -> None:
    sl = {
        "apiVersion": "gismo.io/v1alpha1",
        "kind": "GismoSlice",
        "metadata": {"name": "rc", "namespace": "ray"},
        "spec": {
            "pool": "pool0",
            "rayCluster": "rc",
            "offset": 0,
            "size": 4 << 30,
            "regionSize": 1 << 30,
            "regions": [
                {"index": 0, "state": "Reserved", "podName": "rc-head", "reservedAt": "2026-01-01T00:00:00Z"}
            ],
        },
    }
    validator = jsonschema.Draft7Validator(schema_of("gismoslices"))
    assert list(validator.iter_errors(sl)) == []
    sl["spec"]["regions"][0]["state"] = "Lost"
    assert list(validator.iter_errors(sl))


def test_crdgen_cli_writes_every_folder(tmp_path: Path) -> None:
    out, chart = tmp_path / "crds", tmp_path / "chart" / "crds"
    assert crdgen.main(["--out", str(out), "--chart", str(chart)]) == 0
    for folder in (out, chart):
        assert sorted(p.name for p in folder.iterdir()) == sorted(crdgen.all_crds())
        for name, crd in crdgen.all_crds().items():
            assert yaml.safe_load((folder / name).read_text()) == crd
