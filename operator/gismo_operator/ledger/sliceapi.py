"""The region ledger's API calls (:class:`gismo_operator.ledger.regions.RegionApi`) over the shared client.

Kept apart from the ledger so the ledger can be unit-tested against a fake API that enforces
resourceVersion, AlreadyExists and delete preconditions (kmock does not). Each call asks
``client()`` for the client anew: the context replaces it when credentials are refreshed.
Cost: one HTTP request per call.

API calls: GET/PATCH gismoslices (spec.size and the legacy spec.regions; metadata.finalizers),
PATCH gismoslices/status, LIST pods (namespaced, labelSelector), LIST/GET/POST/PATCH/DELETE
gismoregions (namespaced).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gismo_operator import kube
from gismo_operator.constants import LABEL_CLUSTER, LABEL_SLICE
from gismo_operator.core.models import name_label
from gismo_operator.ledger.regions import AlreadyExists, Conflict, SliceGone


class KubeSliceApi:
    """:class:`~gismo_operator.ledger.regions.RegionApi` backed by :mod:`gismo_operator.kube`."""

    def __init__(self, client: Callable[[], kube.Client]) -> None:
        self.client = client

    async def read_slice(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.client().get_or_none(kube.SLICES, name, namespace)

    async def _patch_slice(
        self, namespace: str, name: str, patch: dict[str, Any], resource_version: str | None
    ) -> dict[str, Any]:
        try:
            return await self.client().patch(
                kube.SLICES, name, patch, namespace, resource_version=resource_version
            )
        except kube.Conflict as exc:
            raise Conflict(str(exc)) from exc
        except kube.NotFound as exc:
            raise SliceGone(str(exc)) from exc

    async def write_slice(
        self, namespace: str, name: str, spec: Mapping[str, Any], resource_version: str | None
    ) -> dict[str, Any]:
        return await self._patch_slice(namespace, name, {"spec": dict(spec)}, resource_version)

    async def write_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str | None
    ) -> dict[str, Any]:
        return await self._patch_slice(
            namespace, name, {"metadata": {"finalizers": finalizers}}, resource_version
        )

    async def write_slice_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        try:
            await self.client().patch_status(kube.SLICES, name, dict(status), namespace)
        except kube.NotFound as exc:
            raise SliceGone(str(exc)) from exc

    async def list_cluster_pods(self, namespace: str, cluster: str) -> list[dict[str, Any]]:
        pods = await self.client().list(kube.PODS, namespace, label_selector=f"{LABEL_CLUSTER}={cluster}")
        # Filter again: emulators ignore selectors. Pods being deleted still hold their region.
        return [
            p for p in pods if ((p.get("metadata") or {}).get("labels") or {}).get(LABEL_CLUSTER) == cluster
        ]

    async def list_regions(self, namespace: str, slice_name: str) -> list[dict[str, Any]]:
        # The ledger filters again on spec.slice (emulators ignore selectors).
        selector = f"{LABEL_SLICE}={name_label(slice_name)}"
        return await self.client().list(kube.REGIONS, namespace, label_selector=selector)

    async def create_region(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return await self.client().create(kube.REGIONS, dict(body), namespace)
        except kube.Conflict as exc:  # a POST has no precondition: 409 is AlreadyExists
            raise AlreadyExists(str(exc)) from exc

    async def read_region(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.client().get_or_none(kube.REGIONS, name, namespace)

    async def patch_region(
        self, namespace: str, name: str, patch: Mapping[str, Any], resource_version: str | None
    ) -> dict[str, Any] | None:
        try:
            return await self.client().patch(
                kube.REGIONS, name, dict(patch), namespace, resource_version=resource_version
            )
        except kube.Conflict as exc:
            raise Conflict(str(exc)) from exc
        except kube.NotFound:
            return None

    async def delete_region(
        self, namespace: str, name: str, uid: str | None, resource_version: str | None
    ) -> bool:
        try:
            deleted = await self.client().delete(
                kube.REGIONS, name, namespace, uid=uid, resource_version=resource_version
            )
        except kube.Conflict as exc:
            raise Conflict(str(exc)) from exc
        return deleted is not None
