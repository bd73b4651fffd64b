"""Crashes at the boundaries of a put and a delete, in the writer and in the agent, then recovery.

Each case arms one crash point (gismo/crashpoints.py: GISMO_TEST_CRASH_AT=<point>:<n>, the n-th
arrival) in the writer or in its agent, lets store_writer.py put and delete until the process kills
itself there, then restarts the agent (kill -9 first when it is still alive). Before and after the
restart, a reader on another node checks against the writer's side file that

- every ref the writer was given and never deleted resolves to exactly its own bytes and size;
- every ref it deleted (or was deleting) fails cleanly with StaleRef;
- the slot table holds no object the writer did not finish, except the one put that the
  ``put-sealed`` crash interrupted after sealing, which is then complete and exactly the intended one;
- recovery counts exactly what memory held: sealed slots kept, reserved ones orphaned (then freed),
  deleting ones reclaimed.
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from storefix import Node, Pool
from writer_record import Record, start_writer

import gismo
from gismo.testing import wait_until

# point -> arrival to die at. Deletes start once the 32 MiB region is ~3/4 full (~22 puts), so by
# the 30th put or the 5th delete some objects are deleted and some slots reused.
WRITER_POINTS = {"put-reserved": 30, "put-mid-copy": 30, "put-sealed": 30, "delete-sent": 5}
AGENT_POINTS = {"agent-create": 30, "agent-seal": 30, "agent-delete": 5}


def check_everything_is_as_recorded(
    b: Node, rec: Record, mem: dict[str, list[list[int]]], point: str
) -> None:
    """The reader's view of region 0 against the writer's record and the slot table."""
    call = b.call
    assert call("verify_tagged", rec.live) == []
    gone = sorted(rec.deleting)
    assert call("errors_of", [list(r) for r in gone]) == ["StaleRef"] * len(gone)
    sealed = {tuple(r) for r in mem["sealed"]}
    extra = sealed - rec.live_refs
    if point == "put-sealed":
        # Sealed in memory and announced, but put never returned: the object is kept, complete.
        assert rec.open_put and rec.last_putting is not None and len(extra) == 1
        seed, size = rec.last_putting
        assert call("verify_tagged", [[list(next(iter(extra))), seed, size]]) == []
    else:
        assert extra == set(), "an object the writer never finished is visible"
    assert rec.live_refs <= sealed


@pytest.mark.parametrize(
    ("point", "where"),
    [(p, "writer") for p in WRITER_POINTS] + [(p, "agent") for p in AGENT_POINTS],
)
def test_crash_point_then_recovery_keeps_exactly_what_was_put(pool: Pool, point: str, where: str) -> None:
    arm = f"{point}:{(WRITER_POINTS | AGENT_POINTS)[point]}"
    a = pool.agent(0, orphan_grace_s=0.5, **({"test_crash_at": arm} if where == "agent" else {}))
    pool.agent(1)
    b = pool.node(1)
    side = os.path.join(pool.dir, "writer.jsonl")
    writer = start_writer(a.socket, side, **({"GISMO_TEST_CRASH_AT": arm} if where == "writer" else {}))
    try:
        _out, err = writer.communicate(timeout=120)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    rec = Record.read(side)
    assert a.proc is not None
    if where == "writer":
        assert writer.returncode == -signal.SIGKILL, f"writer never reached {point}: {err}"
        # The agent saw the writer's connection drop: it has handled everything the writer sent.
        wait_until(
            lambda: (s := a.stats())["clients"] == 1 and s["reserved"] == 0, "the agent to settle the writer"
        )
        a.kill9()
    else:
        assert writer.returncode == 0 and rec.agent_gone, err
        assert a.proc.wait(30) == -signal.SIGKILL, f"agent never reached {point}:\n{a.log_text()}"
    if point in ("delete-sent", "agent-delete"):
        assert rec.open_delete is not None  # the crash interrupted exactly that delete
    if point in ("put-reserved", "put-mid-copy", "put-sealed", "agent-create"):
        assert rec.open_put
    assert len(rec.put) >= 20 and rec.deleting  # the crash came after deletes and slot reuse

    mem = a.slots()  # the agent is dead: this is what recovery will find
    assert len(mem["reserved"]) == (1 if point == "agent-create" else 0)
    check_everything_is_as_recorded(b, rec, mem, point)
    orphan = mem["reserved"][0] if mem["reserved"] else None
    if orphan is not None:
        assert b.call("get_error", orphan) == "StaleRef"  # reserved, never readable

    a.env.pop("GISMO_TEST_CRASH_AT", None)
    a.start()
    st = a.stats()
    assert st["epoch"] == 2
    assert st["recovered"] == {
        "kept": len(mem["sealed"]), "dropped": 0, "orphaned": len(mem["reserved"]),
        "deleting": len(mem["deleting"]),
    }  # fmt: skip
    check_everything_is_as_recorded(b, rec, mem, point)
    with gismo.connect(a.socket) as c:
        assert {tuple(r) for r in c.list()} == {tuple(r) for r in mem["sealed"]}
    wait_until(
        lambda: (s := a.stats())["orphans"] == 0 and s["pending_deletes"] == 0,
        "quarantine and reclaim to end",
    )
    if orphan is not None:
        assert b.call("get_error", orphan) == "StaleRef"
    after = a.slots()
    assert after["reserved"] == [] and after["deleting"] == []
    assert {tuple(r) for r in after["sealed"]} == {tuple(r) for r in mem["sealed"]}

    # The recovered agent serves new puts, readable elsewhere, and the old objects are untouched.
    ref = pool.node(0).call("put", np.arange(100_000))
    assert np.array_equal(b.call("get", ref), np.arange(100_000))
    assert b.call("verify_tagged", rec.live) == []
