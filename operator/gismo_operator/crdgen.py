"""Generate the CRD manifests from the pydantic models: ``python -m gismo_operator.crdgen --out crds``.

Why generate: one source of truth. The schema the API server enforces, the model the operator
parses with and the chart's CRDs cannot drift; ``tests/unit/test_crds.py`` fails when the
committed files differ from what this module produces.

pydantic emits JSON Schema 2020-12; Kubernetes wants a *structural* OpenAPI v3 subset. The
conversion (``structural``) inlines ``$ref``s, turns ``X | None`` into an optional ``X`` (the field is
simply not required), drops ``title``/``additionalProperties: false``/null defaults, and keeps
``x-kubernetes-*`` extensions. ``metadata`` is left to the API server (``type: object``).
Cost: runs once at build time; output is sorted and stable so diffs are meaningful.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from gismo_operator.core import models

JSON = dict[str, Any]

_DROP_KEYS = {"title", "$defs"}


def _clean(text: str) -> str:
    """Docstrings to one-line API descriptions: single spaces, Markdown backticks (not RST)."""
    return " ".join(text.split()).replace("``", "`")


def _resolve(node: Any, defs: JSON) -> Any:
    """Inline ``$ref`` and normalise one schema node, recursively."""
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].split("/")[-1]
        merged = {**copy.deepcopy(defs[name]), **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs)
    out: JSON = {}
    for key, value in node.items():
        if key in _DROP_KEYS:
            continue
        if key == "properties":
            out[key] = {name: _resolve(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _resolve(value, defs)
        elif key in ("anyOf", "oneOf", "allOf"):
            out[key] = [_resolve(sub, defs) for sub in value]
        else:
            out[key] = copy.deepcopy(value)
    # `X | None`: optional X. The field is not required; a null is pruned by the API server.
    for key in ("anyOf", "oneOf"):
        branches = out.get(key)
        if branches and any(b == {"type": "null"} for b in branches):
            rest = [b for b in branches if b != {"type": "null"}]
            del out[key]
            if len(rest) == 1:
                out = {**rest[0], **out}
            else:
                out[key] = rest
    if isinstance(out.get("description"), str):
        out["description"] = _clean(out["description"])
    if out.get("default", 0) is None:
        del out["default"]
    if out.get("additionalProperties") is False:
        del out["additionalProperties"]
    if "const" in out:  # single-valued Literal: structural schemas know enum, not const
        out["enum"] = [out.pop("const")]
        out.setdefault("type", "string")
    if out.get("type") == "object" and "properties" in out and "additionalProperties" in out:
        del out["additionalProperties"]  # mutually exclusive in structural schemas
    return out


def structural(model: type[BaseModel]) -> JSON:
    """The structural OpenAPI v3 schema of ``model`` as it appears on the wire (camelCase)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _resolve(raw, raw.get("$defs", {}))  # type: ignore[no-any-return]


def _object_schema(spec: type[BaseModel], status: type[BaseModel], description: str) -> JSON:
    return {
        "type": "object",
        "description": description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": structural(spec),
            "status": structural(status),
        },
    }


def _crd(
    *,
    kind: str,
    plural: str,
    singular: str,
    short_names: list[str],
    scope: str,
    schema: JSON,
    columns: list[JSON],
) -> JSON:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{models.GROUP}",
            "labels": {"app.kubernetes.io/name": "gismo", "app.kubernetes.io/component": "crd"},
        },
        "spec": {
            "group": models.GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": short_names,
                "categories": ["gismo"],
            },
            "scope": scope,
            "versions": [
                {
                    "name": models.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                }
            ],
        },
    }


