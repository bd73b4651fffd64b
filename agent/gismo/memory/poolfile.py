"""The Gismo pool-file marker: how a file says "I am the pool file of pool X, made by Gismo".

A file-backed pool (``shm``, ``famfs``) is one file: ``capacity`` bytes of pool data (slices and
regions at their pool offsets, exactly as on a device), followed by one ``PAGE`` of marker::

    [0, capacity)                  pool data: region headers (layout.MAGIC) etc., written by agents
    [capacity, capacity + PAGE)    the marker, written once by whoever created the file

The marker sits *after* the data, not before it, because region 0 of the first slice starts at
pool offset 0 and its header belongs to that region's agent (one writer per byte); putting the
marker outside every region keeps pool offsets identical for files and devices and means no agent
ever writes over it. A reader finds it from the file size alone (the last page), so neither the node
component nor an agent needs to know the capacity in advance to tell a Gismo pool file from
anything else. Devices carry no marker: Gismo never writes to a device it did not format.

The bytes are defined in ``memory/layout.py`` with the region format (``POOL_MAGIC`` =
``b"GISMO\\x00P1"``, "Gismo, pool file, version 1", sharing its first six bytes with the region
header's ``MAGIC``), covered by a CRC32; this module is the file-level rule built on them.

Pure standard library, importable on every Python that Ray supports (3.10+).
"""

from __future__ import annotations

import dataclasses
import os
import stat
from typing import Final

from . import layout

#: Re-exported from the one definition of the format (memory/layout.py).
MARKER_MAGIC: Final = layout.POOL_MAGIC
MARKER_SIZE: Final = layout.POOL_MARKER_SIZE


class PoolFileError(Exception):
    """The path is not a Gismo pool file of the expected pool (the message names the path)."""


@dataclasses.dataclass(frozen=True)
class PoolFileMarker:
    """What the marker of a pool file says."""

    pool: str
    capacity: int

    def pack(self) -> bytes:
        """The marker page (fields, CRC, zero padding to ``MARKER_SIZE``)."""
        return layout.pack_pool_marker(self.pool, self.capacity)

    @classmethod
    def unpack(cls, page: bytes) -> PoolFileMarker | None:
        """The marker in ``page``, or None when the page is not a valid Gismo marker."""
        fields = layout.unpack_pool_marker(page)
        return None if fields is None else cls(*fields)


def file_size(capacity: int) -> int:
    """Size of the pool file of a pool of ``capacity`` bytes (data plus the marker page)."""
    return capacity + MARKER_SIZE


def read_marker(path: str) -> PoolFileMarker | None:
    """The marker of the regular file at ``path``; None when it has none (or is not a regular file).

    The marker counts only when its capacity matches the file's size, so a marker-looking page in the
    middle of some other file (or a truncated pool file) is not taken for one. ``OSError`` from
    opening the file propagates: "cannot tell" is not "not a pool file".
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size < MARKER_SIZE:
            return None
        page = os.pread(fd, MARKER_SIZE, st.st_size - MARKER_SIZE)
    finally:
        os.close(fd)
    marker = PoolFileMarker.unpack(page)
    if marker is None or file_size(marker.capacity) != st.st_size:
        return None
    return marker


def check_pool_file(path: str, pool: str, capacity: int | None = None) -> PoolFileMarker:
    """The marker of ``path`` if it is the Gismo pool file of ``pool`` (and ``capacity``); else
    PoolFileError naming the path and what is wrong. The rule the node component and the agent share
    before they touch a file."""
    try:
        marker = read_marker(path)
    except OSError as exc:
        raise PoolFileError(f"{path}: cannot read it ({exc.strerror})") from exc
    if marker is None:
        raise PoolFileError(f"{path}: not a Gismo pool file (no Gismo pool-file marker at its end)")
    if marker.pool != pool:
        raise PoolFileError(f"{path}: the Gismo pool file of pool {marker.pool!r}, not of {pool!r}")
    if capacity is not None and marker.capacity != capacity:
        raise PoolFileError(
            f"{path}: a Gismo pool file of {marker.capacity} bytes, but pool {pool!r} has {capacity}"
        )
    return marker
