"""A bounded agent: what any process that reaches the socket can make it hold is capped, and a
healthy client is still served (an agent at a 64-file limit with 1,000 connections opened against it;
parked partial frames; counts in messages; the socket's mode)."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from storefix import AgentProc, Pool, ask, stats_of

import gismo
from gismo.contract import AGENT_GID
from gismo.daemon import protocol
from gismo.errors import ProtocolError
from gismo.testing import wait_until

MiB = 1 << 20


class LimitedAgent(AgentProc):
    """An agent subprocess whose open-file limit is ``nofile``."""

    def __init__(self, pool: Pool, region: int, env: dict[str, str], nofile: int) -> None:
        super().__init__(pool, region, env)
        self.nofile = nofile

    def launch(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GISMO_")}
        env.update(self.env)
        limit = self.nofile

        def cap() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gismo.cli", "agent"], env=env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=cap,
            )  # fmt: skip


@contextlib.contextmanager
def many_fds(n: int) -> Iterator[None]:
    """Let this test process itself hold ``n`` more sockets than usual."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, n + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def open_connections(path: str, n: int) -> list[socket.socket]:
    """``n`` connections that never say anything (each connect retried while the backlog is full)."""
    out = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        for _attempt in range(2000):
            try:
                s.connect(path)
                break
            except BlockingIOError:  # listen backlog full: the agent is working through it
                time.sleep(0.001)
        out.append(s)
    return out


def closed(s: socket.socket) -> bool:
    """The agent closed ``s``: end of stream, or a reset when it closed with our bytes still unread
    (it reads a connection in fixed chunks, so it stops reading a hog mid-request)."""
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def put_get(sock: str) -> None:
    c = gismo.connect(sock)
    try:
        ref = c.put(b"healthy" * 1000)
        assert bytes(c.get(ref)) == b"healthy" * 1000
    finally:
        c.close()


def test_a_healthy_client_is_served_at_a_64_file_limit_with_1000_connections(pool: Pool) -> None:
    agent = LimitedAgent(pool, 0, pool.env(0), nofile=64).start()
    try:
        early = gismo.connect(agent.socket)  # connected (and greeted) before the flood
        with many_fds(1000):
            hostile = open_connections(agent.socket, 1000)
            try:
                ref = early.put(b"still here")
                assert bytes(early.get(ref)) == b"still here"
                put_get(agent.socket)  # a newcomer too: ungreeted connections make room for it
                st = agent.stats()
                assert any("never said HELLO" in why for why in st["dropped"]), st["dropped"]
                assert agent.proc is not None and agent.proc.poll() is None
            finally:
                for s in hostile:
                    s.close()
        early.close()
        # Rate-limited warnings: a handful of lines, not one per failed accept.
        assert len(agent.log_text().splitlines()) < 200
    finally:
        agent.stop()


def test_parked_partial_frames_are_bounded_and_closed(pool: Pool) -> None:
    agent = pool.agent(0, max_total_buffer=4 * MiB, frame_timeout_s=1, hello_timeout_s=60)
    parked = []
    try:
        for _ in range(12):  # 12 x 512 KiB of unfinished 1 MiB frames: more than the 4 MiB total
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(agent.socket)
            s.sendall(protocol.LEN.pack(protocol.MAX_FRAME) + b"\x01" + bytes(512 << 10))
            parked.append(s)
        put_get(agent.socket)
        st = wait_until(lambda: (s := agent.stats())["dropped"] and s, "the total cap to drop a hog")
        assert st["buffered_bytes"] <= 4 * MiB
        assert any("GISMO_MAX_TOTAL_BUFFER" in why for why in st["dropped"]), st["dropped"]
        # The rest are closed once their request has been unfinished for frame_timeout_s.
        wait_until(lambda: agent.stats()["clients"] == 1, "parked connections to be closed")
        st = agent.stats()
        assert st["buffered_bytes"] == 0
        assert any("request left unfinished" in why for why in st["dropped"]), st["dropped"]
        put_get(agent.socket)
    finally:
        for s in parked:
            s.close()
        agent.stop()


def test_one_connection_cannot_buffer_more_than_its_cap(pool: Pool) -> None:
    agent = pool.agent(0, max_conn_buffer=64 << 10)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(agent.socket)
            s.sendall(protocol.LEN.pack(protocol.MAX_FRAME) + bytes(128 << 10))
            wait_until(lambda: closed(s), "the connection to be closed")
        assert any("GISMO_MAX_CONN_BUFFER" in why for why in agent.stats()["dropped"])
    finally:
        agent.stop()


@pytest.mark.parametrize("count", [0, protocol.MAX_FALLBACK_COUNT + 1, 2**32 - 1])
def test_fallback_counts_are_bounded(pool: Pool, count: int) -> None:
    agent = pool.agent(0)
    try:
        before = stats_of(agent.socket)["fallbacks"]
        status, body = ask(agent.socket, protocol.FALLBACK, protocol.COUNT_REQ.pack(count))
        assert status == ProtocolError.code and b"fallback count" in body
        assert stats_of(agent.socket)["fallbacks"] == before
        assert ask(agent.socket, protocol.FALLBACK, protocol.COUNT_REQ.pack(3))[0] == 0
        assert stats_of(agent.socket)["fallbacks"] == before + 3
    finally:
        agent.stop()


def test_the_socket_is_open_to_the_pods_user_and_group_only(pool: Pool) -> None:
    sub = os.path.join(pool.dir, "run")
    agent = pool.agent(0, socket=os.path.join(sub, "agent.sock"))
    try:
        st = os.stat(agent.socket)
        assert stat.S_IMODE(st.st_mode) == 0o660
        # The pod's group (the injection runs agent and Ray with AGENT_GID), where the agent may give
        # the socket to it: as root or a member of that group.
        may_chown = os.geteuid() == 0 or AGENT_GID in os.getgroups()
        assert (st.st_uid, st.st_gid) == (os.getuid(), AGENT_GID if may_chown else os.getgid())
        assert stat.S_IMODE(os.stat(sub).st_mode) == 0o770
        assert agent.stats()["region"] == 0  # and it serves through that socket
    finally:
        agent.stop()
