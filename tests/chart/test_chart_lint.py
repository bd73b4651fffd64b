"""helm lint --strict on the chart, alone and with every value set the tests render."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml
from chartkit import CHART, HELM, REPO, VALUE_SETS, helm, helm_path, values_args


def test_helm_binary_is_the_real_helm_v4() -> None:
    assert helm_path() == HELM
    result = helm("version", "--short")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("v4."), f"expected helm v4, got {result.stdout!r}"


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_lint_strict(value_set: str) -> None:
    result = helm("lint", "--strict", str(CHART), *values_args(value_set))
    assert result.returncode == 0, f"helm lint --strict failed:\n{result.stdout}\n{result.stderr}"
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


def test_values_yaml_satisfies_its_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(values)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = (
            _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        )
    return out


@pytest.mark.parametrize("name", sorted({f for files in VALUE_SETS.values() for f in files}))
def test_value_set_files_satisfy_the_schema(name: str) -> None:
    """The same check helm makes, done with Python's jsonschema: both agree on the schema."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    values = yaml.safe_load((REPO / "tests" / "chart" / "values" / name).read_text())
    jsonschema.Draft7Validator(schema).validate(_merge(defaults, values))


def test_every_documented_value_is_in_the_schema() -> None:
    """values.yaml and values.schema.json describe the same keys (no undocumented or unchecked value)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(node: dict, sch: dict, path: str) -> list[str]:
        missing = []
        props = sch.get("properties", {})
        for key, value in node.items():
            if key not in props:
                missing.append(f"{path}{key}")
            elif isinstance(value, dict) and value and "properties" in props[key]:
                missing += walk(value, props[key], f"{path}{key}.")
        return missing

    assert walk(values, schema, "") == []


def test_missing_helm_fails_with_instructions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without .tools/bin/helm the chart tests fail (never skip) and say how to get it."""
    import chartkit

    monkeypatch.setattr(chartkit, "HELM", REPO / ".tools" / "bin" / "no-such-helm")
    with pytest.raises(pytest.fail.Exception, match=r"make tools"):
        chartkit.helm("version")
