"""All of the operator's own Kubernetes API calls: typed helpers over one aiohttp session.

Choice: raw ``aiohttp`` + JSON, authenticated with the same :class:`kopf.ConnectionInfo` that kopf
itself uses (our login handler captures it into the operator's context, see
:meth:`gismo_operator.context.OperatorContext.login`). Why not ``kubernetes_asyncio``'s
generated clients: custom resources are untyped dicts there anyway, its merge-patch content-type
selection is implicit, and it would be a second, differently configured connection. kopf also
talks aiohttp, so one set of credentials, TLS settings and proxies serves both, against a real
kube-apiserver and against kmock alike. ``kubernetes_asyncio`` is still used, through
:func:`kopf.login_via_async_client`, to *read* in-cluster and kubeconfig credentials (exec plugins
included).

Semantics that correctness rests on (a real API server provides them; kmock does not, so tests of
these rules live at the unit level):

- :meth:`Client.patch` is a JSON merge patch (RFC 7386). With ``resource_version=`` it carries
  ``metadata.resourceVersion``, which the API server treats as a precondition: a concurrent writer
  makes it fail with :class:`Conflict` (409); the caller re-reads and retries (the region ledger's
  one retry rule: :meth:`gismo_operator.ledger.regions.RegionLedger.retrying`).
- ``subresource="status"`` writes only the status (CRDs here have the status subresource; a write
  of ``status`` through the main resource is ignored by the API server).
- Lists are replaced wholesale by a merge patch: send the complete list.

Usage from other operator modules::

    from gismo_operator import kube
    from gismo_operator.context import current
    api = current().client()
    slices = await api.list(kube.SLICES, namespace="ray")
    await api.patch(kube.SLICES, "my-cluster", {"spec": {"regions": [...]}}, namespace="ray",
                    resource_version=slices[0]["metadata"]["resourceVersion"])
    await api.post_event(body, "Warning", REASON_POOL_FULL, "no free extent of 8Gi")

Cost: one HTTP request per call; the session (connection pool) is shared and created lazily.
"""

from __future__ import annotations

import builtins
import datetime as dt
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import kopf

from gismo_operator.constants import COMPONENT
from gismo_operator.kube.resources import EVENTS, Resource

logger = logging.getLogger(__name__)

Body = dict[str, Any]

#: Every call is a single request/response (no watches here): a stuck connection fails fast enough
#: for admission (the API server's webhook timeout is 10 s by default) and handlers retry.
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=30, connect=5)


# --------------------------------------------------------------------------------------------------
# Errors


