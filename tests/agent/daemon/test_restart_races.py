"""An agent restart that lands inside a client's put or delete, forced at the exact interleaving.

test_crash.py kills the agent at whatever moment its writer is at; these tests stop the client (or
the agent) at one chosen instant instead, so each interleaving runs every time:

- the restart's recovery scans a slot while the client is sealing it (seqlock open): recovery never
  serves an interrupted seal, so ``put`` must not return that ref;
- a reservation of an older epoch is sealed by a client that already knows the new epoch;
- the agent dies with a DELETE unread in its socket: the object stays whole and is kept.
"""

from __future__ import annotations

import os
import signal
import struct

import numpy as np
import pytest
from storefix import Pool

import gismo
from gismo.daemon import protocol
from gismo.memory import layout
from gismo.testing import wait_until

BIG = 200_000  # above layout.SMALL_MAX: each put makes its own CREATE (no stash of reservations)


def test_put_whose_seal_a_restart_interrupts_raises_instead_of_returning_a_dead_ref(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = pool.agent(0)
    c = gismo.connect(a.socket)
    try:
        kept = c.put(np.arange(BIG // 8))
        recovered: list[dict[str, int]] = []

        def seal_cut_by_a_restart(buf: memoryview, pos: int, length: int) -> None:
            # layout.write_seal's stores, with the agent killed and restarted (its recovery scanning
            # this very slot) after the state store and before the seqlock closes.
            (seq,) = layout.SLOT_SEQ.unpack_from(buf, pos)
            seq = (seq | 1) + 1
            layout.SLOT_SEQ.pack_into(buf, pos, seq - 1)
            struct.pack_into("<I", buf, pos + layout.SLOT_STATE_OFF, layout.SEALED)
            a.kill9()
            a.start()
            recovered.append(a.stats()["recovered"])
            struct.pack_into("<Q", buf, pos + layout.SLOT_LENGTH_OFF, length)
            layout.SLOT_SEQ.pack_into(buf, pos, seq)

        monkeypatch.setattr(layout, "write_seal", seal_cut_by_a_restart)
        try:
            returned: gismo.Ref | None = c.put(np.full(BIG, 3, np.uint8))
        except gismo.AgentUnavailable as exc:
            assert "while the object was being sealed" in str(exc)
            returned = None
        monkeypatch.undo()
        # Recovery found the slot mid-seal: never served, reclaimed as an interrupted delete.
        assert recovered == [{"kept": 1, "dropped": 0, "orphaned": 0, "deleting": 1}]
        wait_until(lambda: a.stats()["pending_deletes"] == 0, "the interrupted seal's slot to be reclaimed")
        with gismo.connect(a.socket) as fresh:
            if returned is not None:
                live = "live" if fresh.contains(returned) else "dead on arrival"
                raise AssertionError(f"put returned {returned}, which is {live}")
            assert fresh.list() == [kept]
            assert np.array_equal(fresh.get(kept), np.arange(BIG // 8))
        assert a.stats()["objects"] == 1
    finally:
        c.close()


def test_a_reservation_is_never_sealed_after_its_epoch_ended(pool: Pool) -> None:
    """create() before a restart, seal() after the new agent freed and re-issued that reservation:
    refused even by a client that knows the new epoch (as one that reconnected does), and the slot's
    new holder is untouched."""
    a = pool.agent(0, orphan_grace_s=0.2)
    c = gismo.connect(a.socket)
    other: gismo.Client | None = None
    try:
        p = c.create(BIG)
        p.buffer[:] = 9
        a.kill9()
        a.start()
        wait_until(lambda: a.stats()["orphans"] == 0, "the old reservation's quarantine to end")
        other = gismo.connect(a.socket)
        q = other.create(BIG)
        assert (q.slot, q.offset) == (p.slot, p.offset)  # the freed slot and extent, handed out again
        c.epoch = a.stats()["epoch"]
        with pytest.raises(gismo.AgentUnavailable):
            p.seal()
        assert p.state == "aborted" and p.ref is None
        assert not other.contains(q.would_be_ref())  # q's slot was not sealed under it
        q.buffer[:] = 4
        ref = q.seal()
        assert np.array_equal(other.get(ref), np.full(BIG, 4, np.uint8))
    finally:
        if other is not None:
            other.close()
        c.close()


def test_a_delete_the_agent_never_read_leaves_the_object_whole_across_a_restart(pool: Pool) -> None:
    """The agent dies (stopped, then kill -9) with a DELETE in its socket: the delete did not happen.
    Its caller saw AgentUnavailable; the object stays readable and the restarted agent keeps it."""
    a = pool.agent(0)
    c = gismo.connect(a.socket)
    try:
        ref = c.put(np.full(BIG, 6, np.uint8))
        c._flush_notices()
        assert a.proc is not None
        with c._lock:  # the client's own socket, as delete() sends it; nothing else touches it meanwhile
            s = c._sock
            assert s is not None
            os.kill(a.proc.pid, signal.SIGSTOP)
            s.sendall(protocol.frame(protocol.DELETE, protocol.DELETE_REQ.pack(*ref[:3])))
            a.kill9()  # SIGKILL ends a stopped process too: the frame is never read
            try:
                reply = s.recv(1)
            except ConnectionResetError:  # what a peer that dies with unread data gives
                reply = b""
        assert reply == b""  # no answer: the agent died without reading the DELETE
    finally:
        c.close()
    a.start()
    assert a.stats()["recovered"] == {"kept": 1, "dropped": 0, "orphaned": 0, "deleting": 0}
    with gismo.connect(a.socket) as fresh:
        assert fresh.list() == [ref]
        assert np.array_equal(fresh.get(ref), np.full(BIG, 6, np.uint8))
        fresh.delete(ref)
        assert not fresh.contains(ref)
