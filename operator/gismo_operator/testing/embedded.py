"""An embedded Kubernetes API (kmock) and the whole operator running against it, in one process.

Why: ``make demo`` and local try-outs need the product's control plane without a cluster, and the
operator tests need the same thing under pytest. This module is the one place that knows how to
(a) serve kmock's :class:`~kmock.KubernetesEmulator` on 127.0.0.1 with our resources declared for
discovery, (b) create objects the way an API server does (kmock leaves metadata alone), and
(c) run kopf with every handler module in its own thread, with the webhook server on HTTPS using a
dev certificate. ``tests/operator/operator_harness.py`` builds its fixtures from these pieces.

kmock is an emulator, not an API server: no schema validation or pruning, no 409 on a stale
resourceVersion, no PUT, and a new watch replays every object. Good enough to show and test what
the operator writes and answers; not a substitute for a real kube-apiserver.

Cost: start-up of the API is a few milliseconds (the RayCluster resource is described in code, so
KubeRay's large CRD is not parsed unless asked for); the operator needs ~1-2 s until kopf is ready
and its webhook listens. kmock is a test library: it comes with the ``dev`` extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import itertools
import logging
import socket
import ssl
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import kmock
import kopf
import yaml

from gismo.testing.waiting import WAIT_LIMIT, wait_until_async
from gismo_operator import crdgen, kube, registry
from gismo_operator.context import OperatorContext, install
from gismo_operator.settings import Settings
from gismo_operator.webhook import devcert
from gismo_operator.webhook.kopf_overrides import GismoWebhookServer

T = TypeVar("T")

logger = logging.getLogger(__name__)

Body = dict[str, Any]

#: Verbs declared for every resource (kmock serves them all; discovery only lists them).
VERBS = {"get", "list", "watch", "create", "patch", "update", "delete", "deletecollection"}

#: Core v1 resources the operator reads, watches or writes.
CORE_RESOURCES: dict[str, dict[str, Any]] = {
    "pods": {
        "kind": "Pod",
        "namespaced": True,
        "singular": "pod",
        "shortnames": {"po"},
        "subresources": {"status"},
    },
    "events": {"kind": "Event", "namespaced": True, "singular": "event", "shortnames": {"ev"}},
    "namespaces": {"kind": "Namespace", "namespaced": False, "singular": "namespace", "shortnames": {"ns"}},
    "nodes": {"kind": "Node", "namespaced": False, "singular": "node", "shortnames": {"no"}},
}

#: KubeRay's RayCluster as discovery sees it (what kmock needs): enough when KubeRay's CRD file
#: is not around; :func:`declare_resources` registers the real CRD instead when given one.
RAYCLUSTER_RESOURCE: dict[str, Any] = {
    "kind": "RayCluster",
    "namespaced": True,
    "singular": "raycluster",
    "shortnames": set(),
    "categories": {"all"},
    "subresources": {"status"},
}


# ------------------------------------------------------------------------------------------------
# Discovery


def register_crd(
    emulator: Any, crd: Mapping[str, Any], versions: set[str] | None = None
) -> list[kube.Resource]:
    """Declare a CustomResourceDefinition's resource (served versions) to kmock's discovery."""
    spec = crd["spec"]
    names = spec["names"]
    out = []
    for version in spec["versions"]:
        if not version.get("served", True) or (versions is not None and version["name"] not in versions):
            continue
        emulator.resources[kmock.resource(spec["group"], version["name"], names["plural"])] = (
            kmock.ResourceInfo(
                kind=names["kind"],
                singular=names.get("singular"),
                namespaced=spec["scope"] == "Namespaced",
                shortnames=set(names.get("shortNames", [])),
                categories=set(names.get("categories", [])),
                verbs=VERBS,
                subresources=set(version.get("subresources", {})),
            )
        )
        out.append(
            kube.Resource(
                spec["group"], version["name"], names["plural"], spec["scope"] == "Namespaced", names["kind"]
            )
        )
    return out


@functools.lru_cache(maxsize=8)
def load_crd(path: Path) -> Mapping[str, Any]:
    """A CRD file, parsed once per process with libyaml when available: KubeRay's is ~1 MB, which
    the pure-Python loader takes ~2 s to read. Callers must not modify the result (it is shared)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    data = yaml.load(path.read_text(), Loader=loader)  # a safe loader, C or pure Python
    if not isinstance(data, dict) or data.get("kind") != "CustomResourceDefinition":
        raise ValueError(f"{path}: not a CustomResourceDefinition")
    return data


