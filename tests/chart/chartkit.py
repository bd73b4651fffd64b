"""Helpers for the chart tests: run the real helm binary, render value sets, find documents, validate.

helm is the v4 binary that ``make tools`` (scripts/install-tools.sh) puts in ``.tools/bin/helm``.
When it is missing the tests fail with that instruction: they are never skipped.
"""

from __future__ import annotations

import copy
import functools
import os
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "gismo"
CHART_CRDS = CHART / "crds"
HELM = REPO / ".tools" / "bin" / "helm"
VALUES_DIR = Path(__file__).resolve().parent / "values"

RELEASE = "gismo"
NAMESPACE = "gismo-system"
KUBE_VERSION = "1.37.0"  # the newest schemas kubernetes-validate 1.37.0 ships

# Value sets rendered by the tests: name -> values files under tests/chart/values/.
VALUE_SETS: dict[str, list[str]] = {
    "default": [],
    "cert-manager": ["cert-manager.yaml"],
    "ha": ["ha.yaml"],
    "pool": ["pool.yaml"],
    "everything": ["everything.yaml"],
}

# The admission handler ids of docs/CONTRACTS.md; kopf serves each at "/<id>".
MUTATE_RAYPOD = "mutate-raypod"
VALIDATE_GISMOPOOL = "validate-gismopool"

Doc = dict[str, Any]


def helm_path() -> Path:
    """The helm binary, or a test failure that says how to get it."""
    if not (HELM.is_file() and os.access(HELM, os.X_OK)):
        pytest.fail(
            f"helm not found at {HELM.relative_to(REPO)}: run `make tools` "
            "(bash scripts/install-tools.sh .tools/bin) first",
            pytrace=False,
        )
    return HELM


def helm(*args: str, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run helm with ``args``; the caller checks returncode/stdout/stderr."""
    env = {
        **os.environ,
        # Keep helm away from any real cluster (only the tests' fake API) and from user config.
        "KUBECONFIG": str(kubeconfig) if kubeconfig else os.devnull,
        "HELM_CACHE_HOME": str(REPO / ".tools" / "helm" / "cache"),
        "HELM_CONFIG_HOME": str(REPO / ".tools" / "helm" / "config"),
        "HELM_DATA_HOME": str(REPO / ".tools" / "helm" / "data"),
    }
    return subprocess.run(
        [str(helm_path()), *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def values_args(value_set: str) -> list[str]:
    args: list[str] = []
    for name in VALUE_SETS[value_set]:
        args += ["-f", str(VALUES_DIR / name)]
    return args


def template_args(*extra: str, include_crds: bool = False) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION]
    if include_crds:
        args.append("--include-crds")
    return [*args, *extra]


def render_text(*extra: str, include_crds: bool = False) -> str:
    """``helm template`` output; a failing render fails the test with helm's message."""
    result = helm(*template_args(*extra, include_crds=include_crds))
    if result.returncode != 0:
        pytest.fail(f"helm template {' '.join(extra)} failed:\n{result.stderr}", pytrace=False)
    return result.stdout


def parse(text: str) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


@functools.cache
def _render_set(value_set: str, include_crds: bool) -> tuple[Doc, ...]:
    return tuple(parse(render_text(*values_args(value_set), include_crds=include_crds)))


def render(value_set: str = "default", include_crds: bool = False) -> list[Doc]:
    """The documents of one value set (cached; each caller gets its own copy)."""
    return copy.deepcopy(list(_render_set(value_set, include_crds)))


def render_with(*extra: str) -> list[Doc]:
    return parse(render_text(*extra))


def find(docs: Iterable[Doc], kind: str, name: str | None = None) -> Doc:
    """The one document of ``kind`` (and ``name``); fails if there is none or several."""
    hits = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    what = f"{kind}/{name}" if name else kind
    assert len(hits) == 1, f"expected exactly one {what}, found {len(hits)}"
    return hits[0]


def find_all(docs: Iterable[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def container(deployment: Doc, name: str = "operator") -> Doc:
    return next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def env_of(c: Doc) -> dict[str, Any]:
    """name -> value (or the valueFrom dict)."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


# --------------------------------------------------------------------------------------------------
# Validation


def validate_builtin(doc: Doc) -> None:
    """A built-in kind against Kubernetes' own schema (strict: unknown fields are errors)."""
    kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def crd_documents(folder: Path = CHART_CRDS) -> list[Doc]:
    docs: list[Doc] = []
    for path in sorted(folder.glob("*.yaml")):
        docs += parse(path.read_text())
    return docs


def closed_schema(schema: Any) -> Any:
    """The CRD schema as the API server applies it, with pruning turned into errors: an object with
    ``properties`` and no ``x-kubernetes-preserve-unknown-fields`` accepts no other field (the API
    server would silently drop it, which is a bug in what the chart renders)."""
    if isinstance(schema, list):
        return [closed_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: closed_schema(v) for k, v in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def crd_schemas() -> dict[tuple[str, str], Doc]:
    """(apiVersion, kind) -> the strict JSON schema of that version, for every CRD the chart ships."""
    schemas: dict[tuple[str, str], Doc] = {}
    for crd in crd_documents():
        spec = crd["spec"]
        for version in spec["versions"]:
            api_version = f"{spec['group']}/{version['name']}"
            root = copy.deepcopy(version["schema"]["openAPIV3Schema"])
            # The API server always accepts these at the root, listed in the schema or not.
            implicit = {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {"type": "object"},
            }
            root["properties"] = {**implicit, **root.get("properties", {})}
            schemas[(api_version, spec["names"]["kind"])] = closed_schema(root)
    return schemas


def validate_custom(doc: Doc, schemas: dict[tuple[str, str], Doc]) -> None:
    schema = schemas[(doc["apiVersion"], doc["kind"])]
    jsonschema.Draft7Validator(schema).validate(doc)


# Third-party kinds whose CRDs are not in this repository (cert-manager, prometheus-operator). No
# upstream schema is available offline here, so these are checked against the subset of their
# v1 schemas that the chart uses: the field names and types below are copied from the
# cert-manager.io/v1 and monitoring.coreos.com/v1 API references; unknown fields are errors.
_STR = {"type": "string", "minLength": 1}
_META = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": _STR,
        "namespace": _STR,
        "labels": {"type": "object"},
        "annotations": {"type": "object"},
    },
    "additionalProperties": False,
}
_ISSUER_REF = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": _STR, "kind": {"enum": ["Issuer", "ClusterIssuer"]}, "group": _STR},
    "additionalProperties": False,
}
_DURATION = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"}


def _kind(api_version: str, kind: str, spec: Doc) -> Doc:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": _META,
            "spec": spec,
        },
        "additionalProperties": False,
    }


