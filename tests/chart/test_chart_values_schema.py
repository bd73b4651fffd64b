"""values.schema.json rejects bad values: helm template fails with a message naming the field."""

from __future__ import annotations

import pytest
from chartkit import helm, template_args

# (helm arguments, the field the error must name)
BAD_VALUES: list[tuple[list[str], str]] = [
    (["--set", "webhook.timeoutSeconds=31"], "/webhook/timeoutSeconds"),
    (["--set", "webhook.timeoutSeconds=0"], "/webhook/timeoutSeconds"),
    (["--set", "webhook.failurePolicy=Maybe"], "/webhook/failurePolicy"),
    (["--set", "webhook.sideEffects=Some"], "/webhook/sideEffects"),
    (["--set", "webhook.servicePort=70000"], "/webhook/servicePort"),
    (["--set", "webhook.certificate.mode=vault"], "/webhook/certificate/mode"),
    (["--set", "webhook.certificate.validityDays=0"], "/webhook/certificate/validityDays"),
    (
        ["--set-json", 'webhook.certificate.certManager.issuerRef={"name":"x","kind":"Vault"}'],
        "/webhook/certificate/certManager/issuerRef",
    ),
    (["--set", "webhook.certificate.certManager.duration=90d"], "/webhook/certificate/certManager/duration"),
    (
        ["--set-json", 'webhook.namespaceSelector={"matchExpressions":[{"key":"a","operator":"Maybe"}]}'],
        "/webhook/namespaceSelector/matchExpressions/0/operator",
    ),
    (["--set", "replicaCount=0"], "/replicaCount"),
    (["--set", "replicaCount=two"], "/replicaCount"),
    (["--set", "image.pullPolicy=Sometimes"], "/image/pullPolicy"),
    (["--set", "image.digest=sha256:abc"], "/image/digest"),
    (["--set", "image.repository="], "/image/repository"),
    (["--set", "agent.image.tag=bad tag"], "/agent/image/tag"),
    (["--set", "ports.webhook=443"], "/ports/webhook"),
    (["--set", "ports.metrics=99999"], "/ports/metrics"),
    (["--set", "operator.sweepInterval=120"], "/operator/sweepInterval"),
    (["--set", "operator.reservationTTL=120"], "/operator/reservationTTL"),
    (["--set", "operator.logFormat=xml"], "/operator/logFormat"),
    (["--set", "operator.logLevel=LOUD"], "/operator/logLevel"),
    (["--set", "peering.name=Bad_Name"], "/peering/name"),
    (["--set", "fullnameOverride=Bad_Name"], "/fullnameOverride"),
    (["--set", "pool.create=true", "--set", "pool.spec.backend.type=nvme"], "/pool/spec/backend/type"),
    (["--set", "pool.create=true", "--set", "pool.spec.capacity=lots"], "/pool/spec/capacity"),
    (["--set", "pool.create=true", "--set", "pool.spec.backend.path=relative"], "/pool/spec/backend/path"),
    (["--set", "pool.create=true", "--set", "pool.spec.capacityy=1Gi"], "capacityy"),
    (["--set", "pool.name=Not A Name"], "/pool/name"),
    (["--set", "metrics.serviceMonitor.interval=often"], "/metrics/serviceMonitor/interval"),
    (["--set", "podDisruptionBudget.minAvailable=-1"], "/podDisruptionBudget/minAvailable"),
    (["--set", "unknownTopLevel=1"], "unknownTopLevel"),
    (["--set", "webhook.timeoutSecs=5"], "timeoutSecs"),
]


@pytest.mark.parametrize(("args", "field"), BAD_VALUES, ids=[field for _, field in BAD_VALUES])
def test_bad_value_is_rejected_naming_the_field(args: list[str], field: str) -> None:
    result = helm(*template_args(*args))
    assert result.returncode != 0, f"helm template {' '.join(args)} rendered; it should have failed"
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    assert field in result.stderr, f"the error does not name {field}:\n{result.stderr}"


def test_service_monitor_needs_the_metrics_service() -> None:
    result = helm(
        *template_args(
            "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.service.enabled=false"
        )
    )
    assert result.returncode != 0
    assert "metrics.service.enabled" in result.stderr, result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--set", "webhook.timeoutSeconds=30"],
        ["--set", "webhook.timeoutSeconds=1"],
        ["--set", "webhook.failurePolicy=Fail"],
        ["--set", "replicaCount=2"],
        ["--set", "pool.create=true", "--set", "pool.spec.capacity=68719476736"],
        ["--set-json", 'webhook.certificate.certManager.issuerRef={"name":"ca","kind":"ClusterIssuer"}'],
    ],
)
def test_good_values_render(args: list[str]) -> None:
    result = helm(*template_args(*args))
    assert result.returncode == 0, result.stderr


def test_reservation_lifetime_above_60_seconds_is_refused() -> None:
    """Each value fits its own range, their sum does not: a reservation without a pod must be
    released within 60 s (the operator refuses such settings too)."""
    result = helm(*template_args("--set", "operator.reservationTTL=40", "--set", "operator.sweepInterval=25"))
    assert result.returncode != 0, "rendered with reservationTTL + sweepInterval = 65"
    assert "operator.reservationTTL (40) + operator.sweepInterval (25) must be at most 60" in result.stderr
    ok = helm(*template_args("--set", "operator.reservationTTL=30", "--set", "operator.sweepInterval=30"))
    assert ok.returncode == 0, ok.stderr