def pool_crd() -> JSON:
    """The ``gismopools.gismo.io`` CRD."""
    schema = _object_schema(
        models.GismoPoolSpec,
        models.GismoPoolStatus,
        "GismoPool: one CXL appliance (or its shm emulation) whose bytes are handed to Ray pods.",
    )
    columns: list[JSON] = [
        {"name": "Capacity", "type": "string", "jsonPath": ".status.capacity"},
        {"name": "Allocated", "type": "string", "jsonPath": ".status.allocated"},
        {"name": "Free", "type": "string", "jsonPath": ".status.free"},
        {"name": "Slices", "type": "integer", "jsonPath": ".status.slices"},
        {"name": "Ready", "type": "string", "jsonPath": ".status.ready"},
        {"name": "Backend", "type": "string", "jsonPath": ".spec.backend.type", "priority": 1},
        {"name": "Largest-Free", "type": "string", "jsonPath": ".status.largestFreeExtent", "priority": 1},
        {"name": "Regions", "type": "integer", "jsonPath": ".status.regions", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return _crd(
        kind=models.POOL_KIND,
        plural=models.POOL_PLURAL,
        singular=models.POOL_SINGULAR,
        short_names=models.POOL_SHORT_NAMES,
        scope="Cluster",
        schema=schema,
        columns=columns,
    )


def slice_crd() -> JSON:
    """The ``gismoslices.gismo.io`` CRD."""
    schema = _object_schema(
        models.GismoSliceSpec,
        models.GismoSliceStatus,
        "GismoSlice: the byte range of a GismoPool reserved for one RayCluster, and its per-pod regions.",
    )
    schema["properties"]["spec"]["x-kubernetes-validations"] = [
        {"rule": "self.size % self.regionSize == 0", "message": "size must be a multiple of regionSize"},
    ]
    columns: list[JSON] = [
        {"name": "Pool", "type": "string", "jsonPath": ".spec.pool"},
        {"name": "RayCluster", "type": "string", "jsonPath": ".spec.rayCluster"},
        {"name": "Offset", "type": "integer", "jsonPath": ".spec.offset"},
        {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
        {"name": "Regions", "type": "integer", "jsonPath": ".status.regionsTotal"},
        {"name": "In-Use", "type": "integer", "jsonPath": ".status.regionsInUse"},
        {"name": "Bound", "type": "integer", "jsonPath": ".status.regionsBound"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return _crd(
        kind=models.SLICE_KIND,
        plural=models.SLICE_PLURAL,
        singular=models.SLICE_SINGULAR,
        short_names=models.SLICE_SHORT_NAMES,
        scope="Namespaced",
        schema=schema,
        columns=columns,
    )


def region_crd() -> JSON:
    """The ``gismoregions.gismo.io`` CRD: one small object per region in use (no status)."""
    schema: JSON = {
        "type": "object",
        "description": "GismoRegion: region `index` of a GismoSlice, held by one Ray pod "
        "(named `<slice>-<index>`; creating it is the claim).",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": structural(models.GismoRegionSpec),
        },
    }
    columns: list[JSON] = [
        {"name": "Slice", "type": "string", "jsonPath": ".spec.slice"},
        {"name": "Index", "type": "integer", "jsonPath": ".spec.index"},
        {"name": "State", "type": "string", "jsonPath": ".spec.state"},
        {"name": "Pod", "type": "string", "jsonPath": ".spec.podName"},
        {"name": "Node", "type": "string", "jsonPath": ".spec.node"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    crd = _crd(
        kind=models.REGION_KIND,
        plural=models.REGION_PLURAL,
        singular=models.REGION_SINGULAR,
        short_names=models.REGION_SHORT_NAMES,
        scope="Namespaced",
        schema=schema,
        columns=columns,
    )
    del crd["spec"]["versions"][0]["subresources"]  # nothing but a spec: no status subresource
    return crd


def all_crds() -> dict[str, JSON]:
    """File name → CRD manifest, for every CRD of the project."""
    return {
        f"{models.GROUP}_{models.POOL_PLURAL}.yaml": pool_crd(),
        f"{models.GROUP}_{models.SLICE_PLURAL}.yaml": slice_crd(),
        f"{models.GROUP}_{models.REGION_PLURAL}.yaml": region_crd(),
    }


_HEADER = (
    "# Generated by `python -m gismo_operator.crdgen` from gismo_operator/core/models.py. Do not edit.\n"
)


def render(crd: JSON) -> str:
    """The YAML text written for one CRD (stable: sorted keys, fixed header)."""
    return _HEADER + yaml.safe_dump(crd, sort_keys=True, default_flow_style=False, width=120)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gismo_operator.crdgen", description=__doc__)
    parser.add_argument("--out", action="append", required=True, help="folder to write into (repeatable)")
    parser.add_argument("--chart", action="append", default=[], help="the chart's crds/ folder (repeatable)")
    args = parser.parse_args(argv)
    for folder in [*args.out, *args.chart]:
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        for name, crd in all_crds().items():
            (path / name).write_text(render(crd))
            print(f"wrote {path / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
