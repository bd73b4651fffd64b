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


def mark_fixed_file(path: str, pool: str, capacity: int | None = None) -> str:
    """Make the existing fixed-size file at ``path`` (a famfs file) the pool file of ``pool``: write
    the marker into its last page. Returns "marked", or "present" when it already is that pool's file.

    Why: an agent formats only Gismo pool files, and famfs files are made by famfs's own tools, with a
    size fixed at creation. So the file is never created, truncated or resized here: its size must be
    ``capacity`` (the pool's data) plus one ``PAGE`` for the marker, and that last page must be all
    zero (a fresh file) or already this pool's marker. ``capacity``, when given, must match the size.
    Anything else raises PoolFileError naming the path and the rule, leaving the file untouched.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    except OSError as exc:
        raise PoolFileError(f"{path}: cannot open it ({exc.strerror}); it must exist (famfs creat)") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PoolFileError(f"{path}: not a regular file")
        data = st.st_size - MARKER_SIZE
        if data <= 0 or data % MARKER_SIZE:
            raise PoolFileError(
                f"{path}: {st.st_size} bytes; a pool file is its capacity (a positive multiple of "
                f"{MARKER_SIZE}) plus {MARKER_SIZE} bytes of marker"
            )
        if capacity is not None and file_size(capacity) != st.st_size:
            raise PoolFileError(
                f"{path}: {st.st_size} bytes, but a pool of {capacity} bytes needs a file of exactly "
                f"{file_size(capacity)} (capacity + {MARKER_SIZE}); Gismo never resizes it"
            )
        page = os.pread(fd, MARKER_SIZE, data)
        found = PoolFileMarker.unpack(page)
        if found is not None:
            if found != PoolFileMarker(pool, data):
                raise PoolFileError(f"{path}: already the Gismo pool file of pool {found.pool!r}")
            return "present"
        if page.count(0) != len(page):
            raise PoolFileError(f"{path}: its last {MARKER_SIZE} bytes hold data, refusing to write there")
        os.pwrite(fd, PoolFileMarker(pool, data).pack(), data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return "marked"
