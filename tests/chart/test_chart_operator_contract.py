"""The chart configures the operator the operator's own code expects: the GISMO_OPERATOR_* env parses
with gismo_operator.settings, and the webhook configurations match the kopf admission handlers the
operator registers (the path is the handler id, as kopf serves it)."""

from __future__ import annotations

from typing import Any

import kopf
import pytest
import yaml
from chartkit import CHART, NAMESPACE, VALUE_SETS, Doc, container, env_of, find, render

from gismo_operator import registry
from gismo_operator.settings import PREFIX, Settings, unknown_variables

FIELD_REFS = {"metadata.namespace": NAMESPACE, "metadata.name": "gismo-5d9c7b8f6-abcde"}


def _process_env(deployment: Doc) -> dict[str, str]:
    """The operator container's environment as the kubelet would set it."""
    env: dict[str, str] = {}
    for name, value in env_of(container(deployment)).items():
        if isinstance(value, dict):
            value = FIELD_REFS[value["fieldRef"]["fieldPath"]]
        env[name] = str(value)
    return env


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_operator_settings_parse_the_chart_env(value_set: str) -> None:
    docs = render(value_set)
    deployment = find(docs, "Deployment")
    env = _process_env(deployment)
    ours = {k: v for k, v in env.items() if k.startswith(PREFIX)}
    assert unknown_variables(ours) == [], "the chart sets variables the operator does not read"
    settings = Settings.from_env(ours)

    op = container(deployment)
    ports = {p["name"]: p["containerPort"] for p in op["ports"]}
    assert settings.webhook_port == ports["webhook"]
    assert settings.metrics_port == ports["metrics"]
    assert settings.health_port == ports["health"]
    mounts = {m["mountPath"] for m in op["volumeMounts"]}
    assert str(settings.tls_dir) in mounts
    assert settings.namespace == NAMESPACE
    peering = [d["metadata"]["name"] for d in docs if d["kind"] == "ClusterKopfPeering"]
    assert settings.peering == (peering[0] if peering else None)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    if value_set == "default":
        assert (settings.agent_cpu, settings.agent_memory) == (
            values["agent"]["resources"]["cpu"],
            values["agent"]["resources"]["memory"],
        )
        assert settings.pod_security_default == values["podSecurity"]["defaultLevel"] == "privileged"


def _handlers() -> dict[str, Any]:
    registry.load_handlers()
    return {h.id: h for h in kopf.get_default_registry()._webhooks.get_all_handlers()}


def test_webhook_configurations_match_the_operator_handlers() -> None:
    """Every kopf admission handler has a chart webhook at /<id> with the same resource, operations,
    label selector and sideEffects kopf itself would register; and no chart webhook lacks a handler."""
    handlers = _handlers()
    docs = render("default")
    configured: dict[str, tuple[str, Doc]] = {}
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        for hook in find(docs, kind)["webhooks"]:
            configured[hook["clientConfig"]["service"]["path"].lstrip("/")] = (kind, hook)
    assert sorted(configured) == sorted(handlers), "chart webhooks and operator handlers differ"

    for handler_id, handler in handlers.items():
        kind, hook = configured[handler_id]
        assert kind.lower().startswith(str(handler.reason.value)), f"{handler_id}: {kind} vs {handler.reason}"
        (rule,) = hook["rules"]
        selector = handler.selector
        assert rule["apiGroups"] == [selector.group or ""]
        assert rule["apiVersions"] == [selector.version]
        resource = selector.plural or selector.any_name
        assert rule["resources"] == [
            resource if handler.subresource is None else f"{resource}/{handler.subresource}"
        ]
        assert sorted(rule["operations"]) == sorted(handler.operations or ["*"])
        labels = dict(handler.labels or {})
        assert hook.get("objectSelector", {}).get("matchLabels", {}) == labels, handler_id
        expected_side_effects = "NoneOnDryRun" if handler.side_effects else "None"
        assert hook["sideEffects"] == expected_side_effects, handler_id
        if handler.ignore_failures:
            assert hook["failurePolicy"] == "Ignore", handler_id
