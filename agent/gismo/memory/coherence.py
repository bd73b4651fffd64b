"""The one coherence hook of the data plane.

CXL 2.0 memory shared between hosts is not necessarily hardware coherent: a writer would have to
flush its cache lines (CLFLUSHOPT/CLWB + SFENCE) before publishing, and a reader invalidate its
copies before reading. Every publish (seal, slot update) calls :func:`flush` and every read of
another writer's bytes calls :func:`invalidate`, so a real implementation slots in here and nowhere
else. On coherent memory and in the /dev/shm emulation both are no-ops (cost: one Python call).
"""

from __future__ import annotations

from typing import Any

COHERENT = True  # emulation and CXL 3.x hardware coherence; flip when a flushing backend exists


def flush(buf: Any, offset: int, size: int) -> None:
    """Make ``buf[offset:offset+size]`` visible to other hosts (no-op on coherent memory)."""
    return None


def invalidate(buf: Any, offset: int, size: int) -> None:
    """Drop stale cached copies of ``buf[offset:offset+size]`` before reading (no-op on coherent memory)."""
    return None
