"""Process-level kopf configuration: login, settings, the webhook server, probes, shutdown.

The operator's run-time choices (dev mode, where the webhook listens, test overrides) are held in
one :class:`Runtime` installed by :func:`configure` before kopf starts (``__main__`` does it; the
test harness installs its own). The ``startup`` handler then applies it to kopf's settings, so the
same handler code runs in production, ``--dev`` and tests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, cast

import kopf

from gismo_operator import kube
from gismo_operator.settings import Settings
from gismo_operator.webhook import devcert

logger = logging.getLogger(__name__)

FINALIZER = "gismo.io/finalizer"
ANNOTATION_PREFIX = "gismo.io"
MANAGED_WEBHOOKS_NAME = "gismo.io"


class StartupError(RuntimeError):
    """The operator cannot start as configured; the message says what to fix."""


#: Kinds (apiVersion, kind) the operator watches only with ``@kopf.on.event`` handlers: no
#: create/update/delete/resume handler, daemon or timer. kopf's change detection is never used
#: for them, so :class:`EventOnlyDiffBaseStorage` skips building their "essence". A unit test
#: (tests/unit/test_startup.py) fails if a change handler is ever registered for one of them.
EVENT_ONLY_KINDS: frozenset[tuple[str, str]] = frozenset({("gismo.io/v1alpha1", "GismoSlice"), ("v1", "Pod")})


class EventOnlyDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's annotation diff-base storage, minus the work for event-only kinds.

    On every watch event of every resource, kopf builds the object's "essence" (a deep copy of the
    body minus metadata and status) and deep-copies it once more, to detect changes for
    create/update handlers. A GismoSlice changes at every admission (its ``spec.regions`` lists
    every region), so those two deep copies were a large part of an admission's CPU cost, for a
    result nothing uses. For :data:`EVENT_ONLY_KINDS` the essence is empty; other kinds (and a
    body without apiVersion/kind) get kopf's own.
    """

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        if (body.get("apiVersion"), body.get("kind")) in EVENT_ONLY_KINDS:
            return cast(kopf.BodyEssence, {})
        return super().build(body=body, extra_fields=extra_fields)


@dataclasses.dataclass
class Runtime:
    """How this process runs.

    - ``dev``: serve webhooks on 127.0.0.1 with a generated certificate and let kopf create the
      Validating/MutatingWebhookConfigurations itself (named ``gismo.io``).
    - ``webhook_addr``: listening address (default 127.0.0.1 in dev, all interfaces otherwise).
    - ``webhook_server``: a ready server object, overriding everything above (tests).
    - ``tune``: called last with kopf's settings (tests adjust timeouts, event posting, ...).
    """

    settings: Settings = dataclasses.field(default_factory=Settings.from_env)
    dev: bool = False
    webhook_addr: str | None = None
    webhook_server: kopf.WebhookServer | None = None
    tune: Callable[[kopf.OperatorSettings], None] | None = None


_runtime: Runtime | None = None


def configure(runtime: Runtime) -> None:
    """Install the run-time configuration used by the startup handler."""
    global _runtime
    _runtime = runtime


def current() -> Runtime:
    """The installed run-time configuration (built from the environment if none was installed)."""
    global _runtime
    if _runtime is None:
        _runtime = Runtime()
    return _runtime


def build_webhook_server(runtime: Runtime) -> kopf.WebhookServer:
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
        return kopf.WebhookServer(
            addr=addr, port=settings.webhook_port, host=host, certfile=cert, pkeyfile=key, cafile=ca
        )
    for path in (settings.tls_cert, settings.tls_key):
        if not path.is_file():
            raise StartupError(
                f"webhook TLS file {path} is missing (GISMO_OPERATOR_TLS_DIR={settings.tls_dir}); "
                f"mount the certificate there or run with --dev"
            )
    ca = settings.tls_dir / "ca.crt"
    return kopf.WebhookServer(
        addr=runtime.webhook_addr or "0.0.0.0",
        port=settings.webhook_port,
        host=settings.webhook_host,
        certfile=settings.tls_cert,
        pkeyfile=settings.tls_key,
        cafile=ca if ca.is_file() else None,
    )


