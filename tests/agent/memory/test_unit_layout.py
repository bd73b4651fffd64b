"""Unit tests of the region layout: geometry, header validation, slot seqlock, pin entries."""

from __future__ import annotations

import struct

import pytest

from gismo.errors import CorruptRegion
from gismo.memory import layout
from gismo.memory.layout import Geometry
from gismo.ref import Ref

MiB = 1 << 20


@pytest.mark.parametrize("size", [1 * MiB, 32 * MiB, 1 << 30, (1 << 30) + 4096 * 7])
def test_geometry_is_aligned_and_disjoint(size: int) -> None:
    g = Geometry.compute(3, size)
    assert g.slot_off == layout.HEADER_SIZE
    assert g.slot_off + g.slots * layout.SLOT_SIZE <= g.pin_off
    assert g.pin_off + g.pins * layout.PIN_SIZE <= g.counter_off
    assert g.counter_off + g.leases * layout.COUNTER_SIZE <= g.data_off
    assert g.data_off % layout.PAGE == 0 and g.pin_off % layout.PAGE == 0
    assert g.data_off + g.data_size == size
    assert g.pins % layout.LEASE == 0 and g.pins >= 4096


def test_too_small_region_is_refused() -> None:
    with pytest.raises(CorruptRegion):
        Geometry.compute(0, 64 * 1024)


def test_header_round_trip_and_validation() -> None:
    g = Geometry.compute(2, 8 * MiB, format_id=12345, owner="pod-uid")
    buf = bytearray(g.data_off)
    h = g.pack_header()
    buf[: len(h)] = h
    assert Geometry.unpack_header(buf, 0, 2, 8 * MiB) == g
    with pytest.raises(CorruptRegion, match="expected"):
        Geometry.unpack_header(buf, 0, 1, 8 * MiB)  # another region's header
    with pytest.raises(CorruptRegion, match="expected"):
        Geometry.unpack_header(buf, 0, 2, 16 * MiB)
    bad = bytearray(buf)
    bad[20] ^= 1
    with pytest.raises(CorruptRegion, match="checksum"):
        Geometry.unpack_header(bad, 0, 2, 8 * MiB)
    with pytest.raises(CorruptRegion, match="no Gismo header"):
        Geometry.unpack_header(bytearray(4096), 0, 2, 8 * MiB)
    old = bytearray(buf)
    struct.pack_into("<I", old, 8, layout.VERSION + 1)
    with pytest.raises(CorruptRegion, match="version"):
        Geometry.unpack_header(old, 0, 2, 8 * MiB)
    # Run-time fields sit outside the checksum.
    layout.write_run(buf, 0, 7, 99, 1)
    assert layout.read_run(buf, 0) == (7, 99, 1)
    assert Geometry.unpack_header(buf, 0, 2, 8 * MiB) == g


def test_slot_seqlock() -> None:
    buf = bytearray(layout.SLOT_SIZE)
    layout.write_slot(buf, 0, 5, layout.RESERVED, 0, 8192, 100, 128)
    s = layout.read_slot_stable(buf, 0)
    assert s is not None and s.seq == 2 and (s.generation, s.state, s.offset, s.length) == (5, 1, 8192, 100)
    layout.write_state(buf, 0, layout.SEALED)
    s = layout.read_slot_stable(buf, 0)
    assert s is not None and s.seq == 4 and s.state == layout.SEALED and s.generation == 5
    # A writer that died mid-update leaves seq odd: readers give up instead of trusting the fields.
    layout.SLOT_SEQ.pack_into(buf, 0, 5)
    assert layout.read_slot_stable(buf, 0, tries=3) is None
    layout.write_slot(buf, 0, 6, layout.FREE, 0, 0, 0, 0)  # the next writer closes it off
    s = layout.read_slot_stable(buf, 0)
    assert s is not None and s.seq % 2 == 0 and s.generation == 6


def test_pin_entry_and_ref_size() -> None:
    import pickle

    import numpy as np

    e = layout.pack_pin(0, 7, 2**63 + 5)
    rec = np.frombuffer(e, layout.pin_dtype())[0]
    assert (rec["region"], rec["slot"], rec["generation"]) == (1, 7, 2**63 + 5)  # 0 means empty
    assert bytes(layout.PIN_SIZE) == layout.EMPTY_PIN
    big = Ref(2**31, 2**31, 2**64 - 1, 2**62, 2**62)
    assert len(pickle.dumps(big)) < 128
    assert pickle.loads(pickle.dumps(big)) == big
