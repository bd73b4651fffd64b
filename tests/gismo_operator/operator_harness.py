"""A reusable harness: the real operator (kopf, in this event loop) against kmock's Kubernetes emulator.

Fixtures are exported by tests/operator/conftest.py; import the classes from here for type hints.

Fixtures (all function-scoped; use what you need):

- ``cluster`` → :class:`Cluster`: kmock with the gismo.io CRDs (from ``crds/``), KubeRay's
  ``ray.io/v1`` RayCluster (from ``tests/fixtures/kuberay``), and core ``v1`` pods, events, namespaces,
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

import builtins
import functools
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import kopf
import pytest
import yaml

from gismo.testing.waiting import WAIT_LIMIT, wait_until_async
from gismo_operator import kube
from gismo_operator.handlers import pools
from gismo_operator.settings import Settings
from gismo_operator.testing import embedded
from gismo_operator.testing.embedded import CORE_RESOURCES, VERBS, free_port, register_crd

__all__ = [
    "CORE_RESOURCES",
    "VERBS",
    "Cluster",
    "OperatorHandle",
    "cluster",
    "free_port",
    "kopf_tuning",
    "operator",
    "register_crd",
]

T = TypeVar("T")
Body = dict[str, Any]

REPO = Path(__file__).resolve().parents[2]
GISMO_CRDS = sorted((REPO / "crds").glob("*.yaml"))
KUBERAY_CRD = REPO / "tests" / "fixtures" / "kuberay" / "ray.io_rayclusters.yaml"


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
    _rv: Iterator[str] = field(default_factory=embedded.resource_versions)

    def next_rv(self) -> str:
        """A fresh resourceVersion (kmock assigns none)."""
        return next(self._rv)

    async def create(
        self, resource: kube.Resource, body: Mapping[str, Any], namespace: str | None = None
    ) -> Body:
        """Create an object as an API server would: name from ``generateName``, uid, resourceVersion,
        generation 1, creationTimestamp. Returns the stored object."""
        obj = embedded.seed_new_object(resource, body, self.next_rv(), namespace)
        return await self.api.create(resource, obj, namespace=obj["metadata"].get("namespace"))

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

        :func:`gismo.testing.wait_until_async`, the one wait of every harness: fails the test with
        ``what`` (and the last value) after ``limit`` seconds, a guard against hangs, never an
        assertion about speed.
        """
        result: T = await wait_until_async(probe, what, limit=limit)  # type: ignore[arg-type]
        return result


@pytest.fixture
async def cluster(kmock: Any) -> AsyncIterator[Cluster]:
    """kmock with gismo.io, ray.io/v1 RayCluster and core v1 resources registered (see module doc)."""
    embedded.declare_resources(
        kmock, [_load_yaml(path) for path in GISMO_CRDS], kuberay_crd=embedded.load_crd(KUBERAY_CRD)
    )
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
    #: kopf's thread; ``await kopf_thread.run_in_loop(coro)`` runs operator code in kopf's own loop
    #: (the operator's API client and background tasks belong to it).
    kopf_thread: embedded.KopfThread

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
                    warnings = (answer.get("response") or {}).get("warnings") or []
                    if any(review.NOT_DISCOVERED in w for w in warnings):
                        return None  # kopf has not discovered the resource yet: ask again
                    assert answer["apiVersion"] == "admission.k8s.io/v1", answer
                    assert answer["kind"] == "AdmissionReview", answer
                    assert answer["response"]["uid"] == review["request"]["uid"], answer
                    result: Body = answer["response"]
                    return result

            return await self.cluster.wait_for(attempt, f"webhook {webhook_id} to know {resource.plural}")


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
    """The operator running against ``cluster`` (see module doc), in its own thread
    (:func:`gismo_operator.testing.embedded.run_operator`)."""
    monkeypatch.setattr(pools, "IN_USE_RETRY_DELAY", 0.2)
    monkeypatch.setattr(pools, "IN_USE_RETRY_MAX", 1.0)
    try:
        async with embedded.run_operator(
            cluster.api.server,
            tls_dir=tmp_path / "tls",
            namespace="gismo-system",
            tune=kopf_tuning,
            start_limit=WAIT_LIMIT,
        ) as running:
            yield OperatorHandle(
                cluster=cluster,
                webhook_url=running.webhook_url,
                ca_file=running.ca_file,
                settings=running.settings,
                kopf_thread=running.kopf_thread,
            )
    except (TimeoutError, embedded.OperatorExited, RuntimeError) as exc:
        pytest.fail(str(exc))
