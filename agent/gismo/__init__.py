"""Gismo: Ray objects kept once in shared (CXL) memory and read in place from any attached node."""

from .client import Client, connect
from .errors import AgentUnavailable, CorruptRegion, GismoError, ObjectNotFound, StaleRef, StoreFull
from .ref import Ref

__all__ = [
    "AgentUnavailable",
    "Client",
    "CorruptRegion",
    "GismoError",
    "ObjectNotFound",
    "Ref",
    "StaleRef",
    "StoreFull",
    "connect",
]
