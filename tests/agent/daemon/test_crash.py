"""kill -9 of an agent in the middle of puts; restart; recovery."""

from __future__ import annotations

import os

import numpy as np
import pytest
from storefix import Node, Pool, both_memories
from writer_record import Key, Record, start_writer

import gismo
from gismo.daemon import protocol
from gismo.memory import layout
from gismo.testing import wait_until


def check_cut_off_delete(b: Node, rec: Record) -> set[Key]:
    """The delete in flight at the kill, if any: StaleRef, or still exactly the object put. Returns
    its ref when it is still there (a sealed object the writer no longer counts as live)."""
    r = rec.open_delete
    if r is None:
        return set()
    if b.call("get_error", list(r)) == "StaleRef":
        return set()
    seed, size = rec.put[r]
    assert b.call("verify_tagged", [[list(r), seed, size]]) == []
    return {r}


@both_memories
def test_kill9_mid_puts_then_restart_recovers(pool: Pool) -> None:
    """kill -9 of the agent at whatever moment the writer is at (test_crash_points.py covers each
    boundary deterministically); every check is exact against the writer's side file and memory."""
    a = pool.agent(0, orphan_grace_s=0.5)
    pool.agent(1)
    b = pool.node(1)

    # A reservation that is half written and never sealed, made deterministically.
    c = gismo.connect(a.socket)
    rep = c._call(protocol.CREATE, protocol.CREATE_REQ.pack(1 << 20))
    slot, gen, off = protocol.CREATE_REP.unpack(rep)
    c._rw[off : off + 4096] = b"\x55" * 4096
    half = gismo.Ref(0, slot, gen, off, 1 << 20)

    side = os.path.join(pool.dir, "writer.jsonl")
    writer = start_writer(a.socket, side)
    try:

        def forty_puts() -> bool:
            assert writer.poll() is None, writer.stderr.read() if writer.stderr else "writer died"
            return len(Record.read(side).put) >= 40

        wait_until(forty_puts, "the writer to put 40 objects")
        a.kill9()  # while the writer is putting
        _out, err = writer.communicate(timeout=60)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    rec = Record.read(side)
    assert writer.returncode == 0 and rec.agent_gone, err
    assert rec.live and rec.deleting

    # The agent is dead: B keeps reading every sealed object exactly as put, never a deleted one,
    # and never the half-written one. A delete the kill cut off (its DELETE maybe never read:
    # test_restart_races.py forces that) either happened or left the object whole.
    mem = a.slots()
    assert b.call("verify_tagged", rec.live) == []
    gone = sorted(rec.deleting - {rec.open_delete})
    assert b.call("errors_of", [list(r) for r in gone]) == ["StaleRef"] * len(gone)
    cut_off = check_cut_off_delete(b, rec)
    assert b.call("get_error", half) == "StaleRef"
    assert list(half)[:3] in [r[:3] for r in mem["reserved"]]
    sealed = {tuple(r) for r in mem["sealed"]}
    assert rec.live_refs <= sealed
    extra = sealed - rec.live_refs - cut_off
    if extra:  # killed after the writer sealed its put in memory, before put returned
        assert rec.open_put and rec.last_putting is not None and len(extra) == 1
        seed, size = rec.last_putting
        assert b.call("verify_tagged", [[list(next(iter(extra))), seed, size]]) == []
    c.close()

    # Restart: recovery keeps exactly the sealed objects and quarantines exactly the reserved ones
    # (the half-written one plus the writer's put in flight, if the kill caught one), then frees them.
    a.start()
    st = a.stats()
    assert st["epoch"] == 2
    assert st["recovered"] == {
        "kept": len(mem["sealed"]), "dropped": 0, "orphaned": len(mem["reserved"]),
        "deleting": len(mem["deleting"]),
    }  # fmt: skip
    assert b.call("verify_tagged", rec.live) == []
    assert check_cut_off_delete(b, rec) == cut_off
    assert b.call("get_error", half) == "StaleRef"
    listed = {tuple(r) for r in gismo.connect(a.socket).list()}
    assert listed == sealed  # nothing listed is half written
    wait_until(lambda: a.stats()["orphans"] == 0, "orphan quarantine to end")
    assert b.call("get_error", half) == "StaleRef"
    assert a.slots()["reserved"] == []

    # The restarted agent serves new puts, readable elsewhere.
    a_node = pool.node(0)
    ref = a_node.call("put", np.arange(1000))
    assert np.array_equal(b.call("get", ref), np.arange(1000))


