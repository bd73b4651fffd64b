"""The operator's one context: settings, the API client, the region ledger and every cache.

One :class:`OperatorContext` is made at start-up (``__main__``; the embedded harness in tests makes
a fresh one per operator run) and installed with :func:`install`; handlers, the webhook fast path
and the background tasks (slice watch, sweep) reach it through :func:`current`. A test that wants
a clean "process" installs a new context; nothing else is ever reset.

Why one module-level slot rather than kopf's ``memo``: kopf hands ``memo`` only to its handlers,
but much of the operator's work runs outside them: the webhook fast path answers AdmissionReviews
before kopf builds any handler arguments (:mod:`gismo_operator.webhook.kopf_overrides`), the
ledger's write hook, the slice watch and the sweep are plain asyncio tasks, and the settings are
needed before kopf starts (the webhook server, metrics). The slot is written only by
:func:`install` and holds nothing but the context.

Everything in the context is a rebuildable cache except the settings: nothing survives a restart
and nothing needs to, since every handler re-reads what it writes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import kopf

from gismo.contract import RESOURCE_PREFIX
from gismo_operator import kube
from gismo_operator.constants import LABEL_POD_SECURITY_ENFORCE
from gismo_operator.core.coalesce import Coalescer
from gismo_operator.core.models import GismoPool
from gismo_operator.core.poolindex import PoolIndex
from gismo_operator.core.status import SliceViewCache
from gismo_operator.ledger.regions import RegionLedger
from gismo_operator.ledger.sliceapi import KubeSliceApi
from gismo_operator.settings import POD_SECURITY_LEVELS, Settings

logger = logging.getLogger(__name__)

#: Seconds between a region change and the slice status write that counts it (coalesced).
SLICE_STATUS_DELAY = 1.0
#: Slice status writes per second, at most, for all slices together: with many slices each
#: changed once every few seconds the per-slice debounce merges nothing, and a write per admission
#: (plus the watch event it causes) competes with admissions; waiting for a turn merges instead.
SLICE_STATUS_RATE = 20.0
#: Seconds a namespace's Pod Security level is taken as read (a relabel takes effect after this).
POD_SECURITY_TTL = 30.0
#: Seconds the nodes' advertised Gismo resources are taken as read; and, for a resource no node
#: advertises, how soon they are listed again.
ADVERTISED_TTL = 30.0
ADVERTISED_RETRY = 5.0


def slice_status_writer(
    ledger: RegionLedger,
    *,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    clock: Callable[[], float] | None = None,
) -> Coalescer[tuple[str, str]]:
    """The coalesced writer of each slice's region counts: a slice's status is written
    :data:`SLICE_STATUS_DELAY` after a change, at most :data:`SLICE_STATUS_RATE` writes per second
    in all, with the ledger's counts at the time of the write (``sleep``/``clock``: tests)."""
    return Coalescer(
        lambda k: ledger.write_status(*k),
        delay=SLICE_STATUS_DELAY,
        min_interval=1.0 / SLICE_STATUS_RATE,
        what="GismoSlice status",
        sleep=sleep,
        clock=clock,
    )


