"""The agent when it cannot serve its region: it still answers on its socket, degraded, saying why.

Why it exists: the agent is a native sidecar whose startup probe (``gismo.contract.AGENT_STARTUP_COMMAND``)
holds the Ray container back until it passes. An agent that exits on a bad configuration, a
missing device or a foreign pool file would crash-loop, the probe would never pass, and the Ray
container would never start. Instead the agent serves this stand-in: HEALTH answers
``{"ok": false, "degraded": "<why>"}`` (so the startup probe passes and ``gismo health`` shows the
reason), every other request fails with ``AgentUnavailable("agent degraded: <why>")`` (so a client
falls back to Ray's own object store at once, with that message). After ``retry_after_s`` it exits
non-zero, so the kubelet restarts the sidecar and the agent tries its region again: a device that
appears later is picked up without restarting the pod, and Ray keeps running meanwhile.

Where a user looks: the reason is also written to the container's termination message file
(``gismo.contract.AGENT_TERMINATION_LOG``, when the kubelet made it), so when the degraded agent
exits the container's status carries it and the operator posts a GismoAgentRefused Warning on the
pod and its RayCluster (gismo_operator.handlers.agentrefusal): within ``retry_after_s`` of the refusal.

Bounded: at most ``MAX_CONNECTIONS`` connections (further ones are closed at once) and at most
``MAX_BUFFER`` unanswered bytes per connection (a larger frame closes that connection).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import socket
import time
from typing import Final

from ..contract import AGENT_EXIT_REFUSED, AGENT_TERMINATION_LOG
from ..errors import AgentUnavailable, GismoError
from . import protocol

log = logging.getLogger(__name__)

MAX_CONNECTIONS: Final = 64
MAX_BUFFER: Final = 64 << 10
DEFAULT_RETRY_AFTER_S: Final = 60.0
#: Exit status after a degraded spell: not 0, so the kubelet restarts the sidecar (and retries).
EXIT_DEGRADED: Final = AGENT_EXIT_REFUSED
#: The kubelet keeps at most this many bytes of a termination message.
TERMINATION_MESSAGE_MAX: Final = 4096


def write_termination_message(path: str, reason: str) -> bool:
    """Put ``reason`` in the container's termination message file; False when there is none (outside
    Kubernetes) or it cannot be written. Never creates the file (it may be any path under /dev)."""
    data = reason.encode()[:TERMINATION_MESSAGE_MAX].decode(errors="ignore").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        os.write(fd, data)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


class DegradedAgent:
    def __init__(self, socket_path: str, reason: str, termination_log: str = AGENT_TERMINATION_LOG) -> None:
        self.socket_path = socket_path
        self.reason = reason
        self.termination_log = termination_log
        self._stop = False
        self._listener: socket.socket | None = None
        self._sel = selectors.DefaultSelector()
        self._buffers: dict[socket.socket, bytearray] = {}

    def listen(self) -> None:
        """Bind the agent's socket; GismoError if a live agent already serves it (never taken over)."""
        os.makedirs(os.path.dirname(self.socket_path) or ".", exist_ok=True)
        if os.path.lexists(self.socket_path):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(self.socket_path)
                except OSError:
                    os.unlink(self.socket_path)  # the stale socket of a dead agent
                else:
                    raise GismoError(f"another agent is serving {self.socket_path}")
        ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ls.bind(self.socket_path)
        with contextlib.suppress(OSError):
            os.chmod(self.socket_path, 0o660)  # as the real agent's socket: the pod's user and group only
        ls.listen(16)
        ls.setblocking(False)
        self._listener = ls
        self._sel.register(ls, selectors.EVENT_READ, None)

    def stop(self, *_: object) -> None:
        self._stop = True

    def serve(self, retry_after_s: float = DEFAULT_RETRY_AFTER_S) -> int:
        """Answer until ``retry_after_s`` passed or stop(); the exit status for ``gismo agent``."""
        if self._listener is None:
            self.listen()
        log.error("agent degraded (Ray falls back to its own object store): %s", self.reason)
        write_termination_message(self.termination_log, self.reason)
        print(
            json.dumps({"event": "degraded", "reason": self.reason, "socket": self.socket_path}), flush=True
        )
        deadline = time.monotonic() + retry_after_s
        try:
            while not self._stop:
                left = deadline - time.monotonic()
                if left <= 0:
                    return EXIT_DEGRADED
                for key, _ in self._sel.select(timeout=min(left, 0.5)):
                    if key.data is None:
                        self._accept()
                    else:
                        self._read(key.fileobj)  # type: ignore[arg-type]
            return 0
        finally:
            self.close()

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return  # EMFILE and friends: the client retries, or falls back
        if len(self._buffers) >= MAX_CONNECTIONS:
            conn.close()
            return
        conn.setblocking(False)
        self._buffers[conn] = bytearray()
        self._sel.register(conn, selectors.EVENT_READ, True)

    def _drop(self, conn: socket.socket) -> None:
        self._buffers.pop(conn, None)
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(conn)
        conn.close()

    def _read(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            self._drop(conn)
            return
        if not data:
            self._drop(conn)
            return
        buf = self._buffers[conn]
        buf += data
        out = bytearray()
        while len(buf) >= protocol.LEN.size:
            (length,) = protocol.LEN.unpack_from(buf)
            if not 1 <= length <= MAX_BUFFER:
                self._drop(conn)
                return
            if len(buf) < protocol.LEN.size + length:
                break
            op = buf[protocol.LEN.size]
            del buf[: protocol.LEN.size + length]
            if op & protocol.NOREPLY:
                continue
            out += self.answer(op)
        if len(buf) > MAX_BUFFER:
            self._drop(conn)
            return
        if out:
            try:
                conn.sendall(bytes(out))  # small replies to a blocking-enough local peer
            except OSError:
                self._drop(conn)

    def answer(self, op: int) -> bytes:
        if op == protocol.HEALTH:
            return protocol.reply(protocol.OK, protocol.json_body({"ok": False, "degraded": self.reason}))
        return protocol.reply(AgentUnavailable.code, f"agent degraded: {self.reason}".encode())

    def close(self) -> None:
        for conn in list(self._buffers):
            self._drop(conn)
        if self._listener is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(self._listener)
            self._listener.close()
            self._listener = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)
        self._sel.close()
