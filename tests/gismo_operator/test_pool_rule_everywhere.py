"""One pool rule, four boundaries: the same cases through the CRD schema (where a schema can say it),
the validating webhook's handler, the injection planner and the agent's Config; each refuses with the
same rule text, or all four accept."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import kopf
import pytest
import yaml

from gismo import poolrules
from gismo.config import Config, ConfigError
from gismo_operator.context import OperatorContext, install
from gismo_operator.handlers.pools import validate_pool
from gismo_operator.injection import AgentSpec, InjectionPlan
from gismo_operator.settings import Settings

MiB = 1 << 20
GiB = 1 << 30
CRD = Path(__file__).resolve().parents[2] / "crds" / "gismo.io_gismopools.yaml"
PREFIXES = ("/dev/shm", "/mnt/gismo-pools")


@dataclass(frozen=True)
class Case:
    name: str
    backend: str = "shm"
    path: str = "/dev/shm/gismo/pool0"
    region_size: int = 64 * MiB
    node_selector: dict[str, str] = field(default_factory=dict)
    #: None: every boundary accepts; else a fragment of the rule every boundary refuses with.
    rule: str | None = None
    #: Whether the CRD schema alone can refuse it (patterns, lengths).
    schema: bool = False


CASES = [
    Case("shm pool"),
    Case("devdax pool", backend="devdax", path="/dev/dax0.0", region_size=2 * MiB),
    Case("allowed extra folder", path="/mnt/gismo-pools/p0"),
    Case("smallest region", region_size=poolrules.min_region_size()),
    Case("node selector with prefix", node_selector={"example.com/cxl-pool": "pool-0", "zone": ""}),
    Case("region 1000", region_size=1000, rule="not a region the agent can serve"),
    Case("region 4096", region_size=4096, rule="not a region the agent can serve"),
    Case("region 256Ki", region_size=256 << 10, rule="not a region the agent can serve"),
    Case("region 1Gi+1", region_size=GiB + 1, rule="not a region the agent can serve"),
    Case("devdax region 1Mi", backend="devdax", path="/dev/dax0.0", region_size=MiB,
         rule="not a region the agent can serve: for devdax (2 MiB pages)"),
    Case("etc passwd", path="/etc/passwd", rule="must lie under one of the allowed folders"),
    Case("dotdot", path="/dev/shm/../etc/passwd", rule="absolute, normalized path", schema=True),
    Case("dot", path="/dev/shm/./p", rule="absolute, normalized path", schema=True),
    Case("double slash", path="/dev/shm//p", rule="absolute, normalized path", schema=True),
    Case("trailing slash", path="/dev/shm/p/", rule="absolute, normalized path", schema=True),
    Case("relative", path="dev/shm/p", rule="absolute, normalized path", schema=True),
    Case("NUL", path="/dev/shm/p\x00q", rule="absolute, normalized path", schema=True),
    Case("newline", path="/dev/shm/p\nq", rule="absolute, normalized path", schema=True),
    Case("prefix is not a folder", path="/dev/shmx/p", rule="must lie under one of the allowed folders"),
    Case("devdax not a dax device", backend="devdax", path="/dev/shm/p", region_size=2 * MiB,
         rule="/dev/dax<N>.<M>"),
    Case("empty label key", node_selector={"": "x"}, rule="label key ''"),
    Case("label key with path", node_selector={"a b/../c": "x"}, rule="label key 'a b/../c'"),
    Case("label key too long", node_selector={"k" * 64: "x"}, rule="the name part must be 1-63"),
    Case("label value with space", node_selector={"zone": "a b"}, rule="label value 'a b'", schema=True),
    Case("label value too long", node_selector={"zone": "v" * 64}, rule="label value", schema=True),
]  # fmt: skip


def pool_spec(case: Case) -> dict[str, Any]:
    return {
        "capacity": 16 * case.region_size if case.region_size > 0 else 1,
        "regionSize": case.region_size,
        "backend": {"type": case.backend, "path": case.path},
        "nodeSelector": case.node_selector,
    }


def crd_spec_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


def schema_refusal(case: Case) -> str | None:
    try:
        jsonschema.validate(pool_spec(case), crd_spec_schema())
    except jsonschema.ValidationError as exc:
        return str(exc.message)
    return None


def webhook_refusal(case: Case) -> str | None:
    install(OperatorContext(settings=Settings(file_backend_prefixes=PREFIXES)))
    body = kopf.Body({"spec": pool_spec(case)})
    try:
        asyncio.run(validate_pool(body=body, operation="CREATE"))
    except kopf.AdmissionError as exc:
        return str(exc)
    return None


def injection_refusal(case: Case) -> str | None:
    try:
        InjectionPlan(
            pool="pool0", backend=case.backend, device_path=case.path,  # type: ignore[arg-type]
            slice_offset=0, slice_size=4 * max(case.region_size, 1), region_index=0, region_offset=0,
            region_size=case.region_size, agent=AgentSpec(image="gismo-agent:dev"),
            node_selector=case.node_selector, file_prefixes=PREFIXES,
        )  # fmt: skip
    except ValueError as exc:
        return str(exc)
    return None


def agent_refusal(case: Case) -> str | None:
    cfg = Config(
        device=case.path, backend=case.backend, pool="pool0", slice_size=4 * max(case.region_size, 1),
        region=0, region_size=case.region_size, file_prefixes=PREFIXES,
    )  # fmt: skip
    try:
        cfg.validate()
    except ConfigError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_boundary_applies_the_same_rule(case: Case) -> None:
    answers = {
        "webhook": webhook_refusal(case),
        "injection": injection_refusal(case),
    }
    if not case.node_selector:  # the agent never sees a nodeSelector
        answers["agent"] = agent_refusal(case)
    if case.rule is None:
        assert answers == dict.fromkeys(answers), answers
        assert schema_refusal(case) is None
        return
    for boundary, answer in answers.items():
        assert answer is not None, f"{boundary} accepted {case.name}"
        assert case.rule in answer, f"{boundary}: {answer}"
    # The refusal names the field, in each boundary's own spelling.
    fields = {"regionSize": ("spec.regionSize", "regionSize", "GISMO_REGION_SIZE"),
              "path": ("spec.backend.path", "backend.path", "GISMO_DEVICE"),
              "nodeSelector": ("spec.nodeSelector", "nodeSelector", "nodeSelector")}  # fmt: skip
    kind = (
        "nodeSelector"
        if case.node_selector
        else ("regionSize" if "region the agent" in case.rule else "path")
    )
    spellings = dict(zip(("webhook", "injection", "agent"), fields[kind], strict=True))
    for boundary, answer in answers.items():
        assert re.search(rf"(^|; ){re.escape(spellings[boundary])}: ", answer or ""), (boundary, answer)
    if case.schema:
        assert schema_refusal(case) is not None, f"the CRD schema accepted {case.name}"


def test_the_minimum_region_is_derived_from_the_layout() -> None:
    from gismo.errors import CorruptRegion
    from gismo.memory.layout import Geometry

    low = poolrules.min_region_size()
    Geometry.compute(0, low)
    with pytest.raises(CorruptRegion):
        Geometry.compute(0, low - 4096)
