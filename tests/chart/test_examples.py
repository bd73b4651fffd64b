"""Every manifest under examples/ is what a user applies as is: each document must pass the schema the
API server would apply (built-in kinds: Kubernetes' own; ours: the CRDs; RayCluster: KubeRay's CRD)."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import jsonschema
import pytest
import yaml
from chartkit import REPO, Doc, closed_schema, crd_schemas, validate_document

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
KUBERAY_CRD = REPO / "tests" / "fixtures" / "kuberay" / "ray.io_rayclusters.yaml"


@functools.cache
def schemas_with_kuberay() -> dict[tuple[str, str], Doc]:
    """Built once per run (KubeRay's CRD is large; callers only read the result)."""
    schemas = crd_schemas()
    crd = yaml.load(KUBERAY_CRD.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    for version in crd["spec"]["versions"]:
        root = copy.deepcopy(version["schema"]["openAPIV3Schema"])
        root["properties"]["metadata"] = {"type": "object"}
        # Closed as the API server applies it: a field KubeRay's schema does not know is an error here
        # (the API server would prune it silently, so the example would not do what it says).
        schemas[(f"ray.io/{version['name']}", "RayCluster")] = closed_schema(root)
    return schemas


def test_there_are_examples() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"gismopool.yaml", "raycluster.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_documents_validate(path: Path) -> None:
    schemas = schemas_with_kuberay()
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs, f"{path.name} holds no document"
    for doc in docs:
        validate_document(doc, schemas)


@pytest.mark.parametrize(
    "where",
    [
        ("spec",),
        ("spec", "headGroupSpec"),
        ("spec", "workerGroupSpecs", 0),
        ("spec", "headGroupSpec", "template", "spec", "containers", 0),
    ],
    ids=lambda w: ".".join(map(str, w)),
)
def test_raycluster_example_with_an_unknown_field_fails(where: tuple[str | int, ...]) -> None:
    """The KubeRay schema is closed: the example validates because every field is known, not because
    anything goes."""
    schemas = schemas_with_kuberay()
    doc = next(
        d
        for d in yaml.safe_load_all((REPO / "examples" / "raycluster.yaml").read_text())
        if d and d["kind"] == "RayCluster"
    )
    validate_document(doc, schemas)
    node = doc
    for key in where:
        node = node[key]
    node["gismoTypo"] = True
    with pytest.raises(jsonschema.ValidationError, match="gismoTypo"):
        validate_document(doc, schemas)


def test_the_node_values_serve_the_example_pool() -> None:
    """examples/values/node-pool0.yaml makes the chart's node component serve the example pool: same
    name, capacity, backend and nodes, and the config it renders is one gismo node accepts."""
    import json

    from chartkit import find, render_with

    from gismo.node.config import parse_config
    from gismo_operator.core.models import GismoPool

    pool_doc = yaml.safe_load((REPO / "examples" / "gismopool.yaml").read_text())
    pool = GismoPool.model_validate(pool_doc)
    values_path = REPO / "examples" / "values" / "node-pool0.yaml"
    (entry,) = yaml.safe_load(values_path.read_text())["node"]["pools"]
    assert entry["name"] == pool_doc["metadata"]["name"]
    assert entry["backend"] == pool_doc["spec"]["backend"]
    assert entry["nodeSelector"] == pool.spec.node_selector
    docs = render_with("-f", str(values_path))
    config = parse_config(json.loads(find(docs, "ConfigMap", "gismo-node-pool0")["data"]["node.json"]))
    (served,) = config.pools
    assert (served.name, served.capacity, served.path) == (
        "pool0",
        pool.spec.capacity,
        pool.spec.backend.path,
    )


def test_node_prep_matches_the_example_pool() -> None:
    """examples/pool-node-prep.yaml (clusters without the node component) prepares the example pool."""
    from gismo_operator.core.models import GismoPool

    pool = GismoPool.model_validate(yaml.safe_load((REPO / "examples" / "gismopool.yaml").read_text()))
    ds = yaml.safe_load((REPO / "examples" / "pool-node-prep.yaml").read_text())
    env = {e["name"]: e["value"] for e in ds["spec"]["template"]["spec"]["initContainers"][0]["env"]}
    assert env["POOL_PATH"] == pool.spec.backend.path
    assert int(env["POOL_SIZE"]) == pool.spec.capacity


def test_node_prep_script_makes_a_pool_file_the_agent_accepts(tmp_path: Path) -> None:
    """The DaemonSet's script, run against a folder standing in for the host: a Gismo pool file of the
    example pool; run again, it keeps it; a foreign file at the path is refused, untouched."""
    import subprocess
    import sys

    from gismo.memory.poolfile import check_pool_file

    ds = yaml.safe_load((REPO / "examples" / "pool-node-prep.yaml").read_text())
    init = ds["spec"]["template"]["spec"]["initContainers"][0]
    env = {e["name"]: e["value"] for e in init["env"]}
    env |= {"HOST_ROOT": str(tmp_path), "POOL_SIZE": str(1 << 20)}
    script = init["command"][-1]
    for _ in range(2):
        subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True)
        marker = check_pool_file(str(tmp_path) + env["POOL_PATH"], env["POOL_NAME"], 1 << 20)
        assert marker.capacity == 1 << 20
    foreign = tmp_path / "foreign"
    foreign.write_bytes(b"keep me")
    env["POOL_PATH"] = "/foreign"
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert run.returncode != 0 and "not a Gismo pool file" in run.stderr
    assert foreign.read_bytes() == b"keep me"


def test_the_famfs_values_give_a_pool_every_boundary_accepts() -> None:
    """examples/values/famfs-pool0.yaml (README, Running on CXL hardware): the famfs file lies under a
    folder both the operator (fileBackendPrefixes) and the node component (fileRoots) allow, the
    rendered GismoPool passes the pool rule with the operator's rendered setting, and gismo node
    accepts its config."""
    import json

    from chartkit import find, render_with

    from gismo import poolrules
    from gismo.node.config import parse_config
    from gismo_operator.core.models import GismoPool

    docs = render_with("-f", str(REPO / "examples" / "values" / "famfs-pool0.yaml"))
    pool = GismoPool.model_validate(find(docs, "GismoPool", "pool0"))
    assert pool.spec.backend.type == "famfs"
    env = {
        e["name"]: e.get("value")
        for c in find(docs, "Deployment", "gismo")["spec"]["template"]["spec"]["containers"]
        for e in c.get("env", [])
    }
    prefixes = poolrules.normalize_prefixes(env["GISMO_OPERATOR_FILE_BACKEND_PREFIXES"].split(","))
    assert poolrules.path_problems("famfs", pool.spec.backend.path, prefixes) == []
    assert poolrules.path_problems("famfs", pool.spec.backend.path, poolrules.DEFAULT_FILE_PREFIXES)
    config = parse_config(json.loads(find(docs, "ConfigMap", "gismo-node-pool0")["data"]["node.json"]))
    (served,) = config.pools
    assert (served.backend, served.path, served.capacity) == (
        "famfs",
        pool.spec.backend.path,
        pool.spec.capacity,
    )
