"""Helpers and fixtures for the store tests: a pool file, agent daemons, and node processes.

Test modules import helpers from here (``from storefix import ...``), not from ``conftest``: when
pytest is given tests/agent and tests/agent/ray together, both conftest files are named ``conftest`` and
the later one would shadow this one.

Everything started here is stopped in teardown (terminate, then kill), and every file is removed,
whether or not the test passed.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import store_node

from gismo.contract import ENV_TEST_MEMORY
from gismo.daemon import protocol
from gismo.memory import layout, model
from gismo.testing import wait_until
from gismo.testing.poolfile import create_pool_file

MiB = 1 << 20
SHM = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
#: The memory models the cross-node tests run under (gismo.memory.model): one host's coherent tmpfs,
#: and every node a write-back cache without coherence.
MEMORY_MODELS = ("coherent", model.NONCOHERENT)
#: Mark for tests (or modules: ``pytestmark = both_memories``) that cross nodes: run them under both.
both_memories = pytest.mark.parametrize("pool", MEMORY_MODELS, indirect=True)


def ask(sock_path: str, op: int, body: bytes = b"") -> tuple[int, bytes]:
    """One raw request on a fresh connection: (status, body)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(sock_path)
        s.sendall(protocol.frame(op, body))
        return read_reply(s)


class Replies:
    """Reads reply frames off one socket, in order (several may arrive in one recv)."""

    def __init__(self, s: socket.socket) -> None:
        self.s = s
        self.buf = b""

    def next(self) -> tuple[int, bytes]:
        while len(self.buf) < 4 or len(self.buf) < 4 + protocol.LEN.unpack_from(self.buf)[0]:
            chunk = self.s.recv(65536)
            if not chunk:
                raise ConnectionError("agent closed the connection")
            self.buf += chunk
        n = protocol.LEN.unpack_from(self.buf)[0]
        payload, self.buf = self.buf[4 : 4 + n], self.buf[4 + n :]
        return payload[0], payload[1:]


def read_reply(s: socket.socket) -> tuple[int, bytes]:
    """Exactly one reply (for single-request exchanges)."""
    r = Replies(s)
    out = r.next()
    assert r.buf == b"", "agent sent more than one reply"
    return out


def stats_of(sock_path: str) -> dict[str, Any]:
    status, body = ask(sock_path, protocol.STATS)
    assert status == 0, body
    out: dict[str, Any] = json.loads(body)
    return out


def slots_in_memory(
    path: str, region: int, region_size: int, slice_offset: int = 0
) -> dict[str, list[list[int]]]:
    """What a region's slot table says, read straight from the pool file (no agent involved):
    refs ``[region, slot, generation, offset, length]`` of its sealed, reserved and deleting slots."""
    names = {layout.SEALED: "sealed", layout.RESERVED: "reserved", layout.DELETING: "deleting"}
    out: dict[str, list[list[int]]] = {name: [] for name in names.values()}
    base = slice_offset + region * region_size
    with open(path, "rb") as f:
        f.seek(base)
        buf = f.read(region_size)
    g = layout.Geometry.unpack_header(buf, 0, region, region_size)
    for s in range(g.slots):
        _seq, gen, state, _f, off, length, _taken = layout.read_slot_raw(buf, g.slot_pos(s))
        if state in names:
            out[names[state]].append([region, s, gen, off, length])
    return out


