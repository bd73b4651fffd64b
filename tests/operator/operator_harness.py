"""A reusable harness: the real operator (kopf, in this event loop) against kmock's Kubernetes emulator.

Fixtures are exported by tests/operator/conftest.py; import the classes from here for type hints.

Fixtures (all function-scoped; use what you need):

- ``cluster`` → :class:`Cluster`: kmock with the gismo.io CRDs (from ``crds/``), KubeRay's
  ``ray.io/v1`` RayCluster (from ``../shared/kuberay``), and core ``v1`` pods, events, namespaces,
  nodes registered for discovery. Its helpers create/patch/delete objects *over HTTP* (so watchers
  see them) and seed what kmock does not: ``uid``, ``resourceVersion`` (bumped on every harness
  patch), ``generation`` (bumped on spec changes), ``creationTimestamp``, and a name for
  ``generateName``. ``cluster.api`` is the operator's own :class:`gismo_operator.kube.Client`.
- ``operator`` → :class:`OperatorHandle`: starts kopf with every handler module
  (:func:`gismo_operator.registry.load_handlers`) against ``cluster``, with the webhook server on
  127.0.0.1 (random port) using a test CA made with ``cryptography``; stops it at teardown.
  ``await operator.admit(...)`` POSTs an AdmissionReview v1 over HTTPS and returns the response.
- ``kopf_tuning`` (override in your test module to change kopf settings for the run).

kmock is not an API server: no schema validation, no pruning, no 409 on stale resourceVersion, no
PUT, and every new watch replays all objects. Tests here check behaviour (what the operator writes
and answers); concurrency rules are tested at the unit level. Waiting uses :meth:`Cluster.wait_for`
(polls state, fails with a description of what was awaited); no test asserts on durations.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import datetime as dt
import functools
import itertools
import socket
import ssl
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import kmock as kmock_lib
import kopf
import pytest
import yaml

from gismo_operator import devcert, kube, pools, registry, startup
from gismo_operator.settings import Settings

T = TypeVar("T")
Body = dict[str, Any]

REPO = Path(__file__).resolve().parents[2]
GISMO_CRDS = sorted((REPO / "crds").glob("*.yaml"))
KUBERAY_CRD = REPO.parent / "shared" / "kuberay" / "ray.io_rayclusters.yaml"

#: How long wait_for() polls before failing (a guard against hangs, not a timed assertion).
WAIT_LIMIT = 30.0

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
VERBS = {"get", "list", "watch", "create", "patch", "update", "delete", "deletecollection"}


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
        emulator.resources[kmock_lib.resource(spec["group"], version["name"], names["plural"])] = (
            kmock_lib.ResourceInfo(
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


@functools.cache
def _load_yaml(path: Path) -> Body:
    """Parsed once per test session (KubeRay's CRD is large): C loader when available."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    data = yaml.load(path.read_text(), Loader=loader)  # a safe loader (C or pure Python)
    assert isinstance(data, dict), path
    return data


@dataclass
class Cluster:
    """kmock as a Kubernetes API, with the seeding a real API server would do."""

    kmock: Any
    api: kube.Client
    _rv: Iterator[int] = field(default_factory=lambda: itertools.count(1000))

    def next_rv(self) -> str:
        """A fresh resourceVersion (kmock assigns none)."""
        return str(next(self._rv))

    async def create(
        self, resource: kube.Resource, body: Mapping[str, Any], namespace: str | None = None
    ) -> Body:
        """Create an object as an API server would: name from ``generateName``, uid, resourceVersion,
        generation 1, creationTimestamp. Returns the stored object."""
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
        meta["resourceVersion"] = self.next_rv()
        meta.setdefault("generation", 1)
        meta.setdefault("creationTimestamp", dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        return await self.api.create(resource, obj, namespace=meta.get("namespace"))

    async def get(self, resource: kube.Resource, name: str, namespace: str | None = None) -> Body | None:
        """The object, or None when it does not exist."""
        return await self.api.get_or_none(resource, name, namespace)

    async def list(self, resource: kube.Resource, namespace: str | None = None) -> list[Body]:
        """All objects of a resource (all namespaces when ``namespace`` is None)."""
        return await self.api.list(resource, namespace)

    async def patch(
        self, resource: kube.Resource, name: str, patch: Mapping[str, Any], namespace: str | None = None
    ) -> Body:
        """Merge-patch as a user would; bumps resourceVersion, and generation when ``spec`` changes."""
        current = await self.api.get(resource, name, namespace)
        body: Body = dict(patch)
        meta = dict(body.get("metadata") or {})
        meta["resourceVersion"] = self.next_rv()
        if "spec" in body:
            meta["generation"] = int(current["metadata"].get("generation") or 1) + 1
        body["metadata"] = meta
        return await self.api.patch(resource, name, body, namespace)

    async def delete(self, resource: kube.Resource, name: str, namespace: str | None = None) -> None:
        """Delete (kmock keeps it, with a deletionTimestamp, while finalizers remain)."""
        await self.api.delete(resource, name, namespace)

    async def events(
        self, involved_name: str | None = None, reason: str | None = None
    ) -> builtins.list[Body]:
        """Events in all namespaces, optionally about one object name and/or with one reason."""
        return [
            e
            for e in await self.api.list(kube.EVENTS)
            if (involved_name is None or e.get("involvedObject", {}).get("name") == involved_name)
            and (reason is None or e.get("reason") == reason)
        ]

    async def wait_for(
        self, probe: Callable[[], Awaitable[T | None]], what: str, limit: float = WAIT_LIMIT
    ) -> T:
        """Poll ``probe`` until it returns something truthy (an object, a non-empty list); return it.

        Fails the test with ``what`` (and the last value) after ``limit`` seconds: a guard against
        hangs, never an assertion about speed.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        last: Any = None
        while True:
            last = await probe()
            if last:
                return last  # type: ignore[no-any-return]
            if loop.time() > deadline:
                pytest.fail(f"gave up waiting for {what} (last value: {last!r})")
            await asyncio.sleep(0.05)


@pytest.fixture
async def cluster(kmock: Any) -> AsyncIterator[Cluster]:
    """kmock with gismo.io, ray.io/v1 RayCluster and core v1 resources registered (see module doc)."""
    for path in GISMO_CRDS:
        register_crd(kmock, _load_yaml(path))
    register_crd(kmock, _load_yaml(KUBERAY_CRD), versions={"v1"})
    for plural, info in CORE_RESOURCES.items():
        kmock.resources[kmock_lib.resource("", "v1", plural)] = kmock_lib.ResourceInfo(verbs=VERBS, **info)
    api = kube.Client(kopf.ConnectionInfo(server=str(kmock.url).rstrip("/"), default_namespace="default"))
    try:
        yield Cluster(kmock=kmock, api=api)
    finally:
        await api.close()


@dataclass
class OperatorHandle:
    """The running operator: its webhook endpoint and a client for it."""

    cluster: Cluster
    webhook_url: str
    ca_file: Path
    settings: Settings

    def ssl_context(self) -> ssl.SSLContext:
        """Trusts the test CA only (the server's certificate is verified, hostname included)."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    async def admit(
        self,
        webhook_id: str,
        *,
        resource: kube.Resource,
        operation: str,
        obj: Mapping[str, Any] | None,
        old: Mapping[str, Any] | None = None,
        namespace: str | None = None,
        name: str | None = None,
        sub_resource: str | None = None,
        dry_run: bool = False,
        user: str = "tester",
    ) -> Body:
        """POST an AdmissionReview v1 to ``/<webhook_id>`` over HTTPS; return its ``response``.

        Builds the request as kube-apiserver does (uid, kind, resource, requestKind, userInfo,
        object/oldObject, options). Retries briefly while kopf answers 404 (it has not discovered
        the resource yet right after start-up); any other HTTP error fails the test.
        """
        body = obj or old or {}
        meta = body.get("metadata") or {}
        review: Body = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": str(uuid.uuid4()),
                "kind": {"group": resource.group, "version": resource.version, "kind": resource.kind},
                "resource": {
                    "group": resource.group,
                    "version": resource.version,
                    "resource": resource.plural,
                },
                "requestKind": {"group": resource.group, "version": resource.version, "kind": resource.kind},
                "requestResource": {
                    "group": resource.group,
                    "version": resource.version,
                    "resource": resource.plural,
                },
                **({"subResource": sub_resource} if sub_resource else {}),
                "name": name if name is not None else meta.get("name", ""),
                **({"namespace": namespace or meta.get("namespace")} if resource.namespaced else {}),
                "operation": operation,
                "userInfo": {"username": user, "groups": ["system:authenticated"]},
                "object": dict(obj) if obj is not None else None,
                "oldObject": dict(old) if old is not None else None,
                "dryRun": dry_run,
                "options": {"apiVersion": "meta.k8s.io/v1", "kind": f"{operation.title()}Options"},
            },
        }
        url = f"{self.webhook_url}/{webhook_id}"
        connector = aiohttp.TCPConnector(ssl=self.ssl_context())
        async with aiohttp.ClientSession(connector=connector) as session:

            async def attempt() -> Body | None:
                async with session.post(url, json=review) as response:
                    if response.status == 404:
                        return None
                    text = await response.text()
                    assert response.status == 200, f"webhook HTTP {response.status}: {text}"
                    answer = await response.json()
                    assert answer["apiVersion"] == "admission.k8s.io/v1", answer
                    assert answer["kind"] == "AdmissionReview", answer
                    assert answer["response"]["uid"] == review["request"]["uid"], answer
                    result: Body = answer["response"]
                    return result

            return await self.cluster.wait_for(attempt, f"webhook {webhook_id} to know {resource.plural}")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def kopf_tuning() -> Callable[[kopf.OperatorSettings], None]:
    """kopf settings for test runs (override this fixture to change them).

    kopf's own events use generateName, which kmock cannot store twice under one (absent) name;
    they are turned off here. The operator's own events (kube.Client.post_event) stay on.
    """

    def tune(settings: kopf.OperatorSettings) -> None:
        settings.posting.enabled = False
        settings.watching.reconnect_backoff = 0.1

    return tune