class ApiError(Exception):
    """An API call failed; ``status`` is the HTTP code, ``reason``/``message`` from the Status body."""

    def __init__(self, status: int, reason: str, message: str, method: str, path: str) -> None:
        super().__init__(f"{method} {path}: {status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class NotFound(ApiError):
    """404: the object (or the resource type) does not exist."""


class Conflict(ApiError):
    """409: a resourceVersion precondition failed, or the object already exists."""


class Unauthorized(ApiError):
    """401: the credentials were rejected (and a fresh login did not help)."""


def _error(status: int, payload: Any, method: str, path: str) -> ApiError:
    reason = ""
    message = ""
    if isinstance(payload, Mapping):
        reason = str(payload.get("reason") or "")
        message = str(payload.get("message") or "")
    elif payload:
        message = str(payload)[:500]
    cls = {404: NotFound, 409: Conflict, 401: Unauthorized}.get(status, ApiError)
    return cls(status, reason, message, method, path)


# --------------------------------------------------------------------------------------------------
# Client


LoginFn = Callable[[], Awaitable[kopf.ConnectionInfo]]


class Client:
    """An API client bound to one endpoint and set of credentials.

    ``relogin`` (optional) is awaited once after a 401 to refresh expired credentials (rotated
    service-account tokens); the failed request is then retried once. ``event_namespace``: where
    Events about cluster-scoped objects (GismoPools) go, the operator's own namespace.
    """

    def __init__(
        self, info: kopf.ConnectionInfo, relogin: LoginFn | None = None, *, event_namespace: str | None = None
    ) -> None:
        self._info = info
        self._relogin = relogin
        self.event_namespace = event_namespace
        self._session: aiohttp.ClientSession | None = None

    @property
    def server(self) -> str:
        """The API server's base URL."""
        return self._info.server.rstrip("/")

    @property
    def default_namespace(self) -> str | None:
        """The namespace of the credentials' context, if any (used for events of cluster objects)."""
        return self._info.default_namespace

    def _make_session(self) -> aiohttp.ClientSession:
        info = self._info
        headers = dict(info.as_http_headers())
        headers.setdefault("User-Agent", COMPONENT)
        auth = None
        if info.username and info.password:
            auth = aiohttp.BasicAuth(info.username, info.password)
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ssl=info.as_ssl_context()),
            timeout=REQUEST_TIMEOUT,
            headers=headers,
            auth=auth,
            proxy=info.proxy_url,
            trust_env=info.trust_env,
        )

    async def close(self) -> None:
        """Close the connection pool (the client can be used again; it reconnects lazily)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """One API call; returns the decoded JSON body or raises :class:`ApiError` (subclasses)."""
        for attempt in (1, 2):
            if self._session is None or self._session.closed:
                self._session = self._make_session()
            data = None if body is None else json.dumps(body)
            headers = {"Content-Type": content_type} if body is not None else {}
            async with self._session.request(
                method, self.server + path, data=data, params=params, headers=headers
            ) as response:
                text = await response.text()
                try:
                    payload = json.loads(text) if text else None
                except json.JSONDecodeError:
                    payload = text
                if response.status == 401 and attempt == 1 and self._relogin is not None:
                    logger.info("API credentials rejected; logging in again")
                    self._info = await self._relogin()
                    await self.close()
                    continue
                if response.status >= 400:
                    raise _error(response.status, payload, method, path)
                return payload
        raise AssertionError("unreachable")  # pragma: no cover

    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> Body:
        """Read one object."""
        result: Body = await self.request("GET", resource.path(namespace, name))
        return result

    async def get_or_none(self, resource: Resource, name: str, namespace: str | None = None) -> Body | None:
        """Read one object, or None when it does not exist."""
        try:
            return await self.get(resource, name, namespace)
        except NotFound:
            return None

    async def list(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int | None = None,
    ) -> list[Body]:
        """All objects of a resource (one namespace, or all when ``namespace`` is None).

        Selectors are passed to the API server; callers must not rely on them for correctness when
        testing against kmock (which ignores them), so filter again in Python where it matters.

        ``page_size``: read in pages of that many objects (see :meth:`pages`).
        """
        found: list[Body] = []
        async for page in self.pages(
            resource,
            namespace,
            label_selector=label_selector,
            field_selector=field_selector,
            page_size=page_size,
        ):
            found.extend(page)
        return found

    async def pages(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[builtins.list[Body]]:
        """The objects of a LIST, a page (``limit``/``continue``) at a time: a caller that keeps only
        what it needs of each page never holds thousands of full objects, and each page is decoded
        in one short step, so the event loop serves admissions in between (a server that ignores
        ``limit`` answers in one page; a continue token that expired mid-list fails the call with
        410, and the caller lists again later). No ``page_size``: one page, the whole list."""
        params: dict[str, str] = {}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        if page_size:
            params["limit"] = str(page_size)
        while True:
            payload = await self.request("GET", resource.path(namespace), params=params or None)
            if not isinstance(payload, Mapping):
                return
            yield [dict(item) for item in payload.get("items") or [] if isinstance(item, Mapping)]
            token = (payload.get("metadata") or {}).get("continue") if page_size else None
            if not token:
                return
            params["continue"] = str(token)

    async def list_with_version(self, resource: Resource) -> tuple[builtins.list[Body], str]:
        """All objects (all namespaces) and the list's resourceVersion ("" when the API gives none),
        the starting point of a :meth:`watch` that misses nothing."""
        payload = await self.request("GET", resource.path(None))
        if not isinstance(payload, Mapping):
            return [], ""
        items = [dict(i) for i in payload.get("items") or [] if isinstance(i, Mapping)]
        return items, str((payload.get("metadata") or {}).get("resourceVersion") or "")

    async def watch(
        self, resource: Resource, *, resource_version: str = "", timeout_seconds: int = 300
    ) -> AsyncIterator[Body]:
        """Watch events (all namespaces) from ``resource_version`` until the server ends the stream.

        Yields the decoded events (``{"type": ..., "object": ...}``), ERROR ones included (a 410
        means the version is too old: list again). Lines are split here rather than with aiohttp's
        readline, which refuses lines above 64 KiB (a big object is one line).
        """
        if self._session is None or self._session.closed:
            self._session = self._make_session()
        params = {"watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": str(timeout_seconds)}
        if resource_version:
            params["resourceVersion"] = resource_version
        timeout = aiohttp.ClientTimeout(total=None, connect=5, sock_read=timeout_seconds + 30)
        path = resource.path(None)
        async with self._session.get(self.server + path, params=params, timeout=timeout) as response:
            if response.status >= 400:
                text = await response.text()
                try:
                    payload: Any = json.loads(text) if text else None
                except json.JSONDecodeError:
                    payload = text
                raise _error(response.status, payload, "GET", path)
            buffer = b""
            async for chunk in response.content.iter_any():
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
            if buffer.strip():
                yield json.loads(buffer)

    async def create(self, resource: Resource, body: Body, namespace: str | None = None) -> Body:
        """Create an object; :class:`Conflict` when the name is taken."""
        if resource.namespaced and namespace is None:
            namespace = body.get("metadata", {}).get("namespace")
            if namespace is None:
                raise ValueError(f"creating a {resource.kind} needs a namespace")
        full = {"apiVersion": resource.api_version, "kind": resource.kind, **body}
        result: Body = await self.request("POST", resource.path(namespace), body=full)
        return result

    async def patch(
        self,
        resource: Resource,
        name: str,
        patch: Body,
        namespace: str | None = None,
        *,
        resource_version: str | None = None,
        subresource: str | None = None,
    ) -> Body:
        """JSON merge patch. ``resource_version`` makes it conditional (409 → :class:`Conflict`)."""
        body = dict(patch)
        if resource_version is not None:
            metadata = dict(body.get("metadata") or {})
            metadata["resourceVersion"] = resource_version
            body["metadata"] = metadata
        result: Body = await self.request(
            "PATCH",
            resource.path(namespace, name, subresource),
            body=body,
            content_type="application/merge-patch+json",
        )
        return result

    async def patch_status(
        self, resource: Resource, name: str, status: Body, namespace: str | None = None
    ) -> Body:
        """Merge-patch the ``status`` subresource with ``{"status": status}``."""
        return await self.patch(resource, name, {"status": status}, namespace, subresource="status")

    async def delete(
        self,
        resource: Resource,
        name: str,
        namespace: str | None = None,
        *,
        uid: str | None = None,
        resource_version: str | None = None,
        missing_ok: bool = True,
    ) -> Body | None:
        """Delete an object, optionally only if it still has this ``uid``/``resource_version``.

        Returns the API's answer, or None when the object was already gone and ``missing_ok``.
        """
        preconditions = {
            k: v for k, v in {"uid": uid, "resourceVersion": resource_version}.items() if v is not None
        }
        body = (
            {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": preconditions}
            if preconditions
            else None
        )
        try:
            result: Body = await self.request("DELETE", resource.path(namespace, name), body=body)
            return result
        except NotFound:
            if missing_ok:
                return None
            raise

    async def post_event(
        self,
        involved: Mapping[str, Any],
        type_: str,
        reason: str,
        message: str,
        *,
        namespace: str | None = None,
    ) -> None:
        """Post a core/v1 Event about ``involved`` (an object body). Never raises: events are
        auxiliary, a failure is logged. Events of cluster-scoped objects go to ``namespace``, else the
        operator's own namespace (``event_namespace``), else the credentials' namespace, else
        ``default``; ``kubectl describe`` finds them in any namespace."""
        meta = involved.get("metadata") or {}
        event_ns = (
            meta.get("namespace") or namespace or self.event_namespace or self.default_namespace or "default"
        )
        now = dt.datetime.now(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        involved_ref = {
            "apiVersion": involved.get("apiVersion"),
            "kind": involved.get("kind"),
            "name": meta.get("name"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        }
        if meta.get("namespace"):
            involved_ref["namespace"] = meta["namespace"]
        event = {
            # An explicit unique name rather than generateName: same result on a real API server,
            # and emulators that key objects by name (kmock) keep every event.
            "metadata": {
                "name": f"{meta.get('name') or 'object'}.{uuid.uuid4().hex[:16]}",
                "namespace": event_ns,
            },
            "involvedObject": {k: v for k, v in involved_ref.items() if v is not None},
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": COMPONENT,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.create(EVENTS, event, namespace=event_ns)
        except (ApiError, aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("could not post event %s/%s: %s", reason, meta.get("name"), exc)


# --------------------------------------------------------------------------------------------------
# Credentials


async def default_login() -> kopf.ConnectionInfo:
    """Credentials as kopf reads them: the in-cluster service account, else the kubeconfig
    (exec plugins included), via kubernetes_asyncio."""
    settings = kopf.OperatorSettings()
    info = await kopf.login_via_async_client(logger=logger, settings=settings)
    if info is None:
        raise kopf.LoginError("kubernetes_asyncio is not available to read credentials")
    return info
