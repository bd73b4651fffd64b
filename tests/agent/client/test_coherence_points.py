"""Publish/observe points of the protocol that the ordinary cross-node tests do not reach.

Each runs under both memory models (storefix.both_memories); under the non-coherent model each
fails when the flush or invalidate it names (gismo/memory/coherence.py lists them) is missing.
Interleavings are made deterministic by hooking the reader's own coherence calls, not by timing.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from storefix import MiB, Pool, both_memories

import gismo
from gismo.daemon import protocol
from gismo.memory import layout
from gismo.memory.serialize import encode, write
from gismo.testing import wait_until

pytestmark = both_memories
BIG = 1 * MiB  # above SMALL_MAX: every put is a CREATE of its own, so slots are not from a stash


def _two(pool: Pool) -> tuple[gismo.Client, gismo.Client]:
    pool.agent(0)
    pool.agent(1)
    return gismo.connect(pool.agents[0].socket), gismo.connect(pool.agents[1].socket)


def _after(c: gismo.Client, method: str, action: Callable[[], None], call: int = 1) -> None:
    """Run ``action`` once, right after the ``call``-th call of ``c.<method>`` returns.

    Hooks a step of the read protocol itself, never a coherence call, so that removing a flush or an
    invalidate (scripts/check_coherence_sites.py) cannot disarm the hook instead of failing the test.
    """
    original = getattr(c, method)
    calls = []

    def hooked(*args: Any) -> Any:
        out = original(*args)
        calls.append(True)
        if len(calls) == call:
            action()
        return out

    setattr(c, method, hooked)


def test_seqlock_recheck_after_the_pin_sees_a_delete_from_another_node(pool: Pool) -> None:
    """The owner deletes between the reader's first slot read and its pin: the re-check (after an
    invalidate of the slot) must see it, so the reader refuses instead of reading a dead object."""
    c0, c1 = _two(pool)
    try:
        ref = c0.put(np.full(BIG, 7, np.uint8))
        _after(c1, "_pin", lambda: c0.delete(ref))  # between the reader's pin and its re-check
        with pytest.raises(gismo.StaleRef):
            c1.get(ref)
        assert c1.pins == 0
    finally:
        c0.close()
        c1.close()


def test_checked_copy_sees_a_delete_during_the_copy(pool: Pool) -> None:
    """Without a pin entry the reader copies; a delete that lands during the copy must be seen by the
    seq re-check (after an invalidate of the slot)."""
    pool.agent(0)
    pool.agent(1, pin_entries=64)  # one lease of 64 pins for the reader's region
    c0 = gismo.connect(pool.agents[0].socket)
    c1 = gismo.connect(pool.agents[1].socket)
    try:
        refs = [c0.put(np.full(100, i, np.int64)) for i in range(64)]
        held = [c1.get(r) for r in refs]  # every pin entry of the reader in use
        last = c0.put(np.full(BIG, 9, np.uint8))
        copy = c1.get(last)  # no pin left: a copy of the other node's object
        assert np.array_equal(copy, np.full(BIG, 9, np.uint8)) and copy.base is not None
        assert not np.shares_memory(copy, np.frombuffer(c1.map.ro, np.uint8))
        doomed = c0.put(np.full(BIG, 3, np.uint8))
        # get checks the slot, finds no pin entry and copies: the copy checks the slot again (2nd call)
        _after(c1, "_check", lambda: c0.delete(doomed), call=2)
        with pytest.raises(gismo.StaleRef):
            c1.get(doomed)
        del held
    finally:
        c0.close()
        c1.close()


def test_seal_by_the_agent_is_published(pool: Pool) -> None:
    """A client that writes and flushes its data but leaves the seal to the agent (SEAL request on a
    RESERVED slot): the agent's seal must reach other nodes."""
    c0, c1 = _two(pool)
    try:
        enc = encode(np.full(BIG, 5, np.uint8))
        slot, gen, off, _epoch = c0._reserve_current(enc.size)
        write(enc, c0._rw, off)
        c0.map.flush(off, enc.size)
        c0._call(protocol.SEAL, protocol.SLOT_REQ.pack(slot, gen))
        got = c1.get(gismo.Ref(0, slot, gen, off, enc.size))
        assert np.array_equal(got, np.full(BIG, 5, np.uint8))
    finally:
        c0.close()
        c1.close()


def test_lease_of_a_dead_reader_is_cleared_for_every_node(pool: Pool) -> None:
    """A reader on node B dies holding a view of A's object: B's agent clears its lease, and A's
    reclaim must see that (the pins it scans are in B's region)."""
    pool.agent(0)
    pool.agent(1)
    c0 = gismo.connect(pool.agents[0].socket)
    b = pool.node(1)
    pool.nodes.remove(b)  # killed below, not closed
    try:
        ref = c0.put(np.full(BIG, 1, np.uint8))
        b.call("hold", "x", ref)
        c0.delete(ref)
        assert pool.agents[0].stats()["pending_deletes"] == 1
        b.proc.kill()
        b.proc.join(10)
        b.conn.close()
        wait_until(lambda: pool.agents[0].stats()["pending_deletes"] == 0, "A to reclaim after B died")
    finally:
        c0.close()


def test_recovery_publishes_an_interrupted_delete(pool: Pool) -> None:
    """Agent A dies in the middle of a delete (the slot's seq odd, DELETING stored but never
    flushed). Its restart turns that into a finished delete, which every node must then see."""
    pool.agent(0)
    pool.agent(1)
    c0 = gismo.connect(pool.agents[0].socket)
    c1 = gismo.connect(pool.agents[1].socket)
    try:
        ref = c0.put(np.full(BIG, 2, np.uint8))
        assert np.array_equal(c1.get(ref), np.full(BIG, 2, np.uint8))
        c0.close()
        pool.agents[0].kill9()
        # Play A's CPU: the half-done delete sits in A's memory (its cache under the model).
        path, start = pool.node_memory(0)
        pos = start + layout.Geometry.compute(0, pool.region_size).slot_pos(ref.slot)
        with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
            seq = layout.read_seq(mm, pos)
            layout.SLOT_SEQ.pack_into(mm, pos, seq + 1)
            mm[pos + layout.SLOT_STATE_OFF : pos + layout.SLOT_STATE_OFF + 4] = layout.DELETING.to_bytes(
                4, "little"
            )
        pool.agents[0].start()
        assert pool.agents[0].stats()["recovered"]["deleting"] == 1
        with pytest.raises(gismo.StaleRef):
            c1.get(ref)
    finally:
        c1.close()
