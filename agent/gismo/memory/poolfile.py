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

The magic shares its first six bytes with the region header's (``layout.MAGIC``, ``b"GISMO\\x00R1"``):
``b"GISMO\\x00P1"`` is "Gismo, pool file, version 1". The marker's fields are covered by a CRC32.

Pure standard library, importable on every Python that Ray supports (3.10+).
"""

from __future__ import annotations

import dataclasses
import os
import stat
import struct
import zlib
from typing import Final

from ..contract import PAGE

MARKER_MAGIC: Final = b"GISMO\x00P1"
MARKER_VERSION: Final = 1
#: The marker's size: one page at the end of the file.
MARKER_SIZE: Final = PAGE
#: magic, version, marker size, capacity, pool name (NUL padded); then crc32 of those bytes.
_MARKER = struct.Struct("<8sIIQ64s")
_CRC = struct.Struct("<I")
#: Pool names are Kubernetes object names (at most 63 characters of a DNS label here).
MAX_POOL_NAME: Final = 64


class PoolFileError(Exception):
    """The path is not a Gismo pool file of the expected pool (the message names the path)."""


@dataclasses.dataclass(frozen=True)
class PoolFileMarker:
    """What the marker of a pool file says."""

    pool: str
    capacity: int

    def pack(self) -> bytes:
        """The marker page: fields, CRC, zero padding to ``MARKER_SIZE``."""
        name = self.pool.encode()
        if not name or len(name) > MAX_POOL_NAME or b"\0" in name:
            raise ValueError(f"pool name {self.pool!r}: must be 1-{MAX_POOL_NAME} bytes without NUL")
        if self.capacity <= 0 or self.capacity % PAGE:
            raise ValueError(f"capacity {self.capacity}: must be a positive multiple of {PAGE}")
        body = _MARKER.pack(MARKER_MAGIC, MARKER_VERSION, MARKER_SIZE, self.capacity, name)
        raw = body + _CRC.pack(zlib.crc32(body))
        return raw + b"\0" * (MARKER_SIZE - len(raw))

    @classmethod
    def unpack(cls, page: bytes) -> PoolFileMarker | None:
        """The marker in ``page``, or None when the page is not a valid Gismo marker."""
        need = _MARKER.size + _CRC.size
        if len(page) < need:
            return None
        body = page[: _MARKER.size]
        (crc,) = _CRC.unpack_from(page, _MARKER.size)
        magic, version, size, capacity, name = _MARKER.unpack(body)
        if magic != MARKER_MAGIC or version != MARKER_VERSION or size != MARKER_SIZE:
            return None
        if zlib.crc32(body) != crc:
            return None
        try:
            pool = name.rstrip(b"\0").decode()
        except UnicodeDecodeError:
            return None
        return cls(pool, capacity)


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
