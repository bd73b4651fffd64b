"""Errors raised by the Gismo store.

Every error derives from :class:`GismoError` so callers (the Ray layer) can fall back to Ray's own
object store with one ``except``. Each error carries a short code used on the agent socket, so an
error raised inside the agent reaches the client as the same class.
"""

from __future__ import annotations


class GismoError(Exception):
    """Base class of every Gismo error."""

    code = 1


class StoreFull(GismoError):
    """No space or no free slot in this pod's region; the caller should fall back to Ray's store."""

    code = 2


class ObjectNotFound(GismoError):
    """No sealed object answers to this ref (never created, aborted, or deleted)."""

    code = 3


class StaleRef(ObjectNotFound):
    """The ref names a slot that was deleted or reused since the ref was made.

    A subclass of ObjectNotFound: for a caller both mean "this object is gone".
    """

    code = 4


class CorruptRegion(GismoError):
    """A region's header or metadata fails validation (foreign, unformatted, or damaged memory)."""

    code = 5


class AgentUnavailable(GismoError):
    """The pod's agent cannot be reached, or it restarted under an open reservation."""

    code = 6


class ProtocolError(GismoError):
    """A malformed message on the agent socket."""

    code = 7


_BY_CODE: dict[int, type[GismoError]] = {
    cls.code: cls
    for cls in (
        GismoError,
        StoreFull,
        ObjectNotFound,
        StaleRef,
        CorruptRegion,
        AgentUnavailable,
        ProtocolError,
    )
}


def error_from_code(code: int, message: str) -> GismoError:
    """Rebuild the error the agent raised, from its wire code (unknown codes become GismoError)."""
    return _BY_CODE.get(code, GismoError)(message)


__all__ = [
    "AgentUnavailable",
    "CorruptRegion",
    "GismoError",
    "ObjectNotFound",
    "ProtocolError",
    "StaleRef",
    "StoreFull",
    "error_from_code",
]