def test_sigterm_is_clean_and_restart_keeps_objects(pool: Pool) -> None:
    a = pool.agent(0)
    c = gismo.connect(a.socket)
    refs = [c.put(np.full(1000, i)) for i in range(10)]
    c.delete(refs[0])
    c.close()
    assert a.stop() == 0
    assert not os.path.exists(a.socket)
    with open(pool.path, "rb") as f:
        epoch, _pid, clean = layout.read_run(f.read(4096), 0)
    assert (epoch, clean) == (1, 1)
    a.start()
    st = a.stats()
    assert st["objects"] == 9 and st["recovered"]["kept"] == 9
    c = gismo.connect(a.socket)
    try:
        assert not c.contains(refs[0])
        for i, r in enumerate(refs[1:], 1):
            assert np.array_equal(c.get(r), np.full(1000, i))
    finally:
        c.close()


@both_memories
def test_new_owner_waits_for_readers_then_reformats(pool: Pool) -> None:
    a = pool.agent(0, owner="pod-1")
    pool.agent(1)
    b = pool.node(1)
    c = gismo.connect(a.socket)
    ref = c.put(np.arange(5000))
    c.close()
    b.call("hold", "old", ref)  # a reader elsewhere still holds a view of the old pod's object
    a.stop()
    a.env["GISMO_OWNER"] = "pod-2"  # the region is handed to a new pod
    a.launch()
    wait_until(lambda: "waiting for 1 pins" in a.log_text(), "new owner to wait for the reader")
    assert np.array_equal(np.frombuffer(b.call("held_bytes", "old"), np.int64), np.arange(5000))
    b.call("drop", "old")
    wait_until(a._up, "new owner to format and serve")
    assert a.stats()["recovered"] == {"formatted": 1}
    c = gismo.connect(a.socket)
    try:
        assert not c.contains(ref)
        assert b.call("get_error", ref) == "StaleRef"
    finally:
        c.close()


def test_client_outliving_its_agent_never_writes_a_void_reservation(pool: Pool) -> None:
    a = pool.agent(0, orphan_grace_s=0.3)
    old = gismo.connect(a.socket)
    first = old.put(b"a" * 500)  # fills a small-object stash with reservations
    stash = sum(len(v) for v in old._stash.values())
    assert stash > 0
    # A client that has not reconnected yet (its watcher would within RECONNECT_PAUSE_S): held back.
    reconnect = old._reconnect
    old._reconnect = lambda: False  # type: ignore[method-assign]
    assert a.stop() == 0  # graceful: the stash stays reserved in memory for the next agent to judge
    a.start()
    assert a.stats()["recovered"]["orphaned"] >= stash
    wait_until(lambda: a.stats()["orphans"] == 0, "quarantine of the old stash to end")
    new = gismo.connect(a.socket)
    try:
        refs = [new.put(np.full(64, i)) for i in range(200)]  # may reuse the old stash's space
        with pytest.raises(gismo.AgentUnavailable):
            old.put(b"b" * 500)  # the old client notices the new epoch before writing anything
        assert bytes(new.get(first)) == b"a" * 500
        for i, r in enumerate(refs):
            assert np.array_equal(new.get(r), np.full(64, i))
        # Once reconnected, the old client puts again, with reservations of the new agent only.
        old._reconnect = reconnect  # type: ignore[method-assign]
        wait_until(lambda: old.epoch == new.epoch, "the old client to reconnect")
        again = old.put(b"b" * 500)
        assert bytes(new.get(again)) == b"b" * 500 and bytes(new.get(first)) == b"a" * 500
        for i, r in enumerate(refs):
            assert np.array_equal(new.get(r), np.full(64, i))
    finally:
        new.close()
        old.close()
