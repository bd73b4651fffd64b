"""Every manifest under examples/ is what a user applies as is: each document must pass the schema the
API server would apply (built-in kinds: Kubernetes' own; ours: the CRDs; RayCluster: KubeRay's CRD)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from chartkit import REPO, Doc, crd_schemas, validate_document

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
KUBERAY_CRD = REPO / "tests" / "fixtures" / "kuberay" / "ray.io_rayclusters.yaml"


def schemas_with_kuberay() -> dict[tuple[str, str], Doc]:
    schemas = crd_schemas()
    crd = yaml.safe_load(KUBERAY_CRD.read_text())
    for version in crd["spec"]["versions"]:
        root = copy.deepcopy(version["schema"]["openAPIV3Schema"])
        root["properties"]["metadata"] = {"type": "object"}
        schemas[(f"ray.io/{version['name']}", "RayCluster")] = root
    return schemas


def test_there_are_examples() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"gismopool.yaml", "raycluster.yaml", "pool-node-prep.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_documents_validate(path: Path) -> None:
    schemas = schemas_with_kuberay()
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs, f"{path.name} holds no document"
    for doc in docs:
        validate_document(doc, schemas)


def test_node_prep_matches_the_example_pool() -> None:
    """The node-prep DaemonSet creates the file the example pool names, at the pool's capacity."""
    from gismo_operator.core.models import GismoPool

    pool = GismoPool.model_validate(yaml.safe_load((REPO / "examples" / "gismopool.yaml").read_text()))
    ds = yaml.safe_load((REPO / "examples" / "pool-node-prep.yaml").read_text())
    env = {e["name"]: e["value"] for e in ds["spec"]["template"]["spec"]["initContainers"][0]["env"]}
    assert env["POOL_PATH"] == pool.spec.backend.path
    assert int(env["POOL_SIZE"]) == pool.spec.capacity
