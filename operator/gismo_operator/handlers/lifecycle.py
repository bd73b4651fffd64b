"""Process-level kopf handlers: start-up configuration, login, the API probe, shutdown.

The operator's run-time choices (dev mode, where the webhook listens, test overrides) are in the
:class:`~gismo_operator.context.OperatorContext` installed before kopf starts (``__main__`` does it;
the test harness installs its own). The ``startup`` handler applies them to kopf's settings, so the
same handler code runs in production, ``--dev`` and tests.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from gismo_operator.constants import (
    COMPONENT,
    FINALIZER,
    KOPF_ANNOTATION_PREFIX,
    KOPF_DIFFBASE_KEY,
    MANAGED_WEBHOOKS_NAME,
    PROBE_API,
)
from gismo_operator.context import OperatorContext, current
from gismo_operator.webhook.kopf_overrides import EventOnlyDiffBaseStorage, FastAdmissionServer
from gismo_operator.webhook.server import build_webhook_server


def apply_settings(kopf_settings: kopf.OperatorSettings, ctx: OperatorContext) -> None:
    """Our choices for kopf: annotation-based bookkeeping under ``gismo.io`` (nothing in ``status``,
    which the structural schema would prune), our finalizer name, fewer routine events."""
    kopf_settings.persistence.finalizer = FINALIZER
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=KOPF_ANNOTATION_PREFIX
    )
    kopf_settings.persistence.diffbase_storage = EventOnlyDiffBaseStorage(
        prefix=KOPF_ANNOTATION_PREFIX, key=KOPF_DIFFBASE_KEY
    )
    kopf_settings.posting.reporting_component = COMPONENT
    kopf_settings.posting.level = logging.WARNING
    # Watches end server-side every few minutes and are re-established; a client timeout a bit
    # longer catches connections that silently died (load balancers, node loss).
    kopf_settings.watching.server_timeout = 300
    kopf_settings.watching.client_timeout = 330
    kopf_settings.watching.connect_timeout = 30
    kopf_settings.admission.server = FastAdmissionServer(build_webhook_server(ctx))
    kopf_settings.admission.managed = MANAGED_WEBHOOKS_NAME if ctx.dev else None
    if ctx.tune is not None:
        ctx.tune(kopf_settings)


@kopf.on.startup()
async def on_startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Apply :func:`apply_settings` with the installed context."""
    apply_settings(settings, current())


@kopf.on.login()
async def on_login(**_: Any) -> kopf.ConnectionInfo:
    """Log in (service account or kubeconfig); the context's client uses the same credentials."""
    return await current().login()


@kopf.on.probe(id=PROBE_API)
async def probe_api(**_: Any) -> bool:
    """Liveness detail: whether the operator has API credentials."""
    try:
        current().client()
    except RuntimeError:
        return False
    return True


@kopf.on.cleanup()
async def on_cleanup(**_: Any) -> None:
    """Close the API client's connections."""
    await current().close()