@pytest.fixture
async def operator(
    cluster: Cluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kopf_tuning: Callable[[kopf.OperatorSettings], None],
) -> AsyncIterator[OperatorHandle]:
    """The operator running in this event loop against ``cluster`` (see module doc)."""
    tls = tmp_path / "tls"
    ca, cert, key = devcert.generate(["127.0.0.1", "localhost"]).write(tls)
    port = free_port()
    settings = Settings(
        webhook_port=port, tls_dir=tls, metrics_port=0, health_port=0, namespace="gismo-system"
    )
    server = kopf.WebhookServer(
        addr="127.0.0.1", port=port, host="127.0.0.1", certfile=cert, pkeyfile=key, cafile=ca
    )
    monkeypatch.setattr(pools, "IN_USE_RETRY_DELAY", 0.2)
    monkeypatch.setattr(pools, "IN_USE_RETRY_MAX", 1.0)
    startup.configure(startup.Runtime(settings=settings, webhook_server=server, tune=kopf_tuning))

    async def login() -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=cluster.api.server, default_namespace="default")

    kube.set_login_source(login)
    registry.load_handlers()
    # kopf runs in its own thread and event loop, as in production: at exit, kopf cancels every task
    # of its loop that it did not find at start-up, which in a shared loop would include the test's.
    stop, ready = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    thread = threading.Thread(
        target=_run_operator, args=(stop, ready, errors), name="kopf-operator", daemon=True
    )
    thread.start()
    handle = OperatorHandle(
        cluster=cluster, webhook_url=f"https://127.0.0.1:{port}", ca_file=ca, settings=settings
    )
    try:
        await cluster.wait_for(lambda: _ready_or_crashed(ready, thread, errors), "the operator to start")
        await cluster.wait_for(lambda: _listening(port), "the webhook server to listen")
        yield handle
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 30)  # the test loop keeps serving kmock meanwhile
        kube.set_login_source(None)
        kube.use_client(None)
        kube.set_event_namespace(None)
        startup.configure(startup.Runtime(settings=Settings()))
    if thread.is_alive():
        pytest.fail("the operator did not stop within 30 s of its stop flag")
    if errors:
        raise errors[0]


def _run_operator(stop: threading.Event, ready: threading.Event, errors: list[BaseException]) -> None:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(
            kopf.operator(clusterwide=True, standalone=True, stop_flag=stop, ready_flag=ready)
        )
    except asyncio.CancelledError:
        pass  # kopf's graceful stop ends its own task as cancelled
    except BaseException as exc:
        errors.append(exc)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def _ready_or_crashed(
    ready: threading.Event, thread: threading.Thread, errors: list[BaseException]
) -> bool:
    if errors:
        raise errors[0]
    if not thread.is_alive():
        pytest.fail("the operator exited during start-up")
    return ready.is_set()


async def _listening(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
