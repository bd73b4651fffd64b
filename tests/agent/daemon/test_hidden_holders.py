"""Pin leases whose holder the agent cannot see: a reader in another pid namespace (a pod without a
shared process namespace, where SO_PEERCRED reports pid 0 and /proc has no entry to check).

The agent here really runs in a new pid namespace (``unshare --user --pid``), so the test process and
the readers it spawns are invisible to it, exactly as the Ray container is to the agent sidecar. A
reader killed while its agent is down then holds space for ``lease_reclaim_s`` after the agent is up
again, never longer; a living reader reconnects on its own and claims its leases back by token, so
its views keep their pins past that window (README, security).
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from storefix import Pool

import gismo
from gismo.memory import layout
from gismo.testing import wait_until

#: The agent in a pid namespace of its own; --kill-child: it dies with the wrapper (kill -9 of the agent).
UNSHARE = ("unshare", "--user", "--pid", "--fork", "--kill-child")
#: Short, so the test waits little; long enough for a living client (it retries every 0.25 s).
RECLAIM_S = 3


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run([*UNSHARE, "true"], capture_output=True, check=False).returncode == 0


pytestmark = pytest.mark.skipif(not _unshare_works(), reason="unshare --user --pid is not permitted here")


def _holders(pool: Pool, region: int) -> list[tuple[int, int, int]]:
    """(pid, start, token) of every lease of ``region`` that holds a pin, read from the pool file."""
    with open(pool.path, "rb") as f:
        f.seek(pool.slice_offset + region * pool.region_size)
        buf = f.read(pool.region_size)
    g = layout.Geometry.unpack_header(buf, 0, region, pool.region_size)
    pins = np.frombuffer(buf, layout.pin_dtype(), g.pins, g.pin_off)
    leases = sorted(set((np.nonzero(pins["region"])[0] // layout.LEASE).tolist()))
    return [layout.read_holder(buf, g.counter_pos(i)) for i in leases]


def _quiet_writer(pool: Pool, n: int) -> tuple[gismo.Client, list[gismo.Ref]]:
    w = gismo.connect(pool.agents[0].socket)
    return w, [w.put(np.arange(1 << 16) + i) for i in range(n)]


def test_a_hidden_reader_killed_while_its_agent_is_down_holds_space_for_the_reclaim_window(
    pool: Pool,
) -> None:
    a = pool.agent(0, wrap=UNSHARE, lease_reclaim_s=RECLAIM_S)
    w, (doomed,) = _quiet_writer(pool, 1)
    reader = pool.node(0)
    reader.call("hold", "v", doomed)
    w.delete(doomed)
    assert wait_until(lambda: a.stats()["pending_deletes"] == 1, "the delete pinned by the reader")
    # The agent could not see the reader: no pid to check, only its client token.
    (holder,) = _holders(pool, 0)
    assert holder[0] == 0 and holder[1] == 0 and holder[2] != 0
    free = a.stats()["leases_free"]
    w.close()
    assert wait_until(lambda: a.stats()["leases_free"] == free + 1, "the writer's lease freed")
    a.kill9()  # the agent is down ...
    reader.proc.kill()  # ... when the reader is killed (SIGKILL: no goodbye)
    reader.proc.join(10)
    a.start()
    st = a.stats()
    assert st["lease_recovery"]["dead_holders"] == 0  # nothing to tell from at recovery ...
    assert st["held_leases"] == 1 and st["pending_deletes"] == 1  # ... so it waits for a claim
    # Nobody claims it: once the window closes the lease goes, and the object with it.
    assert wait_until(lambda: a.stats()["pending_deletes"] == 0, "the dead reader's object reclaimed")
    st = a.stats()
    assert st["lease_recovery"]["unclaimed"] == 1 and st["lease_recovery"]["reclaimed"] == 0
    assert st["reclaim_window_left_s"] == 0 and st["held_leases"] == 0


def test_a_hidden_living_reader_keeps_its_pins_across_a_restart(pool: Pool) -> None:
    a = pool.agent(0, wrap=UNSHARE, lease_reclaim_s=RECLAIM_S)
    w, (ref,) = _quiet_writer(pool, 1)
    reader = pool.node(0)
    reader.call("hold", "v", ref)
    w.delete(ref)
    w.close()
    a.kill9()
    a.start()
    # The reader's client noticed the hang-up and reconnected with its token: its lease is its again.
    assert wait_until(lambda: a.stats()["lease_recovery"]["reclaimed"] == 1, "the reader to claim its lease")
    assert wait_until(lambda: a.stats()["reclaim_window_left_s"] == 0, "the reclaim window to close")
    st = a.stats()
    assert st["lease_recovery"]["unclaimed"] == 0 and st["pending_deletes"] == 1  # still pinned
    # New objects fill the region; none may take the pinned object's bytes.
    w2, _refs = _quiet_writer(pool, 48)
    assert reader.call("held_bytes", "v") == np.arange(1 << 16).tobytes()
    assert a.stats()["pending_deletes"] == 1
    # The lease is tied to the reader's new connection now: killed with its agent up, it goes at once.
    reader.proc.kill()
    reader.proc.join(10)
    assert wait_until(lambda: a.stats()["pending_deletes"] == 0, "the killed reader's object reclaimed")
    w2.close()
