"""Pin leases are tied to live holders: after an agent restart, the leases of readers that are gone
(pid + process start time recorded in the region's lease record) are freed, so a reader killed at any
moment holds space back only until its agent is up again (bound: README, security)."""

from __future__ import annotations

import numpy as np
from storefix import Pool

import gismo
from gismo.daemon import holders
from gismo.testing import wait_until


def test_a_reader_killed_while_its_agent_is_down_frees_its_space_at_restart(pool: Pool) -> None:
    a = pool.agent(0)
    w = gismo.connect(a.socket)
    doomed, kept = w.put(np.arange(1 << 18)), w.put(np.arange(1 << 17))
    reader, survivor = pool.node(0), pool.node(0)
    reader.call("hold", "v", doomed)
    survivor.call("hold", "v", kept)
    w.delete(doomed)
    w.delete(kept)
    assert wait_until(lambda: a.stats()["pending_deletes"] == 2, "both deletes pinned")
    free = a.stats()["leases_free"]
    w.close()
    # The writer's lease goes with its connection (not left for the next agent to weigh).
    assert wait_until(lambda: a.stats()["leases_free"] == free + 1, "the writer's lease freed")
    a.kill9()  # the agent is down ...
    reader.proc.kill()  # ... when the reader is killed
    reader.proc.join(10)
    a.start()
    st = a.stats()
    # Found at recovery from the lease records alone: no connection of the new agent ever saw it.
    assert st["lease_recovery"]["dead_holders"] == 1
    assert st["lease_recovery"]["held"] == 1  # the survivor's lease: its holder still runs
    assert wait_until(lambda: a.stats()["pending_deletes"] == 1, "the dead reader's object reclaimed")
    # The survivor, connected to the previous agent, is killed now, with the agent up: its lease goes
    # at the next lease check, and its object with it.
    assert survivor.call("pins") == 1
    survivor.proc.kill()
    survivor.proc.join(10)
    assert wait_until(lambda: a.stats()["pending_deletes"] == 0, "the second reader's object reclaimed")


def test_a_live_reader_keeps_its_pin_across_a_restart(pool: Pool) -> None:
    a = pool.agent(0)
    w = gismo.connect(a.socket)
    ref = w.put(np.arange(1 << 16))
    reader = pool.node(0)
    reader.call("hold", "v", ref)
    w.delete(ref)
    w.close()
    a.stop()
    a.start()
    assert a.stats()["lease_recovery"]["dead_holders"] == 0
    assert a.stats()["pending_deletes"] == 1  # still pinned by a live holder: never reclaimed under it
    assert reader.call("held_bytes", "v", 0, 16) == np.arange(1 << 16)[:2].tobytes()
    reader.call("drop", "v")
    assert wait_until(lambda: a.stats()["pending_deletes"] == 0, "reclaim after the view is dropped")


def test_a_reused_pid_is_not_the_holder() -> None:
    import os

    me = os.getpid()
    start = holders.start_time(me)
    assert start > 0 and holders.alive(me, start) is True
    assert holders.alive(me, start + 1) is False  # same pid, another process: not the holder
    assert holders.alive(0, 0) is None  # unknown holder (another pid namespace)
