"""A fake API for the region ledger that enforces what kmock does not, and helpers for ledger tests.

It behaves like a real API server where the ledger's correctness rests on it: every object gets a
uid and every write bumps ``metadata.resourceVersion``; a create of an existing name is
AlreadyExists; a patch or delete carrying a stale resourceVersion, or a delete whose uid
precondition names another object, gets a 409. It yields to the event loop inside each call, so
concurrent coroutines really interleave between calls. On top:

- ``hooks``: callables run at named points of a call (``"create_region:applied"`` runs after a
  create was stored, before its answer is returned); one that raises :class:`Crash` kills the
  calling "process" there, one that raises an ``Exception`` makes that call fail;
- ``gc()``: Kubernetes' garbage collector, deleting GismoRegions all of whose owners are gone
  (kmock has none: tests call it, or not, to cover both);
- ``holders()``: what is durable now (the probe a test reads at the instant an answer is given).

(Next to ``conftest.py``, so every test folder below imports it by name.)
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import itertools
import re
from collections.abc import Callable, Mapping
from typing import Any

from gismo import poolrules
from gismo.contract import ANN_REGION, ANN_REGION_OFFSET, ANN_RESERVATION
from gismo_operator.constants import LABEL_CLUSTER, LABEL_SLICE, SLICE_FINALIZER
from gismo_operator.core.assignment import PodClaim
from gismo_operator.core.models import GismoRegion, GismoSlice, RegionAssignment, name_label
from gismo_operator.ledger.regions import AlreadyExists, Conflict, SliceGone
from gismo_operator.testing.mergepatch import merge_patch

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
TTL = dt.timedelta(seconds=60)
NS, NAME = "default", "raycluster-kuberay"
REGION = 1 << 20


class Crash(BaseException):
    """The operator process dies at this point (nothing after it runs, no cleanup)."""


class FakeApi:
    """GismoSlices and GismoRegions with real optimistic concurrency, and pods."""

    def __init__(self) -> None:
        self.slices: dict[tuple[str, str], dict[str, Any]] = {}
        self.regions_by_name: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: list[dict[str, Any]] = []
        self.rv = itertools.count(1)
        self.uids = itertools.count(1)
        self.writes = 0
        self.bytes_written = 0
        self.conflicts = 0
        self.calls: list[str] = []
        self.hooks: dict[str, Callable[[], None]] = {}
        self.interfere: list[Callable[[], None]] = []  # run just before a region write is applied
        self.write_delay = 5  # event-loop turns a create takes before it is stored

    # --- test-side setup and inspection ----------------------------------------------------------

    def add_slice(
        self, regions: int, namespace: str = NS, name: str = NAME, legacy: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        body = {
            "apiVersion": "gismo.io/v1alpha1",
            "kind": "GismoSlice",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": f"slice-uid-{next(self.uids)}",
                "resourceVersion": str(next(self.rv)),
                "finalizers": [SLICE_FINALIZER],
            },
            "spec": {
                "pool": "pool-a",
                "rayCluster": name,
                "offset": 0,
                "size": regions * REGION,
                "regionSize": REGION,
                "regions": list(legacy or []),
            },
        }
        GismoSlice.model_validate(body)
        refuse_invalid_metadata(body["metadata"])
        self.slices[namespace, name] = body
        return body

    def delete_slice(self, namespace: str = NS, name: str = NAME) -> None:
        """What the API server does on DELETE of an object with finalizers."""
        body = self.slices[namespace, name]
        body["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        body["metadata"]["resourceVersion"] = str(next(self.rv))

    def holders(self, name: str = NAME) -> dict[int, RegionAssignment]:
        """The regions durably held now, by index (the probe read at the instant of an answer)."""
        found: dict[int, RegionAssignment] = {}
        for body in self.regions_by_name.values():
            if body["spec"]["slice"] == name:
                entry = GismoRegion.model_validate(body).assignment()
                assert entry.index not in found
                found[entry.index] = entry
        return found

    def regions(self) -> list[RegionAssignment]:
        return sorted(self.holders().values(), key=lambda r: r.index)

    def gc(self) -> int:
        """Kubernetes' garbage collector: delete every GismoRegion whose owners are all gone."""
        pods = {(p["metadata"].get("namespace", NS), p["metadata"]["uid"]) for p in self.pods}
        slices = {(ns, b["metadata"]["uid"]) for (ns, _), b in self.slices.items()}
        gone = []
        for key, body in self.regions_by_name.items():
            owners = body["metadata"].get("ownerReferences") or []
            alive = [(key[0], o["uid"]) in (pods if o["kind"] == "Pod" else slices) for o in owners]
            if owners and not any(alive):
                gone.append(key)
        for key in gone:
            del self.regions_by_name[key]
        return len(gone)

    def _hook(self, point: str) -> None:
        self.calls.append(point)
        hook = self.hooks.get(point)
        if hook is not None:
            hook()

    # --- slices -------------------------------------------------------------------------------

    async def read_slice(self, namespace: str, name: str) -> dict[str, Any] | None:
        await asyncio.sleep(0)
        self._hook("read_slice")
        body = self.slices.get((namespace, name))
        return copy.deepcopy(body) if body is not None else None

    def _write_slice(
        self, namespace: str, name: str, patch: Mapping[str, Any], rv: str | None
    ) -> dict[str, Any]:
        body = self.slices.get((namespace, name))
        if body is None:
            raise SliceGone(name)
        if rv is not None and rv != body["metadata"]["resourceVersion"]:
            self.conflicts += 1
            raise Conflict(name)
        new = merge_patch(body, patch)
        GismoSlice.model_validate(new)  # what the CRD schema would refuse
        new["metadata"]["resourceVersion"] = str(next(self.rv))
        self.slices[namespace, name] = new
        self.writes += 1
        self.bytes_written += len(repr(patch))
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            del self.slices[namespace, name]
        return copy.deepcopy(new)

    async def write_slice(
        self, namespace: str, name: str, spec: Mapping[str, Any], resource_version: str | None
    ) -> dict[str, Any]:
        await asyncio.sleep(0)
        self._hook("write_slice")
        return self._write_slice(namespace, name, {"spec": dict(spec)}, resource_version)

    async def write_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str | None
    ) -> dict[str, Any]:
        await asyncio.sleep(0)
        self._hook("write_finalizers")
        return self._write_slice(namespace, name, {"metadata": {"finalizers": finalizers}}, resource_version)

    async def write_slice_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        await asyncio.sleep(0)
        body = self.slices.get((namespace, name))
        if body is None:
            raise SliceGone(name)
        body["status"] = merge_patch(body.get("status") or {}, status)

    async def list_cluster_pods(self, namespace: str, cluster: str) -> list[dict[str, Any]]:
        await asyncio.sleep(0)
        self._hook("list_pods")
        return [
            copy.deepcopy(p)
            for p in self.pods
            if (p["metadata"].get("labels") or {}).get(LABEL_CLUSTER, cluster) == cluster
        ]

    # --- regions ------------------------------------------------------------------------------

    async def list_regions(self, namespace: str, slice_name: str) -> list[dict[str, Any]]:
        await asyncio.sleep(0)
        self._hook("list_regions")
        return [
            copy.deepcopy(b)
            for (ns, _), b in self.regions_by_name.items()
            if ns == namespace and b["metadata"]["labels"].get(LABEL_SLICE) == name_label(slice_name)
        ]

    async def create_region(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        for _ in range(self.write_delay):  # a write takes longer than a read: an answer given
            await asyncio.sleep(0)  # before its write landed would be seen by the probe
        self._hook("create_region")
        while self.interfere:
            self.interfere.pop(0)()
        key = (namespace, body["metadata"]["name"])
        refuse_invalid_metadata(body["metadata"])
        if key in self.regions_by_name:
            raise AlreadyExists(key[1])
        stored = copy.deepcopy(dict(body))
        stored["metadata"]["uid"] = f"region-uid-{next(self.uids)}"
        stored["metadata"]["resourceVersion"] = str(next(self.rv))
        GismoRegion.model_validate(stored)
        self.regions_by_name[key] = stored
        self.writes += 1
        self.bytes_written += len(repr(body))
        self._hook("create_region:applied")
        await asyncio.sleep(0)
        return copy.deepcopy(stored)

    async def read_region(self, namespace: str, name: str) -> dict[str, Any] | None:
        await asyncio.sleep(0)
        self._hook("read_region")
        body = self.regions_by_name.get((namespace, name))
        return copy.deepcopy(body) if body is not None else None

    async def patch_region(
        self, namespace: str, name: str, patch: Mapping[str, Any], resource_version: str | None
    ) -> dict[str, Any] | None:
        await asyncio.sleep(0)
        self._hook("patch_region")
        while self.interfere:
            self.interfere.pop(0)()
        body = self.regions_by_name.get((namespace, name))
        if body is None:
            return None
        if resource_version is not None and resource_version != body["metadata"]["resourceVersion"]:
            self.conflicts += 1
            raise Conflict(name)
        new = merge_patch(body, patch)
        new["metadata"]["resourceVersion"] = str(next(self.rv))
        GismoRegion.model_validate(new)
        self.regions_by_name[namespace, name] = new
        self.writes += 1
        self.bytes_written += len(repr(patch))
        return copy.deepcopy(new)

    async def delete_region(
        self, namespace: str, name: str, uid: str | None, resource_version: str | None
    ) -> bool:
        await asyncio.sleep(0)
        self._hook("delete_region")
        while self.interfere:
            self.interfere.pop(0)()
        body = self.regions_by_name.get((namespace, name))
        if body is None:
            return False
        meta = body["metadata"]
        if (uid is not None and uid != meta["uid"]) or (
            resource_version is not None and resource_version != meta["resourceVersion"]
        ):
            self.conflicts += 1
            raise Conflict(name)
        del self.regions_by_name[namespace, name]
        self.writes += 1
        return True


class Invalid(Exception):
    """What the API server answers (422) for an object whose name or labels break its rules."""


#: A DNS subdomain (RFC 1123), the rule for object names: at most 253 characters.
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def refuse_invalid_metadata(meta: Mapping[str, Any]) -> None:
    """Raise :class:`Invalid` as kube-apiserver would: a name that is not a DNS subdomain of at most
    253 characters, or a label key or value that is not of label syntax (values: at most 63)."""
    name = str(meta.get("name") or "")
    if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        raise Invalid(f"metadata.name: {name!r} is not a DNS subdomain of at most 253 characters")
    for key, value in (meta.get("labels") or {}).items():
        problem = poolrules.label_key_problem(key) or poolrules.label_value_problem(str(value))
        if problem:
            raise Invalid(f"metadata.labels: {problem}")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def pod_for(reservation: Any, uid: str, node: str | None = None, *, cluster: str = NAME) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"worker-{uid}",
            "namespace": NS,
            "uid": uid,
            "labels": {LABEL_CLUSTER: cluster},
            "annotations": {
                ANN_REGION: str(reservation.index),
                ANN_REGION_OFFSET: str(reservation.offset),
                ANN_RESERVATION: reservation.token,
            },
        },
        "spec": {"nodeName": node} if node else {},
    }


def claim_of(pod: dict[str, Any]) -> PodClaim:
    claim = PodClaim.from_pod(pod)
    assert claim is not None
    return claim


def assert_disjoint(regions: list[RegionAssignment]) -> None:
    indexes = [r.index for r in regions]
    assert len(indexes) == len(set(indexes))


class Process:
    """One operator process's view of the API: once a call of it raised :class:`Crash`, the process
    is dead and every later call of it (a background task it had started, say) raises Crash too."""

    def __init__(self, api: FakeApi) -> None:
        self._api = api
        self.dead = False

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._api, name)
        if not callable(target) or not asyncio.iscoroutinefunction(target):
            return target

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.dead:
                raise Crash("the process is dead")
            try:
                return await target(*args, **kwargs)
            except Crash:
                self.dead = True
                raise

        return call
