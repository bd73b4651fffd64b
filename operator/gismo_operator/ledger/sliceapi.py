"""The region ledger's API calls (:class:`gismo_operator.ledger.regions.SliceApi`) over the shared client.

Kept apart from the ledger so the ledger can be unit-tested against a fake API that enforces
resourceVersion (kmock does not). Each call asks ``client()`` for the client anew: the context
replaces it when credentials are refreshed. Cost: one HTTP request per call.

API calls: GET/PATCH gismoslices (namespaced; spec.regions and metadata.finalizers), LIST pods
(namespaced, labelSelector).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gismo_operator import kube
from gismo_operator.constants import LABEL_CLUSTER
from gismo_operator.ledger.regions import Conflict, SliceGone


class KubeSliceApi:
    """:class:`~gismo_operator.ledger.regions.SliceApi` backed by :mod:`gismo_operator.kube`."""

    def __init__(self, client: Callable[[], kube.Client]) -> None:
        self.client = client

    async def read_slice(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.client().get_or_none(kube.SLICES, name, namespace)

    async def write_slice(
        self, namespace: str, name: str, spec: Mapping[str, Any], resource_version: str | None
    ) -> dict[str, Any]:
        try:
            return await self.client().patch(
                kube.SLICES, name, {"spec": dict(spec)}, namespace, resource_version=resource_version
            )
        except kube.Conflict as exc:
            raise Conflict(str(exc)) from exc
        except kube.NotFound as exc:
            raise SliceGone(str(exc)) from exc

    async def write_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str | None
    ) -> dict[str, Any]:
        try:
            return await self.client().patch(
                kube.SLICES,
                name,
                {"metadata": {"finalizers": finalizers}},
                namespace,
                resource_version=resource_version,
            )
        except kube.Conflict as exc:
            raise Conflict(str(exc)) from exc
        except kube.NotFound as exc:
            raise SliceGone(str(exc)) from exc

    async def list_cluster_pods(self, namespace: str, cluster: str) -> list[dict[str, Any]]:
        pods = await self.client().list(kube.PODS, namespace, label_selector=f"{LABEL_CLUSTER}={cluster}")
        # Filter again: emulators ignore selectors. Pods being deleted still hold their region.
        return [
            p for p in pods if ((p.get("metadata") or {}).get("labels") or {}).get(LABEL_CLUSTER) == cluster
        ]
