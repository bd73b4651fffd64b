"""Process-wide state shared by the RayCluster and Ray pod handlers: all of it a rebuildable cache.

- the region ledger (its cache of slice bodies; the truth is in the API),
- the GismoPool bodies seen on the watch (refreshed by GET when absent),
- fire-and-forget Events, so an admission never waits for an Event write,
- de-duplication of repeated Warning Events (KubeRay rewrites RayCluster status often; the same
  "pool full" must not become one Event per status update).

Nothing here survives a restart and nothing needs to: every handler re-reads what it writes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from gismo_operator import kube
from gismo_operator.core.models import GismoPool
from gismo_operator.handlers import lifecycle as startup
from gismo_operator.handlers import pools
from gismo_operator.ledger.regions import RegionLedger
from gismo_operator.ledger.sliceapi import KubeSliceApi
from gismo_operator.settings import Settings

logger = logging.getLogger(__name__)

_ledger: RegionLedger | None = None
_pools: dict[str, dict[str, Any]] = {}
_pool_models: dict[str, GismoPool] = {}
_tasks: set[asyncio.Task[None]] = set()
_warned: dict[tuple[str, str], str] = {}


def settings() -> Settings:
    """The operator settings: those the process was started with (:mod:`gismo_operator.handlers.lifecycle`)."""
    return startup.current().settings


def ledger() -> RegionLedger:
    """The process's region ledger (created on first use)."""
    global _ledger
    if _ledger is None:
        _ledger = RegionLedger(
            KubeSliceApi(),
            reservation_ttl=dt.timedelta(seconds=settings().reservation_ttl),
            on_write=pools.slice_written,
        )
    return _ledger


def reset() -> None:
    """Forget every cache (tests start a fresh "process" this way)."""
    global _ledger
    _ledger = None
    _pools.clear()
    _pool_models.clear()
    _warned.clear()


def remember_pool(body: Mapping[str, Any] | None, name: str) -> None:
    """Keep (or, with None, drop) a pool body seen on the watch."""
    _pool_models.pop(name, None)
    if body is None:
        _pools.pop(name, None)
    else:
        _pools[name] = dict(body)


async def get_pool(name: str) -> dict[str, Any] | None:
    """The pool's body: from the watch cache, else one GET (kept for next time)."""
    if name in _pools:
        return _pools[name]
    body = await kube.client().get_or_none(kube.POOLS, name)
    if body is not None:
        _pools[name] = body
    return body


async def get_pool_model(name: str) -> GismoPool | None:
    """The pool, parsed (once per version seen, not per admission); raises ValidationError if invalid."""
    model = _pool_models.get(name)
    if model is None:
        body = await get_pool(name)
        if body is None:
            return None
        model = GismoPool.model_validate(body)
        if _pools.get(name) is body:  # still the current version: keep the parse
            _pool_models[name] = model
    return model


def raycluster_ref(namespace: str, name: str, uid: str | None = None) -> dict[str, Any]:
    """A minimal RayCluster body to hang an Event on (involvedObject)."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if uid:
        meta["uid"] = uid
    return {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": meta}


def post_event(involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    """Post an Event in the background; failures are logged by the client, never raised."""

    async def post() -> None:
        try:
            await kube.client().post_event(involved, type_, reason, message)
        except Exception as exc:  # the client should not raise; never let an Event break a handler
            logger.warning("could not post event %s: %s", reason, exc)

    task = asyncio.get_running_loop().create_task(post())
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def warn_once(involved: Mapping[str, Any], reason: str, message: str) -> None:
    """A Warning Event, unless the same one was the last posted for this object and reason."""
    meta = involved.get("metadata") or {}
    key = (f"{meta.get('namespace')}/{meta.get('name')}/{meta.get('uid')}", reason)
    if _warned.get(key) == message:
        return
    _warned[key] = message
    post_event(involved, "Warning", reason, message)


def clear_warnings(namespace: str, name: str) -> None:
    """Forget posted warnings of an object (it changed or went away), so they can be said again."""
    prefix = f"{namespace}/{name}/"
    for key in [k for k in _warned if k[0].startswith(prefix)]:
        del _warned[key]


async def drain_events() -> None:
    """Wait for the Events posted so far (tests; shutdown)."""
    while _tasks:
        await asyncio.gather(*list(_tasks), return_exceptions=True)
