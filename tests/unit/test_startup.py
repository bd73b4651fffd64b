"""Start-up configuration: the webhook server for production and --dev, and kopf settings."""

from __future__ import annotations

from pathlib import Path

import kopf
import pytest

from gismo_operator import devcert, kube, startup
from gismo_operator.settings import Settings


def test_missing_certificate_is_a_clear_error(tmp_path: Path) -> None:
    runtime = startup.Runtime(settings=Settings(tls_dir=tmp_path))
    with pytest.raises(startup.StartupError, match=f"{tmp_path}/tls.crt is missing.*GISMO_OPERATOR_TLS_DIR"):
        startup.build_webhook_server(runtime)


def test_production_server_uses_the_mounted_certificate(tmp_path: Path) -> None:
    devcert.generate(["gismo-webhook.gismo-system.svc"]).write(tmp_path)
    settings = Settings(tls_dir=tmp_path, webhook_port=9443, webhook_host="gismo-webhook.gismo-system.svc")
    server = startup.build_webhook_server(startup.Runtime(settings=settings))
    assert (server.addr, server.port, server.host) == ("0.0.0.0", 9443, "gismo-webhook.gismo-system.svc")
    assert server.certfile == tmp_path / "tls.crt" and server.pkeyfile == tmp_path / "tls.key"
    assert server.cafile == tmp_path / "ca.crt"


def test_dev_server_generates_a_certificate() -> None:
    server = startup.build_webhook_server(startup.Runtime(settings=Settings(webhook_port=10443), dev=True))
    assert (server.addr, server.port, server.host) == ("127.0.0.1", 10443, "127.0.0.1")
    assert server.certfile is not None and Path(server.certfile).read_bytes().startswith(
        b"-----BEGIN CERTIFICATE"
    )
    assert server.cafile is not None and Path(server.cafile).is_file()


def test_kopf_settings(tmp_path: Path) -> None:
    devcert.generate(["localhost"]).write(tmp_path)
    tuned: list[kopf.OperatorSettings] = []
    runtime = startup.Runtime(settings=Settings(tls_dir=tmp_path, namespace="ops"), tune=tuned.append)
    settings = kopf.OperatorSettings()
    try:
        startup.apply_settings(settings, runtime)
        assert settings.persistence.finalizer == "gismo.io/finalizer"
        assert settings.admission.managed is None  # the chart owns the webhook configurations
        assert isinstance(settings.admission.server, kopf.WebhookServer)
        assert tuned == [settings]

        dev = startup.Runtime(settings=Settings(namespace="ops"), dev=True)
        startup.apply_settings(settings, dev)
        assert settings.admission.managed == "gismo.io"
    finally:
        kube.set_event_namespace(None)
