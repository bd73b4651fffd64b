"""The Kubernetes API as the operator uses it: the client (:mod:`.client`) and the resource types
with their URL paths (:mod:`.resources`). Stateless: the one client of a running operator lives
in its context (:mod:`gismo_operator.context`)."""

from __future__ import annotations

from gismo_operator.kube.client import (
    REQUEST_TIMEOUT,
    ApiError,
    Body,
    Client,
    Conflict,
    LoginFn,
    NotFound,
    Unauthorized,
    default_login,
)
from gismo_operator.kube.resources import (
    EVENTS,
    NAMESPACES,
    NODES,
    PODS,
    POOLS,
    RAYCLUSTERS,
    REGIONS,
    SLICES,
    Resource,
)

__all__ = [
    "EVENTS",
    "NAMESPACES",
    "NODES",
    "PODS",
    "POOLS",
    "RAYCLUSTERS",
    "REGIONS",
    "REQUEST_TIMEOUT",
    "SLICES",
    "ApiError",
    "Body",
    "Client",
    "Conflict",
    "LoginFn",
    "NotFound",
    "Resource",
    "Unauthorized",
    "default_login",
]
