"""The pool-file marker format (gismo.memory.poolfile): round trip, and every way a page fails to be one."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from gismo.memory.layout import MAGIC as REGION_MAGIC
from gismo.memory.poolfile import (
    MARKER_MAGIC,
    MARKER_SIZE,
    PoolFileError,
    PoolFileMarker,
    check_pool_file,
    file_size,
    read_marker,
)

MiB = 1 << 20


def test_round_trip_and_size() -> None:
    page = PoolFileMarker("pool0", MiB).pack()
    assert len(page) == MARKER_SIZE == 4096
    assert PoolFileMarker.unpack(page) == PoolFileMarker("pool0", MiB)
    assert file_size(MiB) == MiB + 4096


def test_magic_is_of_the_region_headers_family_but_distinct() -> None:
    assert MARKER_MAGIC[:6] == REGION_MAGIC[:6] == b"GISMO\x00"
    assert MARKER_MAGIC != REGION_MAGIC
    # A region header page is not a pool-file marker.
    assert PoolFileMarker.unpack(REGION_MAGIC + bytes(4088)) is None


@pytest.mark.parametrize("offset", [0, 8, 12, 16, 30, 88])
def test_any_flipped_byte_is_rejected(offset: int) -> None:
    page = bytearray(PoolFileMarker("pool0", MiB).pack())
    page[offset] ^= 0x01
    assert PoolFileMarker.unpack(bytes(page)) is None


@pytest.mark.parametrize(
    ("pool", "capacity", "why"),
    [("", MiB, "pool name"), ("x" * 65, MiB, "pool name"), ("a\0b", MiB, "pool name"), ("p", 0, "capacity"),
     ("p", 4097, "capacity")],
)  # fmt: skip
def test_bad_markers_are_not_written(pool: str, capacity: int, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        PoolFileMarker(pool, capacity).pack()


def test_read_marker_needs_the_marker_as_the_last_page(tmp_path: Path) -> None:
    f = tmp_path / "p"
    f.write_bytes(bytes(MiB) + PoolFileMarker("p", MiB).pack())
    assert read_marker(str(f)) == PoolFileMarker("p", MiB)
    f.write_bytes(bytes(MiB) + PoolFileMarker("p", MiB).pack() + b"x")
    assert read_marker(str(f)) is None
    f.write_bytes(b"short")
    assert read_marker(str(f)) is None
    with pytest.raises(PoolFileError, match=f"{tmp_path / 'missing'}: cannot read it"):
        check_pool_file(str(tmp_path / "missing"), "p")


def test_the_struct_is_what_the_docstring_says() -> None:
    page = PoolFileMarker("pool0", MiB).pack()
    magic, version, size, capacity = struct.unpack_from("<8sIIQ", page)
    assert (magic, version, size, capacity) == (b"GISMO\x00P1", 1, 4096, MiB)