@dataclasses.dataclass(eq=False)
class OperatorContext:
    """How this process runs, and everything it keeps between events.

    Configuration (given at creation):

    - ``settings``: the ``GISMO_OPERATOR_*`` settings.
    - ``dev``: serve webhooks on 127.0.0.1 with a generated certificate and let kopf create the
      Validating/MutatingWebhookConfigurations itself.
    - ``webhook_addr``: listening address (default 127.0.0.1 in dev, all interfaces otherwise).
    - ``webhook_server``: a ready server object, overriding the above (tests).
    - ``tune``: called last with kopf's settings (tests adjust timeouts, event posting, ...).
    - ``login_source``: how credentials are obtained (tests point it at kmock); default: the
      in-cluster service account, else the kubeconfig (:func:`kube.default_login`).
    """

    settings: Settings = dataclasses.field(default_factory=Settings.from_env)
    dev: bool = False
    webhook_addr: str | None = None
    webhook_server: kopf.WebhookServer | None = None
    tune: Callable[[kopf.OperatorSettings], None] | None = None
    login_source: kube.LoginFn | None = None

    # --- Run-time state (all rebuildable caches) ---------------------------------------------------
    #: The API client, set by :meth:`login` (kopf's login handler).
    api: kube.Client | None = None
    #: GismoPool bodies seen on the watch (refreshed by GET when absent), and their parses.
    pools: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    pool_models: dict[str, GismoPool] = dataclasses.field(default_factory=dict)
    #: The last Warning Event message posted per (object, reason): KubeRay rewrites RayCluster
    #: status often, and the same "pool full" must not become one Event per status update.
    warned: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict)
    #: uids of Ray pods already counted as running without the agent (GismoNotInjected).
    reported_not_injected: set[str] = dataclasses.field(default_factory=set)
    #: Per (namespace, RayCluster): the pods its last GismoNotInjected Event named.
    reported_clusters: dict[tuple[str, str], list[str]] = dataclasses.field(default_factory=dict)
    #: Fire-and-forget Event posts in flight (an admission never waits for an Event write).
    event_tasks: set[asyncio.Task[None]] = dataclasses.field(default_factory=set)
    #: The last view of each slice (the pool status validates a changed slice only).
    slice_views: SliceViewCache = dataclasses.field(default_factory=SliceViewCache)
    #: Every slice's view by pool, kept by the slice watch: a pool refresh reads its figures here.
    pool_index: PoolIndex = dataclasses.field(default_factory=PoolIndex)
    #: Per pool: one status refresh at a time (an older view is never written last).
    status_locks: defaultdict[str, asyncio.Lock] = dataclasses.field(
        default_factory=lambda: defaultdict(asyncio.Lock)
    )
    #: Per pool: one slice allocation or resize at a time (no two slices get the same extent).
    allocation_locks: defaultdict[str, asyncio.Lock] = dataclasses.field(
        default_factory=lambda: defaultdict(asyncio.Lock)
    )
    #: Per RayCluster uid: the (generation, gismo annotations) last reconciled to a settled state.
    settled: dict[str, tuple[Any, ...]] = dataclasses.field(default_factory=dict)
    #: Per namespace: (when read, the Pod Security level it enforces). Read only for hostPath pools.
    pod_security_levels: dict[str, tuple[float, str]] = dataclasses.field(default_factory=dict)
    #: When the nodes were last listed, and per Gismo resource the labels of the nodes advertising it.
    advertised: tuple[float, dict[str, list[dict[str, str]]]] | None = None
    #: The coalesced pool-status refresher, the slice watch and the sweep (started at kopf start-up).
    refresher: Coalescer[str] | None = None
    slice_watch: asyncio.Task[None] | None = None
    sweeper: asyncio.Task[None] | None = None
    #: The coalesced writer of each slice's region counts (its status; informational).
    slice_status: Coalescer[tuple[str, str]] | None = None
    _ledger: RegionLedger | None = None

    # --- The API client ----------------------------------------------------------------------------

    async def login(self) -> kopf.ConnectionInfo:
        """Obtain credentials, (re)make the client with them, and return them to kopf."""
        info = await self._credentials()
        old, self.api = (
            self.api,
            kube.Client(info, relogin=self._credentials, event_namespace=self.settings.namespace),
        )
        if old is not None:
            await old.close()
        return info

    async def _credentials(self) -> kopf.ConnectionInfo:
        return await (self.login_source or kube.default_login)()

    def client(self) -> kube.Client:
        """The API client; raises if the operator has not logged in yet."""
        if self.api is None:
            raise RuntimeError("the Kubernetes client is not configured: the operator has not logged in yet")
        return self.api

    async def close(self) -> None:
        """Stop the status writer and close the client's connections (on operator shutdown)."""
        if self.slice_status is not None:
            await self.slice_status.close()
            self.slice_status = None
        if self._ledger is not None:
            await self._ledger.close()
        if self.api is not None:
            await self.api.close()

    # --- The region ledger -------------------------------------------------------------------------

    @property
    def ledger(self) -> RegionLedger:
        """The region ledger (made on first use; its API calls go through :meth:`client`)."""
        if self._ledger is None:
            self._ledger = RegionLedger(
                KubeSliceApi(self.client),
                reservation_ttl=dt.timedelta(seconds=self.settings.reservation_ttl),
                on_change=self._regions_changed,
            )
        return self._ledger

    def _regions_changed(self, key: tuple[str, str]) -> None:
        """A slice's regions changed: its status counts follow, coalesced (at most one write per
        slice per :data:`SLICE_STATUS_DELAY`, however many admissions, and at most
        :data:`SLICE_STATUS_RATE` writes per second in all). Each write carries the counts at the
        time it runs, and a change always gets a write that starts after it (the last figures are
        never lost)."""
        if self.slice_status is None:
            self.slice_status = slice_status_writer(self.ledger)
        self.slice_status.request(key)

    # --- GismoPools seen on the watch ----------------------------------------------------------------

    def remember_pool(self, body: Mapping[str, Any] | None, name: str) -> None:
        """Keep (or, with None, drop) a pool body seen on the watch."""
        self.pool_models.pop(name, None)
        if body is None:
            self.pools.pop(name, None)
        else:
            self.pools[name] = dict(body)

    async def get_pool(self, name: str) -> dict[str, Any] | None:
        """The pool's body: from the watch cache, else one GET (kept for next time)."""
        if name in self.pools:
            return self.pools[name]
        body = await self.client().get_or_none(kube.POOLS, name)
        if body is not None:
            self.pools[name] = body
        return body

    async def get_pool_model(self, name: str) -> GismoPool | None:
        """The pool, parsed once per version seen (not per admission); raises ValidationError."""
        model = self.pool_models.get(name)
        if model is None:
            body = await self.get_pool(name)
            if body is None:
                return None
            model = GismoPool.model_validate(body)
            if self.pools.get(name) is body:  # still the current version: keep the parse
                self.pool_models[name] = model
        return model

    # --- Namespaces' Pod Security levels ------------------------------------------------------------

    async def pod_security_level(self, namespace: str) -> str:
        """The Pod Security level ``namespace`` enforces: its ``pod-security.kubernetes.io/enforce``
        label, else the cluster default from the settings; a value PodSecurity would not know counts
        as "restricted" (the safe reading). One GET per namespace per :data:`POD_SECURITY_TTL`
        seconds. Raises :class:`kube.ApiError` when the namespace cannot be read."""
        now = time.monotonic()
        seen = self.pod_security_levels.get(namespace)
        if seen is not None and now - seen[0] < POD_SECURITY_TTL:
            return seen[1]
        body = await self.client().get_or_none(kube.NAMESPACES, namespace)
        labels = ((body or {}).get("metadata") or {}).get("labels") or {}
        level = str(labels.get(LABEL_POD_SECURITY_ENFORCE, self.settings.pod_security_default))
        if level not in POD_SECURITY_LEVELS:
            level = POD_SECURITY_LEVELS[-1]
        self.pod_security_levels[namespace] = (now, level)
        return level

    # --- Which nodes advertise a pool's device-plugin resource ----------------------------------------

    async def nodes_advertising(self, resource: str) -> list[dict[str, str]]:
        """Labels of the nodes whose allocatable holds ``resource`` (a pool's ``gismo.io/<pool>``, put
        there by the node component). One LIST of nodes per :data:`ADVERTISED_TTL` seconds, or per
        :data:`ADVERTISED_RETRY` while ``resource`` is advertised nowhere (a node component that just
        started is seen soon). Raises :class:`kube.ApiError` when the nodes cannot be listed."""
        now = time.monotonic()
        seen = self.advertised
        if seen is not None:
            age = now - seen[0]
            if age < ADVERTISED_TTL and (resource in seen[1] or age < ADVERTISED_RETRY):
                return seen[1].get(resource, [])
        table: dict[str, list[dict[str, str]]] = {}
        for node in await self.client().list(kube.NODES):
            allocatable = (node.get("status") or {}).get("allocatable") or {}
            labels = dict((node.get("metadata") or {}).get("labels") or {})
            for name, amount in allocatable.items():
                if str(name).startswith(RESOURCE_PREFIX) and str(amount) not in ("0", ""):
                    table.setdefault(str(name), []).append(labels)
        self.advertised = (now, table)
        return table.get(resource, [])

    # --- Events ------------------------------------------------------------------------------------

    def post_event(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Post an Event in the background; failures are logged by the client, never raised."""

        async def post() -> None:
            try:
                await self.client().post_event(involved, type_, reason, message)
            except Exception as exc:  # the client should not raise; never let an Event break a handler
                logger.warning("could not post event %s: %s", reason, exc)

        task = asyncio.get_running_loop().create_task(post())
        self.event_tasks.add(task)
        task.add_done_callback(self.event_tasks.discard)

    def warn_once(self, involved: Mapping[str, Any], reason: str, message: str) -> None:
        """A Warning Event, unless the same one was the last posted for this object and reason."""
        meta = involved.get("metadata") or {}
        key = (f"{meta.get('namespace')}/{meta.get('name')}/{meta.get('uid')}", reason)
        if self.warned.get(key) == message:
            return
        self.warned[key] = message
        self.post_event(involved, "Warning", reason, message)

    def clear_warnings(self, namespace: str, name: str) -> None:
        """Forget posted warnings of an object (it changed or went away), so they can be said again."""
        prefix = f"{namespace}/{name}/"
        for key in [k for k in self.warned if k[0].startswith(prefix)]:
            del self.warned[key]

    async def drain_events(self) -> None:
        """Wait for the Events posted so far (tests; shutdown)."""
        while self.event_tasks:
            await asyncio.gather(*list(self.event_tasks), return_exceptions=True)


def raycluster_ref(namespace: str, name: str, uid: str | None = None) -> dict[str, Any]:
    """A minimal RayCluster body to hang an Event on (involvedObject)."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if uid:
        meta["uid"] = uid
    return {"apiVersion": kube.RAYCLUSTERS.api_version, "kind": kube.RAYCLUSTERS.kind, "metadata": meta}


# The one module-level slot (see the module docstring): written only by install().
_current: OperatorContext | None = None


def install(context: OperatorContext) -> OperatorContext:
    """Make ``context`` the process's context (start-up; tests install a fresh one); return it."""
    global _current
    _current = context
    return context


def current() -> OperatorContext:
    """The installed context (one built from the environment if none was installed yet)."""
    if _current is None:
        return install(OperatorContext())
    return _current
