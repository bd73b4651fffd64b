"""kill -9 of an agent in the middle of puts; restart; recovery."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from storefix import Pool, wait_for

import gismo
from gismo.daemon import protocol
from gismo.memory import layout

# The helper scripts live one level up, in tests/agent.
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_kill9_mid_puts_then_restart_recovers(pool: Pool) -> None:
    a = pool.agent(0, orphan_grace_s=0.5)
    pool.agent(1)
    b = pool.node(1)

    # A reservation that is half written and never sealed, made deterministically.
    c = gismo.connect(a.socket)
    rep = c._call(protocol.CREATE, protocol.CREATE_REQ.pack(1 << 20))
    slot, gen, off = protocol.CREATE_REP.unpack(rep)
    c._rw[off : off + 4096] = b"\x55" * 4096
    half = gismo.Ref(0, slot, gen, off, 1 << 20)

    writer = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "store_writer.py"), a.socket, "100000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert writer.stdout is not None
        sealed: dict[tuple[int, ...], int] = {}
        deleted: set[tuple[int, ...]] = set()
        while len(sealed) < 40:
            line = writer.stdout.readline()
            assert line, writer.stderr.read() if writer.stderr else "writer died"
            msg = json.loads(line)
            if msg[0] == "deleted":
                deleted.add(tuple(msg[1]))
            else:
                sealed[tuple(msg[0])] = msg[1]
        a.kill9()  # while the writer is putting
        out, err = writer.communicate(timeout=60)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    for line in out.splitlines():
        msg = json.loads(line)
        if msg[0] == "deleted":
            deleted.add(tuple(msg[1]))
        elif msg[0] != "agent-gone":
            sealed[tuple(msg[0])] = msg[1]
    assert json.loads(out.splitlines()[-1]) == ["agent-gone"], err
    live = [list(r) for r in sealed if r not in deleted]
    assert live

    # The agent is dead: B keeps reading every sealed object, and never the half-written one.
    assert b.call("verify_tagged", live) == []
    assert b.call("get_error", half) == "StaleRef"
    c.close()

    # Restart: recovery keeps sealed objects, quarantines then frees half-written ones.
    a.start()
    st = a.stats()
    assert st["epoch"] == 2
    assert st["recovered"]["kept"] >= len(live)
    assert st["recovered"]["orphaned"] >= 1
    assert b.call("verify_tagged", live) == []
    assert b.call("get_error", half) == "StaleRef"
    listed = [list(r) for r in gismo.connect(a.socket).list()]
    assert b.call("verify_tagged", listed) == []  # nothing listed is half written
    assert {tuple(r) for r in live} <= {tuple(r) for r in listed}
    wait_for(lambda: a.stats()["orphans"] == 0, what="orphan quarantine to end")
    assert b.call("get_error", half) == "StaleRef"

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
    wait_for(lambda: "waiting for 1 pins" in a.log_text(), what="new owner to wait for the reader")
    assert np.array_equal(np.frombuffer(b.call("held_bytes", "old"), np.int64), np.arange(5000))
    b.call("drop", "old")
    wait_for(a._up, 30, "new owner to format and serve")
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
    assert a.stop() == 0  # graceful: the stash stays reserved in memory for the next agent to judge
    a.start()
    assert a.stats()["recovered"]["orphaned"] >= stash
    wait_for(lambda: a.stats()["orphans"] == 0, what="quarantine of the old stash to end")
    new = gismo.connect(a.socket)
    try:
        refs = [new.put(np.full(64, i)) for i in range(200)]  # may reuse the old stash's space
        with pytest.raises(gismo.AgentUnavailable):
            old.put(b"b" * 500)  # the old client notices the new epoch before writing anything
        assert bytes(new.get(first)) == b"a" * 500
        for i, r in enumerate(refs):
            assert np.array_equal(new.get(r), np.full(64, i))
    finally:
        new.close()
        old.close()
