"""Several OS processes acting as nodes, each with its own agent and region, mapping one file."""

from __future__ import annotations

import mmap
import os
import pickle

import numpy as np
import pyarrow as pa
import pytest
from store_node import pattern
from storefix import MiB, Pool, both_memories

import gismo
from gismo.memory import layout
from gismo.memory.poolfile import file_size
from gismo.memory.serialize import _HDR
from gismo.testing import wait_until

pytestmark = both_memories


@pytest.fixture
def three(pool: Pool) -> tuple[Pool, list]:
    for r in range(3):
        pool.agent(r)
    return pool, [pool.node(r) for r in range(3)]


def test_put_in_a_get_in_b_and_c_is_a_view_of_the_mapping(three: tuple[Pool, list]) -> None:
    pool, (a, b, c) = three
    n = 4 * MiB
    ref = a.call("put_pattern", n, 7)
    assert isinstance(ref, gismo.Ref) and ref.region == 0
    assert len(pickle.dumps(ref)) < 128
    for node in (b, c):
        assert node.call("check_pattern", ref, n, 7)
        rep = node.call("view_report", ref)
        assert rep["shares_memory"] and rep["in_mapping"], rep
        assert not rep["writeable"] and not rep["owndata"], rep
    # Hold the view in B, then change the bytes through a raw mapping of B's memory: B sees the
    # change, so what get returned is that memory itself, not a copy.
    b.call("hold", "x", ref)
    rep = b.call("view_report", ref)
    path, start = pool.node_memory(1)
    with open(path, "r+b") as f:
        mm = mmap.mmap(f.fileno(), 0)
        try:
            pos = start + rep["slice_offset"]
            assert mm[pos : pos + 4] == bytes(pattern(4, 7))
            mm[pos : pos + 4] = b"\xfe\xfd\xfc\xfb"
            assert b.call("held_bytes", "x", 0, 4) == b"\xfe\xfd\xfc\xfb"
            mm[pos : pos + 4] = bytes(pattern(4, 7))
        finally:
            mm.close()
    b.call("drop", "x")


def test_kinds_round_trip_across_nodes(three: tuple[Pool, list]) -> None:
    _pool, (a, b, _c) = three
    cases = [
        b"bytes " * 1000,
        bytearray(b"\x00\x01" * 10),
        {"nested": [1, 2.5, "x", None], "arr": np.arange(10_000, dtype=np.int32)},
        np.zeros((3, 4, 5), dtype=np.complex64) + 1j,
        np.array(["2024-01-01", "2025-06-30"], dtype="datetime64[ns]"),
        np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        np.arange(10)[::2],
        np.zeros(0, dtype=np.float32),
        np.float64(3.5),
        np.array(2.5),
        "a string",
        12345678901234567890,
    ]
    for obj in cases:
        ref = a.call("put", obj)
        got = b.call("get", ref)
        if isinstance(obj, np.ndarray):
            assert got.dtype == obj.dtype and np.array_equal(got, obj)
        elif isinstance(obj, dict):
            assert got["nested"] == obj["nested"] and np.array_equal(got["arr"], obj["arr"])
        elif isinstance(obj, (bytes, bytearray)):
            assert got == bytes(obj)
        else:
            assert got == obj


def test_arrow_table_is_read_in_place(pool: Pool) -> None:
    pool.agent(0)
    pool.agent(1)
    c0 = gismo.connect(pool.agents[0].socket)
    c1 = gismo.connect(pool.agents[1].socket)
    try:
        t = pa.table({"x": np.arange(200_000), "y": np.linspace(0, 1, 200_000)})
        ref = c0.put(t)
        got = c1.get(ref)
        assert got.equals(t)
        buf = got.column("x").chunks[0].buffers()[1]
        lo, hi = c1.map.address, c1.map.address + c1.map.slice_size
        assert lo <= buf.address and buf.address + buf.size <= hi  # Arrow buffer points into the mapping
        del got, buf
    finally:
        c0.close()
        c1.close()