THIRD_PARTY_SCHEMAS: dict[tuple[str, str], Doc] = {
    ("cert-manager.io/v1", "Issuer"): _kind(
        "cert-manager.io/v1",
        "Issuer",
        {
            "type": "object",
            "minProperties": 1,
            "maxProperties": 1,
            "properties": {
                "selfSigned": {"type": "object"},
                "ca": {
                    "type": "object",
                    "required": ["secretName"],
                    "properties": {"secretName": _STR},
                    "additionalProperties": False,
                },
            },
            "additionalProperties": False,
        },
    ),
    ("cert-manager.io/v1", "Certificate"): _kind(
        "cert-manager.io/v1",
        "Certificate",
        {
            "type": "object",
            "required": ["secretName", "issuerRef"],
            "properties": {
                "secretName": _STR,
                "commonName": {"type": "string", "maxLength": 64},
                "dnsNames": {"type": "array", "items": _STR, "minItems": 1},
                "isCA": {"type": "boolean"},
                "duration": _DURATION,
                "renewBefore": _DURATION,
                "usages": {
                    "type": "array",
                    "items": {
                        "enum": ["digital signature", "key encipherment", "server auth", "client auth"]
                    },
                },
                "privateKey": {
                    "type": "object",
                    "properties": {
                        "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                        "size": {"type": "integer"},
                        "rotationPolicy": {"enum": ["Never", "Always"]},
                    },
                    "additionalProperties": False,
                },
                "issuerRef": _ISSUER_REF,
            },
            "additionalProperties": False,
        },
    ),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _kind(
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
        {
            "type": "object",
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {
                    "type": "object",
                    "properties": {
                        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}
                    },
                    "additionalProperties": False,
                },
                "namespaceSelector": {
                    "type": "object",
                    "properties": {"matchNames": {"type": "array", "items": _STR}},
                    "additionalProperties": False,
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "properties": {
                            "port": _STR,
                            "path": _STR,
                            "scheme": {"enum": ["http", "https"]},
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                        },
                        "additionalProperties": False,
                    },
                },
            },
            "additionalProperties": False,
        },
    ),
}


def validate_document(doc: Doc, schemas: dict[tuple[str, str], Doc]) -> str:
    """Validate one rendered document by the right schema; return which kind of schema was used."""
    key = (doc["apiVersion"], doc["kind"])
    if key in schemas:
        validate_custom(doc, schemas)
        return "crd"
    if key in THIRD_PARTY_SCHEMAS:
        jsonschema.Draft7Validator(THIRD_PARTY_SCHEMAS[key]).validate(doc)
        return "third-party"
    try:
        validate_builtin(doc)
    except kubernetes_validate.SchemaNotFoundError:
        pytest.fail(f"no schema to validate {doc['apiVersion']} {doc['kind']}: add one to the chart tests")
    return "builtin"


def iter_pod_containers(pod_spec: Doc) -> Iterator[Doc]:
    yield from pod_spec.get("initContainers", [])
    yield from pod_spec.get("containers", [])
