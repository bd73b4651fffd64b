"""The HTTPS server kopf serves admission handlers on, and why the operator cannot start.

The server is :class:`~gismo_operator.webhook.kopf_overrides.GismoWebhookServer` (every request gets
an AdmissionReview answer). Production: the certificate the chart mounts (``TLS_DIR``). Dev: a fresh
CA and certificate from
:mod:`gismo_operator.webhook.devcert`.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import kopf

from gismo_operator.webhook import devcert
from gismo_operator.webhook.kopf_overrides import GismoWebhookServer

if TYPE_CHECKING:
    from gismo_operator.context import OperatorContext

logger = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """The operator cannot start as configured; the message says what to fix."""


def build_webhook_server(runtime: OperatorContext) -> kopf.WebhookServer:
    """The HTTPS server kopf serves admission handlers on (``/<handler id>``).

    Production: certificate and key from ``TLS_DIR`` (the chart mounts them); a missing file is a
    start-up error naming it. Dev: a fresh CA and certificate for 127.0.0.1/localhost in a
    temporary folder; the CA goes into the managed webhook configurations' ``caBundle``.
    """
    if runtime.webhook_server is not None:
        return runtime.webhook_server
    settings = runtime.settings
    if runtime.dev:
        addr = runtime.webhook_addr or "127.0.0.1"
        host = settings.webhook_host or addr
        folder = Path(tempfile.mkdtemp(prefix="gismo-dev-tls-"))
        ca, cert, key = devcert.generate([host, "127.0.0.1", "localhost"]).write(folder)
        logger.info(
            "dev mode: webhook certificate in %s, serving on https://%s:%s",
            folder,
            addr,
            settings.webhook_port,
        )
        return GismoWebhookServer(
            addr=addr, port=settings.webhook_port, host=host, certfile=cert, pkeyfile=key, cafile=ca
        )
    for path in (settings.tls_cert, settings.tls_key):
        if not path.is_file():
            raise StartupError(
                f"webhook TLS file {path} is missing (GISMO_OPERATOR_TLS_DIR={settings.tls_dir}); "
                f"mount the certificate there or run with --dev"
            )
    ca = settings.tls_dir / "ca.crt"
    return GismoWebhookServer(
        addr=runtime.webhook_addr or "0.0.0.0",
        port=settings.webhook_port,
        host=settings.webhook_host,
        certfile=settings.tls_cert,
        pkeyfile=settings.tls_key,
        cafile=ca if ca.is_file() else None,
    )