def test_delete_waits_for_pins_in_other_regions(three: tuple[Pool, list]) -> None:
    pool, (a, b, _c) = three
    n = 1 * MiB
    ref = a.call("put_pattern", n, 3)
    b.call("hold", "x", ref)
    a.call("delete", ref)
    assert not a.call("contains", ref)
    assert b.call("get_error", ref) == "StaleRef"  # deleted objects are gone for new readers
    # Fill the region with same-sized objects while B still holds its view: none may land on X.
    agent_a = pool.agents[0]
    new = []
    for i in range(12):
        r = a.call("put_pattern", n, 100 + i)
        new.append(r)
        assert r.offset + r.size <= ref.offset or r.offset >= ref.offset + ref.size
    assert agent_a.stats()["pending_deletes"] == 1
    assert b.call("held_bytes", "x", 0, 64) == bytes(pattern(64, 3))  # B's view still intact
    b.call("drop", "x")
    assert b.call("pins") == 0
    wait_until(lambda: agent_a.stats()["pending_deletes"] == 0, "reclaim after unpin")
    for r in new:
        a.call("delete", r)
    wait_until(lambda: agent_a.stats()["pending_deletes"] == 0, "reclaim")
    again = a.call("put_pattern", n, 9)
    assert again.offset == ref.offset  # the space is reused once no pin names it


def test_stale_ref_after_delete_and_reuse(three: tuple[Pool, list]) -> None:
    pool, (a, b, c) = three
    ref = a.call("put_pattern", 1 * MiB, 1)  # large: a CREATE of its own, not from a small-object stash
    a.call("delete", ref)
    wait_until(lambda: pool.agents[0].stats()["pending_deletes"] == 0, "reclaim")
    reused = a.call("put_pattern", 1 * MiB, 2)
    assert (reused.slot, reused.offset) == (ref.slot, ref.offset)  # same slot, same bytes
    assert reused.generation != ref.generation
    for node in (b, c):
        assert node.call("get_error", ref) == "StaleRef"
        assert not node.call("contains", ref)
        assert node.call("check_pattern", reused, 1 * MiB, 2)
    with pytest.raises(AssertionError, match="StaleRef"):
        a.call("delete", ref)
    # Small objects come from a per-client stash of reservations; a reused slot is just as stale.
    small = a.call("put_pattern", 100, 3)
    a.call("delete", small)
    wait_until(lambda: pool.agents[0].stats()["pending_deletes"] == 0, "reclaim")
    for i in range(200):
        again = a.call("put_pattern", 100, 4 + i)
        if again.slot == small.slot:
            break
    assert again.slot == small.slot and again.generation != small.generation
    assert b.call("get_error", small) == "StaleRef"
    assert b.call("check_pattern", again, 100, 4 + i)


def test_forged_refs_fail_cleanly(three: tuple[Pool, list]) -> None:
    pool, (a, b, _c) = three
    ref = a.call("put_pattern", 10_000, 5)
    g = layout.Geometry.compute(0, pool.region_size)
    forged = [
        ref._replace(offset=pool.region_size - 64, size=4096),  # runs past the region
        ref._replace(offset=10**15),
        ref._replace(offset=0),  # the header, not data
        ref._replace(offset=g.pin_off, size=64),  # the pin table
        ref._replace(size=-1),
        ref._replace(slot=10**6),
        ref._replace(slot=-1),
        ref._replace(region=99),
        ref._replace(region=-1),
        ref._replace(generation=ref.generation + 1),
        ref._replace(offset=ref.offset + 64),  # right slot, wrong place
        ref._replace(size=ref.size + 1),
        ("not", "a", "ref", 1, 2),
        (1, 2),
    ]
    for f in forged:
        err = b.call("get_error", f)
        assert err in ("ObjectNotFound", "StaleRef"), (f, err)
    assert b.call("get_error", ref._replace(region=3)) == "CorruptRegion"  # no agent ever formatted it
    assert b.call("check_pattern", ref, 10_000, 5)


