"""Which inherited pin leases a restarted agent keeps, gives back or frees (in process, no socket).

Holders are written as the agent records them (pid + start time when it could see the peer, 0, 0
when not; the client's token always), then a second RegionOwner recovers the region, as a restarted
agent does. The reclaim window is closed by hand (no waiting): what matters is the rule, not the clock.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gismo.config import Config
from gismo.daemon import holders
from gismo.daemon.conn import Conn
from gismo.daemon.region import RegionOwner
from gismo.memory import layout
from gismo.testing.poolfile import create_pool_file

REGION = 4 << 20


@pytest.fixture()
def cfg(tmp_path: Path) -> Config:
    device = tmp_path / "slice"
    create_pool_file(str(device), "leases", REGION)
    return Config(
        device=str(device), pool="leases", file_prefixes=(str(tmp_path),), slice_size=REGION, region=0,
        region_size=REGION, owner="leases-test", lease_reclaim_s=3600,
    )  # fmt: skip


@pytest.fixture()
def socks() -> Iterator[list[socket.socket]]:
    made: list[socket.socket] = []
    yield made
    for s in made:
        s.close()


def _conn(socks: list[socket.socket], cid: int, token: int, pid: int = 0, start: int = 0) -> Conn:
    a, b = socket.socketpair()
    socks += [a, b]
    return Conn(a, cid, peer_pid=pid, peer_start=start, token=token)


def _close(owner: RegionOwner) -> None:
    os.close(owner._lock_fd)
    owner.map.close()


def _pinned_lease(owner: RegionOwner, c: Conn, slot: int) -> int:
    """A lease granted to ``c`` with one pin in it (as the client writes it); the lease index."""
    first, index = owner._new_lease(c)
    layout.write_pin(owner.rw, owner.geom.pin_pos(first), 0, slot, 1)
    return index


def _dead_process() -> tuple[int, int]:
    p = subprocess.Popen(["sleep", "30"])
    start = holders.start_time(p.pid)
    p.kill()
    p.wait()
    return p.pid, start


def test_inherited_leases_by_holder(cfg: Config, socks: list[socket.socket]) -> None:
    me, my_start = os.getpid(), holders.start_time(os.getpid())
    dead_pid, dead_start = _dead_process()
    first = RegionOwner(cfg)
    hidden = _pinned_lease(first, _conn(socks, 1, token=11), slot=1)  # another pid namespace
    hidden_gone = _pinned_lease(first, _conn(socks, 2, token=22), slot=2)
    visible = _pinned_lease(first, _conn(socks, 3, token=33, pid=me, start=my_start), slot=3)
    dead = _pinned_lease(first, _conn(socks, 4, token=44, pid=dead_pid, start=dead_start), slot=4)
    reused = _pinned_lease(first, _conn(socks, 5, token=55, pid=me, start=my_start + 1), slot=5)
    unpinned = first._new_lease(_conn(socks, 6, token=66))[1]  # no pin yet, but it may pin any time
    _close(first)

    second = RegionOwner(cfg)  # the restarted agent
    try:
        # Dead at once, from the records alone: the gone pid, and the pid reused by another process.
        assert second.lease_recovery["dead_holders"] == 2
        assert second.held_leases == {hidden, hidden_gone, visible, unpinned}
        assert {dead, reused} <= set(second.free_leases)
        # A reconnecting client claims exactly its own leases, once; a guessed token claims nothing.
        back = _conn(socks, 10, token=11)
        assert second.reclaim_leases(back) == [hidden] and back.leases == [hidden]
        assert second.reclaim_leases(_conn(socks, 11, token=11)) == []
        assert second.reclaim_leases(_conn(socks, 12, token=12345)) == []
        assert layout.read_holder(second.rw, second.geom.counter_pos(hidden))[2] == 11
        assert second.lease_recovery["reclaimed"] == 1
        assert second._reap_held_leases() == 0  # the window is open: nobody else is judged yet
        second.reclaim_until = 0.0  # the window closes
        assert second._reap_held_leases() == 1  # the hidden holder that never came back
        assert second.held_leases == {visible}  # a visible, living holder that still pins keeps it
        assert second.lease_recovery["unclaimed"] == 1
        assert {hidden_gone, unpinned} <= set(second.free_leases)
        assert layout.read_holder(second.rw, second.geom.counter_pos(hidden_gone)) == (0, 0, 0)
        assert hidden not in second.free_leases  # given back: tied to its new connection now
    finally:
        _close(second)