#: An admission answered without kopf's per-request machinery: given the AdmissionReview (decoded),
#: the response review, or None to let kopf answer it (anything the fast path does not cover).
FastAdmission = Callable[[Mapping[str, Any]], Awaitable[dict[str, Any] | None]]

_fast_admissions: dict[str, FastAdmission] = {}


def fast_admission(webhook_id: str) -> Callable[[FastAdmission], FastAdmission]:
    """Register a fast path for the webhook served at ``/<webhook_id>`` (decorator).

    The kopf handler of the same id stays registered (kopf still manages the webhook
    configuration in --dev, and answers whatever the fast path hands back with None).
    """

    def register(fn: FastAdmission) -> FastAdmission:
        _fast_admissions[webhook_id] = fn
        return fn

    return register


class FastAdmissionServer:
    """Wraps kopf's webhook server (or any server/tunnel) so registered fast paths answer first.

    Why: kopf answers each AdmissionReview through its generic machinery (a memo, body and patch
    wrappers with reference cycles, a diff, a cause, handler selection and state, outcome
    bookkeeping, an INFO log line per request), several times the cost of the pod webhook's own
    work at hundreds of admissions per second, and its cyclic objects feed the garbage collector
    pauses that made the latency tail. Same server, port, TLS and ``/<handler id>`` paths.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __aenter__(self) -> FastAdmissionServer:
        if isinstance(self.inner, contextlib.AbstractAsyncContextManager):
            await self.inner.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        if isinstance(self.inner, contextlib.AbstractAsyncContextManager):
            return await self.inner.__aexit__(*exc)
        return None

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        async def serve(request: Any, *, webhook: str | None = None, **kwargs: Any) -> Any:
            fast = _fast_admissions.get(webhook or "")
            if fast is not None and isinstance(request, Mapping):
                answer = await fast(request)
                if answer is not None:
                    return answer
            return await fn(request, webhook=webhook, **kwargs)

        async for client_config in self.inner(serve):
            yield client_config


def apply_settings(kopf_settings: kopf.OperatorSettings, runtime: Runtime) -> None:
    """Our choices for kopf: annotation-based bookkeeping under ``gismo.io`` (nothing in ``status``,
    which the structural schema would prune), our finalizer name, fewer routine events."""
    kopf_settings.persistence.finalizer = FINALIZER
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    kopf_settings.persistence.diffbase_storage = EventOnlyDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    kopf_settings.posting.reporting_component = kube.COMPONENT
    kube.set_event_namespace(runtime.settings.namespace)
    kopf_settings.posting.level = logging.WARNING
    # Watches end server-side every few minutes and are re-established; a client timeout a bit
    # longer catches connections that silently died (load balancers, node loss).
    kopf_settings.watching.server_timeout = 300
    kopf_settings.watching.client_timeout = 330
    kopf_settings.watching.connect_timeout = 30
    kopf_settings.admission.server = FastAdmissionServer(build_webhook_server(runtime))
    kopf_settings.admission.managed = MANAGED_WEBHOOKS_NAME if runtime.dev else None
    if runtime.tune is not None:
        runtime.tune(kopf_settings)


@kopf.on.startup()
async def on_startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Apply :func:`apply_settings` with the installed :class:`Runtime`."""
    apply_settings(settings, current())


@kopf.on.login()
async def on_login(**_: Any) -> kopf.ConnectionInfo:
    """Log in (service account or kubeconfig) and share the credentials with :mod:`kube`."""
    return await kube.login()


@kopf.on.probe(id="api")
async def probe_api(**_: Any) -> bool:
    """Liveness detail: whether the operator has API credentials."""
    try:
        kube.client()
    except RuntimeError:
        return False
    return True


@kopf.on.cleanup()
async def on_cleanup(**_: Any) -> None:
    """Close the shared API connections."""
    await kube.close()