def declare_core(emulator: Any) -> None:
    """Declare core v1 pods, events, namespaces and nodes (:data:`CORE_RESOURCES`)."""
    for plural, info in CORE_RESOURCES.items():
        emulator.resources[kmock.resource("", "v1", plural)] = kmock.ResourceInfo(verbs=VERBS, **info)


def declare_resources(
    emulator: Any,
    gismo_crds: Iterable[Mapping[str, Any]] | None = None,
    kuberay_crd: Mapping[str, Any] | None = None,
) -> None:
    """Everything the operator uses: gismo.io (from ``gismo_crds``, else generated from the models,
    which is what ``crds/`` holds), ray.io/v1 RayCluster (the given CRD, else
    :data:`RAYCLUSTER_RESOURCE`), and :data:`CORE_RESOURCES`."""
    for crd in gismo_crds if gismo_crds is not None else crdgen.all_crds().values():
        register_crd(emulator, crd)
    if kuberay_crd is not None:
        register_crd(emulator, kuberay_crd, versions={"v1"})
    else:
        emulator.resources[kmock.resource("ray.io", "v1", "rayclusters")] = kmock.ResourceInfo(
            verbs=VERBS, **RAYCLUSTER_RESOURCE
        )
    declare_core(emulator)


# ------------------------------------------------------------------------------------------------
# Creating objects as an API server would


def resource_versions(start: int = 1000) -> Iterator[str]:
    """Fresh resourceVersions (kmock assigns none)."""
    return (str(n) for n in itertools.count(start))


def seed_new_object(
    resource: kube.Resource, body: Mapping[str, Any], resource_version: str, namespace: str | None = None
) -> Body:
    """A copy of ``body`` with what the API server fills in on create: namespace (namespaced kinds),
    a name from ``generateName``, uid, resourceVersion, generation 1, creationTimestamp."""
    obj: Body = {**body, "metadata": dict(body.get("metadata") or {})}
    meta = obj["metadata"]
    if resource.namespaced:
        meta["namespace"] = namespace or meta.get("namespace") or "default"
    if not meta.get("name"):
        prefix = meta.get("generateName")
        if not prefix:
            raise ValueError("metadata.name or metadata.generateName is required")
        meta["name"] = prefix + uuid.uuid4().hex[:5]
    meta.setdefault("uid", str(uuid.uuid4()))
    meta["resourceVersion"] = resource_version
    meta.setdefault("generation", 1)
    meta.setdefault("creationTimestamp", dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return obj


def resource_of(body: Mapping[str, Any]) -> kube.Resource:
    """The resource of a manifest (by apiVersion and kind), among those the operator knows."""
    known = (kube.POOLS, kube.SLICES, kube.RAYCLUSTERS, kube.PODS, kube.EVENTS, kube.NAMESPACES, kube.NODES)
    for res in known:
        if res.api_version == body.get("apiVersion") and res.kind == body.get("kind"):
            return res
    raise ValueError(f"unknown kind {body.get('apiVersion')}/{body.get('kind')}")


@dataclasses.dataclass
class EmbeddedApi:
    """kmock served over HTTP, with a client and API-server-like creation."""

    emulator: Any
    api: kube.Client
    _rv: Iterator[str] = dataclasses.field(default_factory=resource_versions)

    @property
    def url(self) -> str:
        """The API's base URL (``http://127.0.0.1:<port>``)."""
        return str(self.emulator.url).rstrip("/")

    def next_rv(self) -> str:
        """A fresh resourceVersion."""
        return next(self._rv)

    def connection(self) -> kopf.ConnectionInfo:
        """Credentials for kopf and :class:`gismo_operator.kube.Client` (no auth: local only)."""
        return kopf.ConnectionInfo(server=self.url, default_namespace="default")

    async def create(
        self, resource: kube.Resource, body: Mapping[str, Any], namespace: str | None = None
    ) -> Body:
        """Create ``body`` as an API server would (:func:`seed_new_object`); returns the stored object."""
        obj = seed_new_object(resource, body, self.next_rv(), namespace)
        return await self.api.create(resource, obj, namespace=obj["metadata"].get("namespace"))

    async def apply(self, body: Mapping[str, Any]) -> Body:
        """``kubectl create -f`` for one manifest whose kind the operator knows."""
        return await self.create(resource_of(body), body)


@contextlib.asynccontextmanager
async def serve_api(
    *,
    gismo_crds: Iterable[Mapping[str, Any]] | None = None,
    kuberay_crd: Mapping[str, Any] | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
) -> AsyncIterator[EmbeddedApi]:
    """Serve a fresh kmock Kubernetes API (resources per :func:`declare_resources`) until the block
    ends. It runs in the current event loop: keep that loop free while others talk to it."""
    async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator, host=host, port=port):
        declare_resources(emulator, gismo_crds, kuberay_crd)
        api = kube.Client(
            kopf.ConnectionInfo(server=str(emulator.url).rstrip("/"), default_namespace="default")
        )
        try:
            yield EmbeddedApi(emulator=emulator, api=api)
        finally:
            await api.close()


