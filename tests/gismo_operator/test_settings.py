"""Operator settings from GISMO_OPERATOR_* env: defaults, parsing, and errors naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from gismo_operator.settings import Settings, SettingsError, unknown_variables


def test_defaults_match_the_contract() -> None:
    s = Settings.from_env({"GISMO_OPERATOR_NAMESPACE": "gismo-system"})
    assert s.webhook_port == 9443
    assert s.webhook_host is None
    assert s.tls_dir == Path("/etc/gismo/tls")
    assert s.tls_cert == Path("/etc/gismo/tls/tls.crt")
    assert s.tls_key == Path("/etc/gismo/tls/tls.key")
    assert (s.metrics_port, s.health_port) == (8080, 8081)
    assert (s.log_format, s.log_level) == ("text", "INFO")
    assert (s.sweep_interval, s.reservation_ttl) == (25.0, 30.0)
    assert s.sweep_interval + s.reservation_ttl <= 60  # a reservation without a pod expires within 60 s
    assert s.namespace == "gismo-system"
    assert s.peering is None


def test_values_are_parsed() -> None:
    s = Settings.from_env(
        {
            "GISMO_OPERATOR_WEBHOOK_PORT": "10443",
            "GISMO_OPERATOR_WEBHOOK_HOST": "gismo-webhook.gismo-system.svc",
            "GISMO_OPERATOR_TLS_DIR": "/tls",
            "GISMO_OPERATOR_METRICS_PORT": "0",
            "GISMO_OPERATOR_HEALTH_PORT": "9000",
            "GISMO_OPERATOR_LOG_FORMAT": "JSON",
            "GISMO_OPERATOR_LOG_LEVEL": "debug",
            "GISMO_OPERATOR_SWEEP_INTERVAL": "2.5",
            "GISMO_OPERATOR_RESERVATION_TTL": "45",
            "GISMO_OPERATOR_NAMESPACE": "ops",
            "GISMO_OPERATOR_PEERING": "gismo",
            "GISMO_OPERATOR_DEFAULT_AGENT_IMAGE": "registry/gismo-agent:1.0",
        }
    )
    assert s.webhook_port == 10443
    assert s.webhook_host == "gismo-webhook.gismo-system.svc"
    assert s.tls_dir == Path("/tls")
    assert (s.metrics_port, s.health_port) == (0, 9000)
    assert (s.log_format, s.log_level) == ("json", "DEBUG")
    assert (s.sweep_interval, s.reservation_ttl) == (2.5, 45.0)
    assert (s.namespace, s.peering, s.default_agent_image) == ("ops", "gismo", "registry/gismo-agent:1.0")


def test_blank_values_keep_defaults() -> None:
    s = Settings.from_env({"GISMO_OPERATOR_PEERING": "", "GISMO_OPERATOR_WEBHOOK_PORT": "  "})
    assert s.peering is None and s.webhook_port == 9443


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("WEBHOOK_PORT", "https", "GISMO_OPERATOR_WEBHOOK_PORT: expected a port number, got 'https'"),
        ("WEBHOOK_PORT", "0", "GISMO_OPERATOR_WEBHOOK_PORT: port must be between 1 and 65535, got 0"),
        ("METRICS_PORT", "70000", "GISMO_OPERATOR_METRICS_PORT: port must be between 0 and 65535"),
        ("LOG_FORMAT", "xml", "GISMO_OPERATOR_LOG_FORMAT: expected one of text, json, got 'xml'"),
        ("LOG_LEVEL", "loud", "GISMO_OPERATOR_LOG_LEVEL: expected one of DEBUG, INFO"),
        ("SWEEP_INTERVAL", "soon", "GISMO_OPERATOR_SWEEP_INTERVAL: expected a number of seconds, got 'soon'"),
        ("SWEEP_INTERVAL", "-1", "GISMO_OPERATOR_SWEEP_INTERVAL: must be a positive number of seconds"),
        ("RESERVATION_TTL", "nan", "GISMO_OPERATOR_RESERVATION_TTL: must be a positive number of seconds"),
        ("RESERVATION_TTL", "inf", "GISMO_OPERATOR_RESERVATION_TTL: must be a positive number of seconds"),
        ("TLS_DIR", "tls", "GISMO_OPERATOR_TLS_DIR: must be an absolute path"),
        ("NAMESPACE", "Not_A_Namespace", "GISMO_OPERATOR_NAMESPACE: not a valid namespace name"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({f"GISMO_OPERATOR_{name}": value})
    assert message in str(info.value)


def test_all_errors_reported_at_once() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"GISMO_OPERATOR_WEBHOOK_PORT": "x", "GISMO_OPERATOR_LOG_FORMAT": "y"})
    assert "WEBHOOK_PORT" in str(info.value) and "LOG_FORMAT" in str(info.value)


def test_unknown_variables_are_listed() -> None:
    env = {"GISMO_OPERATOR_WEBHOOK_PROT": "1", "GISMO_OPERATOR_LOG_LEVEL": "INFO", "OTHER": "x"}
    assert unknown_variables(env) == ["GISMO_OPERATOR_WEBHOOK_PROT"]


@pytest.mark.parametrize(("ttl", "interval"), [("60", None), (None, "40"), ("50", "20"), ("59", "1.5")])
def test_reservation_lifetime_above_60_seconds_is_refused(ttl: str | None, interval: str | None) -> None:
    env = {}
    if ttl is not None:
        env["GISMO_OPERATOR_RESERVATION_TTL"] = ttl
    if interval is not None:
        env["GISMO_OPERATOR_SWEEP_INTERVAL"] = interval
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    message = str(info.value)
    assert "GISMO_OPERATOR_RESERVATION_TTL" in message and "GISMO_OPERATOR_SWEEP_INTERVAL" in message
    assert "above 60 s" in message


def test_reservation_lifetime_of_exactly_60_seconds_is_accepted() -> None:
    s = Settings.from_env({"GISMO_OPERATOR_RESERVATION_TTL": "30", "GISMO_OPERATOR_SWEEP_INTERVAL": "30"})
    assert (s.reservation_ttl, s.sweep_interval) == (30.0, 30.0)


def test_a_bad_ttl_is_reported_once() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"GISMO_OPERATOR_RESERVATION_TTL": "soon"})
    assert "above 60 s" not in str(info.value)


def test_agent_resources_and_pod_security_default() -> None:
    from gismo_operator.settings import Settings, SettingsError

    s = Settings.from_env({})
    assert (s.agent_cpu, s.agent_memory, s.pod_security_default) == ("200m", "128Mi", "privileged")
    s = Settings.from_env(
        {
            "GISMO_OPERATOR_AGENT_CPU": "1",
            "GISMO_OPERATOR_AGENT_MEMORY": "1Gi",
            "GISMO_OPERATOR_POD_SECURITY_DEFAULT": "Baseline",
        }
    )
    assert (s.agent_cpu, s.agent_memory, s.pod_security_default) == ("1", "1Gi", "baseline")
    with pytest.raises(SettingsError) as info:
        Settings.from_env(
            {
                "GISMO_OPERATOR_AGENT_CPU": "lots",
                "GISMO_OPERATOR_AGENT_MEMORY": "1Gx",
                "GISMO_OPERATOR_POD_SECURITY_DEFAULT": "open",
            }
        )
    message = str(info.value)
    for name in (
        "GISMO_OPERATOR_AGENT_CPU",
        "GISMO_OPERATOR_AGENT_MEMORY",
        "GISMO_OPERATOR_POD_SECURITY_DEFAULT",
    ):
        assert name in message
