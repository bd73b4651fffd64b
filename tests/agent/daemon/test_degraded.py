"""Ray never waits for Gismo: an agent that cannot serve its region answers degraded, saying why.

For each way the agent can fail at start (bad configuration, a pool path it cannot open, a region
too small for its tables) the agent still answers on its socket: the sidecar's
startup probe (``gismo health --answering``) passes, so the kubelet starts the Ray container;
``gismo health`` reports the reason and fails; a client gets AgentUnavailable with the reason, so
gismo.ray falls back to Ray's object store and records why. After ``--degraded-retry-s`` the agent
exits 3 to be restarted (and retry); SIGTERM ends it cleanly; it never takes over a live agent's socket.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from storefix import Pool

import gismo
import gismo.ray as gray
from gismo.contract import AGENT_EXIT_REFUSED, AGENT_STARTUP_COMMAND
from gismo.daemon.degraded import TERMINATION_MESSAGE_MAX, DegradedAgent, write_termination_message
from gismo.testing import wait_until


def _env(pool: Pool, **override: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GISMO_")}
    env.update(pool.env(0))
    env["GISMO_SOCKET"] = os.path.join(pool.dir, "d.sock")
    env.update(override)
    return env


def _start(pool: Pool, retry_s: float = 300, **override: str) -> tuple[subprocess.Popen[str], str]:
    env = _env(pool, **override)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gismo.cli", "agent", "--degraded-retry-s", str(retry_s)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    return proc, env["GISMO_SOCKET"]


def _cli(*args: str, socket: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gismo.cli", *args, "--socket", socket],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _probe(socket: str) -> subprocess.CompletedProcess[str]:
    """The startup probe the webhook gives the sidecar, as the kubelet runs it."""
    assert AGENT_STARTUP_COMMAND[:2] == ("gismo", "health")
    return _cli(*AGENT_STARTUP_COMMAND[1:], socket=socket)


FAILURES: list[tuple[str, dict[str, str], str]] = [
    ("bad configuration", {"GISMO_REGION_SIZE": "1000"},
     "GISMO_REGION_SIZE: 1000 bytes is not a region the agent can serve"),
    ("pool path outside the allowed folders", {"GISMO_DEVICE": "/tmp"},
     "a file backend must lie under one of the allowed folders"),
    ("region too small for its tables", {"GISMO_REGION_SIZE": "4096", "GISMO_SLICE_SIZE": "16384"},
     "the agent's tables plus one data page"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "override", "reason"), FAILURES, ids=[f[0] for f in FAILURES])
def test_a_failing_agent_answers_degraded_and_the_client_falls_back(
    pool: Pool, what: str, override: dict[str, str], reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc, sock = _start(pool, **override)
    try:
        probe = wait_until(lambda: (p := _probe(sock)).returncode == 0 and p, "the startup probe to pass")
        assert '"degraded": ' in probe.stdout and reason in probe.stdout
        health = _cli("health", socket=sock)
        assert health.returncode == 1 and reason in health.stdout  # degraded is not healthy
        with pytest.raises(gismo.AgentUnavailable, match=f"agent degraded: .*{reason}"):
            gismo.connect(sock)
        # gismo.ray falls back and says why (no Ray needed to see the decision).
        monkeypatch.setenv("GISMO_SOCKET", sock)
        gray.reset()
        assert gray._client() is None
        assert reason in gray.stats()["agent_error"]
        assert proc.poll() is None  # still answering
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        gray.reset()
    assert proc.returncode == 0, out
    assert '"event": "degraded"' in out and reason in out
    assert not os.path.exists(sock)


def test_after_the_retry_interval_it_exits_to_be_restarted(pool: Pool) -> None:
    proc, sock = _start(pool, retry_s=0.5, GISMO_REGION_SIZE="1000")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3, out
    assert not os.path.exists(sock)


def test_a_live_agents_socket_is_never_taken_over(pool: Pool) -> None:
    live = pool.agent(0)
    env = _env(pool, GISMO_SOCKET=live.socket, GISMO_REGION_SIZE="1000")
    out = subprocess.run(
        [sys.executable, "-m", "gismo.cli", "agent"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and "another agent is serving" in out.stdout + out.stderr
    assert live.stats()["objects"] == 0  # the live one still answers


def test_the_degraded_stand_in_is_bounded(pool: Pool) -> None:
    """Connections past the cap are closed at once; an oversized frame closes its connection; the
    stand-in keeps answering the probe."""
    import socket as socketlib

    from gismo.daemon import protocol
    from gismo.daemon.degraded import MAX_BUFFER, MAX_CONNECTIONS

    proc, sock = _start(pool, GISMO_REGION_SIZE="1000")
    conns: list[Any] = []
    try:
        wait_until(lambda: _probe(sock).returncode == 0, "the stand-in to answer")
        for _ in range(MAX_CONNECTIONS + 10):
            s = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
            s.connect(sock)
            conns.append(s)
        big = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
        for s in conns:
            s.close()
        conns.clear()
        big.connect(sock)
        big.sendall(protocol.LEN.pack(MAX_BUFFER + 1) + b"\x01")
        big.settimeout(30)
        assert big.recv(16) == b""  # closed, no reply
        big.close()
        assert _probe(sock).returncode == 0
    finally:
        for s in conns:
            s.close()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)


def test_a_failed_client_delivery_answers_degraded_too(pool: Pool) -> None:
    env = _env(pool)
    blocker = os.path.join(pool.dir, "a-file")
    open(blocker, "w").close()  # a folder cannot be made under a regular file
    proc = subprocess.Popen(
        [sys.executable, "-m", "gismo.cli", "agent", "--deliver-to", os.path.join(blocker, "client")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    sock = env["GISMO_SOCKET"]
    try:
        probe = wait_until(lambda: (p := _probe(sock)).returncode == 0 and p, "the startup probe to pass")
        assert "cannot deliver the client" in probe.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)


def test_a_degraded_agent_leaves_its_reason_as_the_termination_message(tmp_path: Path) -> None:
    """Where the kubelet reads it (terminationMessagePath) when the agent exits: the operator turns it
    into a GismoAgentRefused Event. The file is the kubelet's: written when it exists, never created."""
    log = tmp_path / "termination-log"
    log.write_text("left by an earlier run")
    agent = DegradedAgent(str(tmp_path / "d.sock"), "GISMO_REGION_SIZE: 1000 bytes is not ...", str(log))
    assert agent.serve(retry_after_s=0.2) == AGENT_EXIT_REFUSED
    assert log.read_text() == "GISMO_REGION_SIZE: 1000 bytes is not ..."
    missing = tmp_path / "no-such-file"
    assert not write_termination_message(str(missing), "why") and not missing.exists()
    assert write_termination_message(str(log), "é" * 3000)  # 6000 bytes: cut to the kubelet's 4096
    assert log.read_text() == "é" * (TERMINATION_MESSAGE_MAX // 2)
