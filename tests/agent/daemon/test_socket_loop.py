"""The socket loop's bounded work, one turn at a time: an in-process Agent whose loop the test steps
itself (Agent.turn), so what one turn did is observed exactly, never timed.

- a client pipelining thousands of requests gets FRAMES_PER_TURN of them served per turn, and a
  healthy client is answered in every one of those turns (it cannot be starved);
- the timeout sweep looks at the expired connections and one more per queue, not at every one;
- a connection closed again before it was accepted (connect/close churn) is never tracked.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from gismo.config import Config
from gismo.daemon import Agent, protocol
from gismo.daemon.server import FRAMES_PER_TURN
from gismo.testing.poolfile import create_pool_file

MiB = 1 << 20
REGION = 8 * MiB
HEALTH = protocol.frame(protocol.HEALTH)
HEALTH_NOREPLY = protocol.frame(protocol.HEALTH, noreply=True)
PARKED = protocol.LEN.pack(protocol.MAX_FRAME) + b"\x01" + bytes(100)  # a request that never ends


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    """An in-process Agent listening on its socket; the test runs its loop (no thread)."""
    device = tmp_path / "slice"
    create_pool_file(str(device), "loop", REGION)
    cfg = Config(
        device=str(device), pool="loop", file_prefixes=(str(tmp_path),), slice_size=REGION, region=0,
        region_size=REGION, socket=str(tmp_path / "agent.sock"), owner="loop-test",
        hello_timeout_s=3600, frame_timeout_s=10,
    )  # fmt: skip
    a = Agent(cfg)
    a.listen()
    try:
        yield a
    finally:
        a.shutdown()
        os.close(a._lock_fd)
        a.map.close()


def connect(a: Agent, first: bytes = b"") -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(a.cfg.socket)
    if first:
        s.sendall(first)
    return s


def replies(s: socket.socket) -> list[tuple[int, bytes]]:
    """Every whole reply waiting on ``s`` now (non-blocking)."""
    data = b""
    while True:
        try:
            chunk = s.recv(1 << 16, socket.MSG_DONTWAIT)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    frames = protocol.FrameReader().feed(data)
    return [(f[0], f[1:]) for f in frames]


def test_a_pipelining_client_is_served_in_shares_and_a_healthy_one_in_every_turn(agent: Agent) -> None:
    pipelined = 40 * FRAMES_PER_TURN  # one read: the agent holds them all after its first turn
    hog = connect(agent, protocol.frame(protocol.HELLO, protocol.HELLO_REQ.pack(os.getpid(), 1))
                  + HEALTH_NOREPLY * pipelined)  # fmt: skip
    healthy = connect(agent, HEALTH)
    try:
        agent.turn(max_wait=5.0)  # accepts both, reads each once
        (hog_conn,) = [c for c in agent.conns.values() if c.greeted]
        queued = hog_conn.reader.pending // len(HEALTH_NOREPLY)
        # The first share was the HELLO and FRAMES_PER_TURN - 1 pipelined requests.
        assert queued == pipelined - (FRAMES_PER_TURN - 1)
        assert [status for status, _ in replies(healthy)] == [protocol.OK]
        turns = 1
        while queued:
            healthy.sendall(HEALTH)
            agent.turn(max_wait=5.0)
            turns += 1
            left = hog_conn.reader.pending // len(HEALTH_NOREPLY)
            assert queued - left == min(queued, FRAMES_PER_TURN)  # one share per turn, no more
            queued = left
            # Served in this very turn, while the hog still had requests waiting.
            assert [status for status, _ in replies(healthy)] == [protocol.OK]
        assert turns == 1 + pipelined // FRAMES_PER_TURN
        assert hog_conn.cid in agent.conns and not agent._runnable
        assert [status for status, _ in replies(hog)] == [protocol.OK]  # the HELLO's reply only
    finally:
        hog.close()
        healthy.close()


def test_the_timeout_sweep_looks_at_expired_connections_only(agent: Agent) -> None:
    # 300 connections in all (each twice: this process holds both ends, under its file limit).
    idle = [connect(agent) for _ in range(200)]
    parked = [connect(agent, PARKED) for _ in range(100)]
    try:
        while len(agent.conns) < 300:
            agent.turn(max_wait=5.0)
        assert len(agent._partial) == 100 and len(agent._ungreeted) == 300
        cfg = agent.cfg
        now = min(c.accepted for c in agent.conns.values())
        # Nothing expired: one look per queue, whatever the number of connections.
        assert agent._sweep_conns(now) == 2
        assert len(agent.conns) == 300
        # The unfinished requests begun first expire: those are looked at, plus one still in time.
        partial = sorted(agent._partial.values(), key=lambda c: c.partial_since)
        now = partial[29].partial_since + cfg.frame_timeout_s + 1e-6
        expired = sum(now - c.partial_since > cfg.frame_timeout_s for c in partial)
        assert expired >= 30
        looked = agent._sweep_conns(now)
        # The greeting queue's head (in time), the expired, and the first one still in time.
        assert looked == 1 + expired + (expired < len(partial))
        assert len(agent._partial) == 100 - expired and len(agent.conns) == 300 - expired
        assert any("request left unfinished" in why for why in agent.dropped)
    finally:
        for s in idle + parked:
            s.close()


def test_a_connection_closed_before_it_is_accepted_is_never_tracked(agent: Agent) -> None:
    for _ in range(50):
        connect(agent).close()
    healthy = connect(agent, HEALTH)
    try:
        while not (got := replies(healthy)):
            agent.turn(max_wait=5.0)
        assert [status for status, _ in got] == [protocol.OK]
        assert len(agent.conns) == 1 and len(agent._by_fd) == 1 and not agent.dropped
        (c,) = agent.conns.values()
        assert c.cid == 1  # the 50 churned ones never got an id
    finally:
        healthy.close()
