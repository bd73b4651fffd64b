"""A fake GismoSlice API that enforces what kmock does not, and helpers for ledger tests.

The fake API behaves like a real API server: every write bumps ``metadata.resourceVersion`` and a
write carrying a stale one gets a 409. It also yields to the event loop inside each call, so
concurrent coroutines really interleave between read and write. (Next to ``conftest.py``, so every
test folder below imports it by name.)
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import itertools
from collections.abc import Mapping
from typing import Any

from gismo.contract import ANN_REGION, ANN_RESERVATION
from gismo_operator.constants import SLICE_FINALIZER
from gismo_operator.core.assignment import PodClaim
from gismo_operator.core.models import GismoSlice, RegionAssignment
from gismo_operator.ledger.regions import Conflict, SliceGone

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
TTL = dt.timedelta(seconds=60)
NS, NAME = "default", "raycluster-kuberay"
REGION = 1 << 20


class FakeApi:
    """GismoSlices with real optimistic concurrency, and pods."""

    def __init__(self) -> None:
        self.slices: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: list[dict[str, Any]] = []
        self.rv = itertools.count(1)
        self.writes = 0
        self.conflicts = 0
        self.interfere: list[Any] = []  # callables run just before a write is applied

    def add_slice(self, regions: int, namespace: str = NS, name: str = NAME) -> None:
        self.slices[namespace, name] = {
            "apiVersion": "gismo.io/v1alpha1",
            "kind": "GismoSlice",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "resourceVersion": str(next(self.rv)),
                "finalizers": [SLICE_FINALIZER],
            },
            "spec": {
                "pool": "pool-a",
                "rayCluster": name,
                "offset": 0,
                "size": regions * REGION,
                "regionSize": REGION,
                "regions": [],
            },
        }

    async def read_slice(self, namespace: str, name: str) -> dict[str, Any] | None:
        await asyncio.sleep(0)
        body = self.slices.get((namespace, name))
        return copy.deepcopy(body) if body is not None else None

    async def write_slice(
        self, namespace: str, name: str, spec: Mapping[str, Any], resource_version: str | None
    ) -> dict[str, Any]:
        await asyncio.sleep(0)
        while self.interfere:
            self.interfere.pop(0)()
        body = self.slices.get((namespace, name))
        if body is None:
            raise SliceGone(name)
        if resource_version != body["metadata"]["resourceVersion"]:
            self.conflicts += 1
            raise Conflict(name)
        body["spec"].update(copy.deepcopy(dict(spec)))
        body["metadata"]["resourceVersion"] = str(next(self.rv))
        GismoSlice.model_validate(body)  # what the CRD schema would refuse
        self.writes += 1
        await asyncio.sleep(0)
        return copy.deepcopy(body)

    async def list_cluster_pods(self, namespace: str, cluster: str) -> list[dict[str, Any]]:
        await asyncio.sleep(0)
        return copy.deepcopy(self.pods)

    async def write_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str | None
    ) -> dict[str, Any]:
        await asyncio.sleep(0)
        body = self.slices.get((namespace, name))
        if body is None:
            raise SliceGone(name)
        if resource_version != body["metadata"]["resourceVersion"]:
            self.conflicts += 1
            raise Conflict(name)
        body["metadata"]["finalizers"] = list(finalizers)
        body["metadata"]["resourceVersion"] = str(next(self.rv))
        if body["metadata"].get("deletionTimestamp") and not finalizers:
            del self.slices[namespace, name]
        return copy.deepcopy(body)

    def delete_slice(self, namespace: str = NS, name: str = NAME) -> None:
        """What the API server does on DELETE of an object with finalizers."""
        body = self.slices[namespace, name]
        body["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        body["metadata"]["resourceVersion"] = str(next(self.rv))

    def regions(self) -> list[RegionAssignment]:
        return GismoSlice.model_validate(self.slices[NS, NAME]).spec.regions


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


def pod_for(reservation: Any, uid: str, node: str | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"worker-{uid}",
            "uid": uid,
            "annotations": {
                ANN_REGION: str(reservation.index),
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