def test_damaged_header_and_object_are_reported_not_crashing(three: tuple[Pool, list]) -> None:
    pool, (a, b, c) = three
    ref = a.call("put_pattern", 10_000, 5)
    ref1 = b.call("put_pattern", 100, 1)
    with open(pool.path, "r+b") as f:
        mm = mmap.mmap(f.fileno(), 0)
        try:
            # Region 1's header: flip one byte of the geometry; a new reader must refuse the region.
            base1 = pool.slice_offset + pool.region_size
            mm[base1 + 40] ^= 0xFF
            assert c.call("get_error", ref1) == "CorruptRegion"
            mm[base1 + 40] ^= 0xFF
            # Region 0's object: damage its header; readers raise CorruptRegion, no crash.
            pos = pool.slice_offset + ref.offset
            saved = mm[pos : pos + _HDR.size]
            mm[pos : pos + 4] = b"XXXX"
            assert c.call("get_error", ref) == "CorruptRegion"
            mm[pos : pos + _HDR.size] = saved
        finally:
            mm.close()
    assert c.call("check_pattern", ref, 10_000, 5)
    assert c.call("pins") == 0  # failed reads left no pin behind


def test_each_region_written_only_by_its_owner(three: tuple[Pool, list]) -> None:
    """B's reads of A's objects never change a byte of A's region (pins go to B's own table)."""
    pool, (a, b, _c) = three
    refs = [a.call("put_pattern", 50_000, i) for i in range(5)]
    with open(pool.path, "rb") as f:
        f.seek(pool.slice_offset)
        before = f.read(pool.region_size)
    for r in refs:
        b.call("hold", f"h{r.slot}", r)
    assert b.call("pins") == 5
    with open(pool.path, "rb") as f:
        f.seek(pool.slice_offset)
        during = f.read(pool.region_size)
    assert before == during
    for r in refs:
        b.call("drop", f"h{r.slot}")
    assert b.call("pins") == 0
    # Nobody grew the pool file: its data plus the pool-file marker page, as created.
    assert os.path.getsize(pool.path) == file_size(pool.slice_offset + pool.slice_size)


def test_workers_of_one_node_share_its_agent_and_region(pool: Pool) -> None:
    """Several Ray worker processes on one node: one agent, one region, separate pins and stashes."""
    pool.agent(0)
    pool.agent(1)
    w1, w2, w3 = pool.node(0), pool.node(0), pool.node(1)
    refs = [w1.call("put_pattern", 5000, i) for i in range(5)] + [w2.call("put_pattern", 5000, 10)]
    assert {r.region for r in refs} == {0}
    assert len({(r.slot, r.offset) for r in refs}) == 6
    w2.call("hold", "x", refs[0])
    w1.call("delete", refs[0])  # any worker of the owning node may delete
    assert w3.call("get_error", refs[0]) == "StaleRef"
    assert w2.call("held_bytes", "x", 0, 16) == bytes(pattern(16, 0))
    w2.call("delete", refs[5])
    with pytest.raises(AssertionError, match="only its own pod can delete"):
        w3.call("delete", refs[1])  # another node's worker cannot
    assert w3.call("check_pattern", refs[1], 5000, 1)
    assert pool.agents[0].stats()["clients"] == 3
    # refs[5] is reclaimed after the grace period; refs[0] stays pending while w2 pins it.
    wait_until(lambda: pool.agents[0].stats()["pending_deletes"] == 1, "refs[5] reclaimed")
    assert w2.call("held_bytes", "x", 0, 16) == bytes(pattern(16, 0))
    w2.call("drop", "x")
    wait_until(lambda: pool.agents[0].stats()["pending_deletes"] == 0, "reclaim after unpin")
