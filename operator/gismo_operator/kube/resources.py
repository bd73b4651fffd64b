"""The Kubernetes resource types the operator reads and writes, and their URL paths."""

from __future__ import annotations

import dataclasses

from gismo_operator.core.models import (
    GROUP,
    POOL_KIND,
    POOL_PLURAL,
    REGION_KIND,
    REGION_PLURAL,
    SLICE_KIND,
    SLICE_PLURAL,
    VERSION,
)


@dataclasses.dataclass(frozen=True)
class Resource:
    """A Kubernetes resource type: where its objects live in the API."""

    group: str
    version: str
    plural: str
    namespaced: bool
    kind: str

    @property
    def api_version(self) -> str:
        """``group/version``, or ``v1`` for the core group."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        """The URL path of the collection, or of one object (and its subresource).

        ``namespace=None`` on a namespaced resource means all namespaces (lists and watches only).
        """
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{namespace}"
        elif not self.namespaced and namespace is not None:
            raise ValueError(f"{self.plural} is cluster-scoped: namespace must be None, got {namespace!r}")
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{name}"
            if subresource:
                base += f"/{subresource}"
        elif subresource:
            raise ValueError("a subresource needs an object name")
        return base


POOLS = Resource(GROUP, VERSION, POOL_PLURAL, namespaced=False, kind=POOL_KIND)
SLICES = Resource(GROUP, VERSION, SLICE_PLURAL, namespaced=True, kind=SLICE_KIND)
RAYCLUSTERS = Resource("ray.io", "v1", "rayclusters", namespaced=True, kind="RayCluster")
PODS = Resource("", "v1", "pods", namespaced=True, kind="Pod")
EVENTS = Resource("", "v1", "events", namespaced=True, kind="Event")
NAMESPACES = Resource("", "v1", "namespaces", namespaced=False, kind="Namespace")
NODES = Resource("", "v1", "nodes", namespaced=False, kind="Node")
REGIONS = Resource(GROUP, VERSION, REGION_PLURAL, namespaced=True, kind=REGION_KIND)