class AgentProc:
    """One `gismo agent` subprocess."""

    def __init__(self, pool: Pool, region: int, env: dict[str, str], wrap: tuple[str, ...] = ()) -> None:
        self.pool = pool
        self.region = region
        self.env = env
        self.wrap = wrap  # a command the agent runs under (e.g. unshare: another pid namespace)
        self.socket = env["GISMO_SOCKET"]
        self.log = os.path.join(pool.dir, f"agent-{region}.log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProc:
        """Launch and wait until it serves."""
        self.launch()
        wait_until(self._up, f"agent {self.region} to serve")
        return self

    def launch(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GISMO_")}
        env.update(self.env)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*self.wrap, sys.executable, "-m", "gismo.cli", "agent"],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def _up(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"agent {self.region} exited {self.proc.returncode}:\n{self.log_text()}")
        try:
            return ask(self.socket, protocol.HEALTH)[0] == 0
        except OSError:
            return False

    def log_text(self) -> str:
        with open(self.log, errors="replace") as f:
            return f.read()[-4000:]

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        if self.wrap:  # the wrapper is gone; its child dies of it (--kill-child) a moment later
            wait_until(self._gone, f"agent {self.region} under {self.wrap[0]} to be gone")

    def _gone(self) -> bool:
        try:
            ask(self.socket, protocol.HEALTH)
        except OSError:
            return True
        return False

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.terminate()
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def stats(self) -> dict[str, Any]:
        return stats_of(self.socket)

    def slots(self) -> dict[str, list[list[int]]]:
        """This agent's region as its slot table in memory says (see slots_in_memory): its node's
        memory, which under the non-coherent model holds stores not yet flushed to the pool."""
        p = self.pool
        path, start = p.node_memory(self.region)
        return slots_in_memory(path, self.region, p.region_size, start)


class Node:
    """A spawned OS process acting as one Ray node's worker, with its own client."""

    ctx = multiprocessing.get_context("spawn")

    def __init__(self, sock: str) -> None:
        self.conn, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=store_node.serve, args=(child,), daemon=True)
        self.proc.start()
        child.close()
        self.region = self.call("connect", sock)

    def call(self, name: str, *args: Any, timeout: float = 60) -> Any:
        self.conn.send((name, args))
        if not self.conn.poll(timeout):
            raise AssertionError(f"node call {name} did not answer in {timeout}s")
        ok, value = self.conn.recv()
        if not ok:
            raise AssertionError(f"node call {name} failed: {value}")
        return value

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.conn.close()


class Pool:
    """A pool file on /dev/shm holding one slice of ``regions`` regions, plus what runs on it."""

    def __init__(
        self, regions: int = 4, region_size: int = 32 * MiB, slice_offset: int = 0, memory: str = "coherent"
    ) -> None:
        self.memory = memory
        self.dir = tempfile.mkdtemp(prefix="gsm-", dir="/tmp")  # short: AF_UNIX paths are ≤ 107 bytes
        self.path = os.path.join(SHM, f"gismo-test-{uuid.uuid4().hex[:12]}.pool")
        self.regions = regions
        self.region_size = region_size
        self.slice_offset = slice_offset
        self.slice_size = regions * region_size
        create_pool_file(self.path, "test", slice_offset + self.slice_size)
        self.agents: dict[int, AgentProc] = {}
        self.nodes: list[Node] = []

    def env(self, region: int, **extra: Any) -> dict[str, str]:
        env = {
            "GISMO_POOL": "test", "GISMO_BACKEND": "shm", "GISMO_DEVICE": self.path,
            "GISMO_SLICE_OFFSET": str(self.slice_offset), "GISMO_SLICE_SIZE": str(self.slice_size),
            "GISMO_REGION": str(region), "GISMO_REGION_SIZE": str(self.region_size),
            "GISMO_REGION_OFFSET": str(self.slice_offset + region * self.region_size),
            "GISMO_SOCKET": os.path.join(self.dir, f"a{region}.sock"), "GISMO_GRACE_MS": "5",
            ENV_TEST_MEMORY: self.memory,
        }  # fmt: skip
        env.update({f"GISMO_{k.upper()}": str(v) for k, v in extra.items()})
        return env

    def agent(self, region: int, wrap: tuple[str, ...] = (), **extra: Any) -> AgentProc:
        a = AgentProc(self, region, self.env(region, **extra), wrap)
        self.agents[region] = a
        return a.start()

    def node(self, region: int) -> Node:
        n = Node(self.agents[region].socket)
        self.nodes.append(n)
        return n

    def node_memory(self, region: int) -> tuple[str, int]:
        """(file, offset of the slice in it) holding what the processes of ``region``'s node see.

        Coherent: the pool file itself. Non-coherent model: that node's cache file, where its own
        unflushed stores live (a test writes there to play the node's CPU, e.g. a crashed store).
        """
        if self.memory == model.NONCOHERENT:
            return model.cache_path(self.path, region), 0
        return self.path, self.slice_offset

    def close(self) -> None:
        for n in self.nodes:
            n.close()
        for a in self.agents.values():
            a.stop()
        for path in [self.path, *model.cache_files(self.path)]:
            if os.path.exists(path):
                os.unlink(path)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def pool(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pool]:
    """A pool of 4 regions; ``both_memories`` runs the test under each memory model. The test
    process and the nodes it spawns map the slice under the same model as the agents."""
    memory = getattr(request, "param", "coherent")
    monkeypatch.setenv(ENV_TEST_MEMORY, memory)
    p = Pool(memory=memory)
    try:
        yield p
    finally:
        p.close()