# ------------------------------------------------------------------------------------------------
# kopf in its own thread


class OperatorExited(RuntimeError):
    """kopf's thread ended before it was asked to (the message carries the reason when known)."""


class KopfThread:
    """``kopf.operator()`` (every imported handler) in its own thread and event loop.

    Why a thread: as in production, kopf owns its loop. At exit kopf cancels every task of its loop
    it did not start with, which in a shared loop would include the caller's (and kmock's).
    """

    def __init__(self) -> None:
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        self.errors: list[BaseException] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, name="kopf-operator", daemon=True)

    def start(self) -> None:
        """Start the thread (returns at once; see :meth:`ready`)."""
        self.thread.start()

    def ready(self) -> bool:
        """Whether kopf is up. Raises kopf's error, or :class:`OperatorExited`, if it died."""
        if self.errors:
            raise self.errors[0]
        if not self.thread.is_alive():
            raise OperatorExited("the operator exited during start-up")
        return self.ready_flag.is_set()

    def stop(self, timeout: float = 30.0) -> bool:
        """Ask kopf to stop and wait; True when the thread ended within ``timeout`` seconds."""
        self.stop_flag.set()
        if self.thread.ident is not None:
            self.thread.join(timeout)
        return not self.thread.is_alive()

    async def run_in_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` in kopf's loop, from another loop (e.g. wait for what the operator's
        handlers scheduled there, such as Events being posted)."""
        if self.loop is None:
            raise OperatorExited("the operator's loop is not running")
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def _run(self) -> None:
        loop = self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(
                kopf.operator(
                    clusterwide=True, standalone=True, stop_flag=self.stop_flag, ready_flag=self.ready_flag
                )
            )
        except asyncio.CancelledError:
            pass  # kopf's graceful stop ends its own task as cancelled
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def listening(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def poll(probe: Callable[[], Any], what: str, limit: float = WAIT_LIMIT, period: float = 0.05) -> Any:
    """Await ``probe()`` (sync or async) until it is truthy; return it. A TimeoutError naming
    ``what`` after ``limit`` seconds (a guard against hangs): :func:`gismo.testing.wait_until_async`,
    the one wait every harness uses."""
    return await wait_until_async(probe, what, limit=limit, period=period)


@dataclasses.dataclass
class EmbeddedOperator:
    """The running operator: where its webhooks listen, the CA that signed their certificate, and
    its context (caches, ledger, client: tests look inside, and run its coroutines in kopf's loop)."""

    webhook_url: str
    ca_file: Path
    settings: Settings
    kopf_thread: KopfThread
    context: OperatorContext

    def ssl_context(self) -> ssl.SSLContext:
        """Trusts the dev CA only (the server certificate is verified, hostname included)."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def quiet_kopf(settings: kopf.OperatorSettings) -> None:
    """kopf settings for the embedded API: no kopf-posted events (they use generateName, which kmock
    cannot store twice under one absent name; the operator's own events stay on), quick reconnects."""
    settings.posting.enabled = False
    settings.watching.reconnect_backoff = 0.1


@contextlib.asynccontextmanager
async def run_operator(
    api_url: str,
    *,
    tls_dir: Path | None = None,
    namespace: str = "gismo-system",
    tune: Callable[[kopf.OperatorSettings], None] | None = quiet_kopf,
    start_limit: float = 30.0,
    stop_limit: float = 30.0,
    **settings: Any,
) -> AsyncIterator[EmbeddedOperator]:
    """Run the operator (all handler modules) against ``api_url`` until the block ends.

    The webhook server listens on 127.0.0.1 (a free port) with a certificate from a fresh dev CA,
    written to ``tls_dir`` (default: a temporary folder removed afterwards). Metrics and health
    endpoints are off unless ``settings`` turn them on. Each run installs a fresh
    :class:`~gismo_operator.context.OperatorContext` (settings, login, client, caches) and an empty
    one on exit, so calls can follow one another in one process; kopf's handler registry is
    process-wide by kopf's design and is the same for every run.

    Raises :class:`TimeoutError` if kopf is not ready or the webhook not listening within
    ``start_limit`` seconds, :class:`OperatorExited` (or kopf's own error) if the operator died, and
    :class:`RuntimeError` if it did not stop within ``stop_limit`` seconds.
    """
    owned_tmp = tls_dir is None
    folder = Path(tempfile.mkdtemp(prefix="gismo-tls-")) if tls_dir is None else tls_dir
    kopf_thread = KopfThread()
    try:
        ca, cert, key = devcert.generate(["127.0.0.1", "localhost"]).write(folder)
        port = free_port()
        opts: dict[str, Any] = {"metrics_port": 0, "health_port": 0, **settings}
        config = Settings(webhook_port=port, tls_dir=folder, namespace=namespace, **opts)
        server = GismoWebhookServer(
            addr="127.0.0.1", port=port, host="127.0.0.1", certfile=cert, pkeyfile=key, cafile=ca
        )
        info = kopf.ConnectionInfo(server=api_url.rstrip("/"), default_namespace="default")

        async def login() -> kopf.ConnectionInfo:
            return info

        # A fresh context per run: nothing of a previous operator in this process carries over.
        context = install(
            OperatorContext(settings=config, webhook_server=server, tune=tune, login_source=login)
        )
        registry.load_handlers()
        kopf_thread.start()
        handle = EmbeddedOperator(f"https://127.0.0.1:{port}", ca, config, kopf_thread, context)
        await poll(kopf_thread.ready, "the operator to start", start_limit)
        await poll(lambda: listening(port), "the webhook server to listen", start_limit)
        yield handle
    finally:
        # The caller's loop keeps serving (kmock, when it runs there) while kopf winds down.
        stopped = await asyncio.to_thread(kopf_thread.stop, stop_limit)
        install(OperatorContext(settings=Settings()))
        if owned_tmp:
            for name in ("ca.crt", "tls.crt", "tls.key"):
                with contextlib.suppress(OSError):
                    (folder / name).unlink()
            with contextlib.suppress(OSError):
                folder.rmdir()
    if not stopped:
        raise RuntimeError(f"the operator did not stop within {stop_limit:g} s of its stop flag")
    if kopf_thread.errors:
        raise kopf_thread.errors[0]
