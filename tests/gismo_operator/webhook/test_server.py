"""The webhook server for production and --dev."""

from __future__ import annotations

from pathlib import Path

import pytest

from gismo_operator.context import OperatorContext
from gismo_operator.settings import Settings
from gismo_operator.webhook import devcert
from gismo_operator.webhook.server import StartupError, build_webhook_server


def test_missing_certificate_is_a_clear_error(tmp_path: Path) -> None:
    runtime = OperatorContext(settings=Settings(tls_dir=tmp_path))
    with pytest.raises(StartupError, match=f"{tmp_path}/tls.crt is missing.*GISMO_OPERATOR_TLS_DIR"):
        build_webhook_server(runtime)


def test_production_server_uses_the_mounted_certificate(tmp_path: Path) -> None:
    devcert.generate(["gismo-webhook.gismo-system.svc"]).write(tmp_path)
    settings = Settings(tls_dir=tmp_path, webhook_port=9443, webhook_host="gismo-webhook.gismo-system.svc")
    server = build_webhook_server(OperatorContext(settings=settings))
    assert (server.addr, server.port, server.host) == ("0.0.0.0", 9443, "gismo-webhook.gismo-system.svc")
    assert server.certfile == tmp_path / "tls.crt" and server.pkeyfile == tmp_path / "tls.key"
    assert server.cafile == tmp_path / "ca.crt"


def test_dev_server_generates_a_certificate() -> None:
    server = build_webhook_server(OperatorContext(settings=Settings(webhook_port=10443), dev=True))
    assert (server.addr, server.port, server.host) == ("127.0.0.1", 10443, "127.0.0.1")
    assert server.certfile is not None and Path(server.certfile).read_bytes().startswith(
        b"-----BEGIN CERTIFICATE"
    )
    assert server.cafile is not None and Path(server.cafile).is_file()
