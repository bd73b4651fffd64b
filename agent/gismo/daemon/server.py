"""The agent daemon's socket server: one Unix socket, one thread, frames in, replies out.

One thread runs the socket loop (epoll, no asyncio: ~2x less overhead per message) and hands each
request to the region owner (region.py); an optional HTTP thread (metrics.py) only reads counters
for Prometheus and probes. A malformed request gets an error reply; a client that never reads its
replies is cut off once its backlog passes MAX_BACKLOG.

A loop turn does bounded work whatever the clients send, so a healthy client waits at most about one
turn behind hostile ones: epoll reports only the ready connections; each gets one read of at most
RECV_CHUNK bytes and has at most FRAMES_PER_TURN of its requests served (the rest wait, unread, for
the next turn); at most ACCEPT_BATCH connections are accepted, each read at once (a connection already
closed again costs no registration). Timeouts cost O(expired): connections that never greeted are
kept in accept order and those holding an unfinished request in the order it began, so a sweep stops
at the first one still in time.

Bounds (Config; what any process that reaches the socket can make the agent hold): at most
``max_connections`` connections (past it, and when ``accept`` fails for lack of file descriptors,
the oldest connection that never said HELLO is dropped; with none to drop, accepting pauses with
exponential back-off, logged at most every LOG_EVERY_S), ``max_conn_buffer`` bytes of an unfinished
request per connection, ``max_total_buffer`` bytes buffered over all connections (the largest holder
is dropped first), ``hello_timeout_s`` to say HELLO and ``frame_timeout_s`` to finish a request.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import select
import signal
import socket
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ..config import Config, ConfigError
from ..contract import AGENT_GID
from ..errors import GismoError, ProtocolError, StaleRef, StoreFull
from ..memory import layout
from ..memory.coherence import CoherenceUnavailable, resolve_mode
from . import holders, protocol
from .conn import Conn
from .degraded import DEFAULT_RETRY_AFTER_S, DegradedAgent
from .region import RegionOwner, RegionRefused

log = logging.getLogger("gismo.agent")

MAX_BACKLOG = 16 << 20  # unsent reply bytes tolerated per connection
#: A repeated warning (accept failures, dropped connections) is logged at most this often.
LOG_EVERY_S = 10.0
#: accept() back-off when no file descriptor or connection slot can be freed: first and last pause.
ACCEPT_PAUSE_MIN_S = 0.01
ACCEPT_PAUSE_MAX_S = 1.0
#: How often idle and stuck connections are looked for.
SWEEP_EVERY_S = 0.5
LISTEN_BACKLOG = 4096
#: Connections accepted per wake-up of the socket loop.
ACCEPT_BATCH = 16
#: Bytes read from one connection per loop turn, and requests of one connection served per turn: a
#: client pipelining thousands of requests gets its share, then the others get theirs.
RECV_CHUNK = 64 << 10
FRAMES_PER_TURN = 64
#: Longest sleep of the socket loop when nothing is due (a stop() is seen within it).
IDLE_WAIT_S = 0.1
_READ = select.EPOLLIN
_READ_WRITE = select.EPOLLIN | select.EPOLLOUT
#: How often leases inherited from a previous agent are checked for dead holders (the bound after
#: which a dead reader's pins stop holding space, once the agent is up: see README, security).
LEASE_CHECK_S = 1.0
_NO_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class RateLimitedLog:
    """One warning per key per LOG_EVERY_S, with how many were held back since the last one."""

    def __init__(self, every: float = LOG_EVERY_S) -> None:
        self.every = every
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warn(self, key: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -self.every) < self.every:
            self._held[key] = self._held.get(key, 0) + 1
            return
        held = self._held.pop(key, 0)
        self._last[key] = now
        log.warning(msg + (f" ({held} more since the last such message)" if held else ""), *args)


class Agent(RegionOwner):
    """Owns one region and serves it. Build with a validated Config; ``serve()`` runs until SIGTERM."""

    #: False for a RefusingAgent, which serves the socket but maps no region.
    has_region = True

    def __init__(self, cfg: Config, *, force_format: bool = False) -> None:
        super().__init__(cfg, force_format=force_format)
        self._init_server()

    def _init_server(self) -> None:
        self._next_cid = 1
        self.buffered = 0  # bytes counted against max_total_buffer, over all connections
        self.dropped: dict[str, int] = {}  # connections closed by a bound, by reason
        self._accept_paused_until = 0.0
        self._accept_pause = ACCEPT_PAUSE_MIN_S
        self._next_sweep = 0.0
        self._next_lease_check = 0.0
        self._warn = RateLimitedLog()
        self._stop = False
        self.ready = False
        self.ep: select.epoll | None = None
        self.listener: socket.socket | None = None
        self._listen_fd = -1
        self._by_fd: dict[int, Conn] = {}
        #: Connections that never said HELLO, oldest first; those holding an unfinished request, in the
        #: order it began; those with whole requests left over from an earlier turn (bounded work).
        self._ungreeted: OrderedDict[int, Conn] = OrderedDict()
        self._partial: OrderedDict[int, Conn] = OrderedDict()
        self._runnable: dict[int, Conn] = {}
        self._turn_no = 0
        self._handlers: dict[int, Callable[[Conn, memoryview], bytes]] = {
            protocol.DELETE: self._op_delete, protocol.ABORT: self._op_abort,
            protocol.HELLO: self._op_hello, protocol.LEASE: self._op_lease,
            protocol.FALLBACK: self._op_fallback, protocol.STATS: self._op_stats,
            protocol.LIST: self._op_list, protocol.HEALTH: self._op_health,
            protocol.TIE: self._op_tie,
        }  # fmt: skip

    # ---- socket loop --------------------------------------------------------------------------
    def listen(self) -> None:
        path = self.cfg.socket
        folder = os.path.dirname(path) or "."
        os.makedirs(folder, mode=0o770, exist_ok=True)
        _restrict(folder, 0o770)
        if os.path.exists(path):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
            except OSError:
                os.unlink(path)  # stale socket of a dead agent
            else:
                probe.close()
                raise GismoError(f"another agent is serving {path}")
            finally:
                probe.close()
        ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o117)  # the socket exists 0660 from its first moment
        try:
            ls.bind(path)
        finally:
            os.umask(old_umask)
        _restrict(path, 0o660)
        # A deep backlog (the kernel caps it at net.core.somaxconn): a flood of connections then waits
        # in it, to be accepted and dropped, instead of making a newcomer's connect fail with EAGAIN.
        ls.listen(LISTEN_BACKLOG)
        ls.setblocking(False)
        self.listener = ls
        self._listen_fd = ls.fileno()
        self.ep = select.epoll()
        self.ep.register(self._listen_fd, _READ)
        self.ready = True

    def stop(self, *_: Any) -> None:
        self._stop = True

    def serve(self) -> None:
        """Run until stop(); SIGTERM and SIGINT stop it cleanly (region stays; socket removed)."""
        if self.listener is None:
            self.listen()
        with contextlib.suppress(ValueError):  # not the main thread: caller handles signals
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        try:
            while not self._stop:
                self.turn()
        finally:
            self.shutdown()

    def turn(self, max_wait: float = IDLE_WAIT_S) -> None:
        """One turn of the socket loop: wait (at most ``max_wait``) for ready sockets, then give each
        its bounded share: accept a batch, read once from each ready connection, serve at most
        FRAMES_PER_TURN requests of each connection with requests waiting."""
        assert self.ep is not None
        self._turn_no += 1
        turn = self._turn_no
        now = time.monotonic()
        timeout = min(max_wait, max(0.0, self._next_due - now))
        if self._accept_paused_until:
            if now >= self._accept_paused_until:
                self._resume_accept()
            else:
                timeout = min(timeout, self._accept_paused_until - now)
        if now >= self._next_sweep:
            self._sweep_conns(now)
        if self._runnable:
            timeout = 0.0  # requests left from the last turn: do not sleep on them
        for fd, events in self.ep.poll(timeout):
            if fd == self._listen_fd:
                self._accept()
                continue
            c = self._by_fd.get(fd)
            if c is None or c.turn == turn:  # closed, or its fd reused by a connection served already
                continue
            if events & select.EPOLLOUT and not events & select.EPOLLIN:
                self._flush_out(c)
            else:  # readable, hung up or in error: a read says which
                self._on_read(c)
        for c in list(self._runnable.values()):
            if c.turn != turn:
                self._on_read(c)
        if self._next_due <= time.monotonic():
            self._maintain(time.monotonic())

    def shutdown(self) -> None:
        """Stop serving. Clients' reservations stay RESERVED in memory on purpose: a client that is
        still alive may be writing into one, so only the next agent's recovery (which quarantines
        them for orphan_grace_s) may free them; sealed ones are simply kept."""
        self.ready = False
        for c in list(self.conns.values()):
            self.conns.pop(c.cid, None)
            c.sock.close()
        self._by_fd.clear()
        self._ungreeted.clear()
        self._partial.clear()
        self._runnable.clear()
        if self.listener is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.cfg.socket)
            self.listener.close()
            self.listener = None
        if self.ep is not None:
            self.ep.close()
            self.ep = None
        if self.has_region:
            with contextlib.suppress(ValueError, TypeError):
                layout.write_run(self.rw, 0, self.epoch, os.getpid(), 1)
        log.info("agent for region %d stopped", self.region)

    def _accept(self) -> None:
        assert self.listener is not None
        # A few per wake-up, not the whole backlog: requests of the connections just accepted (a
        # newcomer's HELLO) are read before more arrivals could push them out as "never greeted".
        for _ in range(ACCEPT_BATCH):
            if len(self.conns) >= self.cfg.max_connections and not self._drop_ungreeted("connection cap"):
                self._pause_accept(f"{len(self.conns)} connections, the cap (GISMO_MAX_CONNECTIONS)")
                return
            try:
                s, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                self._accept_pause = ACCEPT_PAUSE_MIN_S
                return
            except OSError as exc:
                if exc.errno in _NO_FDS:
                    # Out of file descriptors: free one from a connection that never greeted, or wait.
                    if self._drop_ungreeted("out of file descriptors"):
                        continue
                    self._pause_accept(os.strerror(exc.errno or errno.EMFILE))
                    return
                self._warn.warn("accept", "accept: %s", exc)
                return
            s.setblocking(False)
            # Read at once: a connection closed again already (connect/close churn) goes without ever
            # being tracked or watched, and a newcomer's HELLO, usually there by now, is answered now.
            try:
                first: bytes | None = s.recv(RECV_CHUNK)
            except (BlockingIOError, InterruptedError):
                first = None
            except OSError:
                first = b""
            if first == b"":
                s.close()
                continue
            c = Conn(s, self._next_cid, fd=s.fileno(), accepted=time.monotonic())
            self._next_cid += 1
            self.conns[c.cid] = c
            self._by_fd[c.fd] = c
            self._ungreeted[c.cid] = c
            if first:
                self._on_read(c, first)
            if c.cid in self.conns and not c.events:
                self._watch(c, _READ)

    def _pause_accept(self, why: str) -> None:
        """Stop polling the listener for a while (exponential back-off): no busy loop on EMFILE."""
        assert self.ep is not None
        pause = self._accept_pause
        self._accept_pause = min(ACCEPT_PAUSE_MAX_S, pause * 2)
        self._accept_paused_until = time.monotonic() + pause
        with contextlib.suppress(OSError):
            self.ep.unregister(self._listen_fd)
        self._warn.warn("accept-pause", "not accepting connections for %.2f s: %s", pause, why)

    def _resume_accept(self) -> None:
        assert self.ep is not None
        self._accept_paused_until = 0.0
        with contextlib.suppress(OSError):
            self.ep.register(self._listen_fd, _READ)

    def _drop(self, c: Conn, why: str) -> None:
        """Close a connection a bound caught, count it by reason, log (rate limited)."""
        self.dropped[why] = self.dropped.get(why, 0) + 1
        self._warn.warn(f"drop-{why}", "closing client connection %d (pid %d): %s", c.cid, c.pid, why)
        self._close(c)

    def _drop_ungreeted(self, why: str) -> bool:
        """Close the oldest connection that never said HELLO (to make room); False when none."""
        if not self._ungreeted:
            return False
        oldest = next(iter(self._ungreeted.values()))
        self._drop(oldest, f"{why}: dropped a connection that never said HELLO")
        return True

    def _sweep_conns(self, now: float) -> int:
        """Close connections that never greet, or park an unfinished request, past their timeouts.
        Each queue is in deadline order, so this looks at the expired ones and one more per queue
        only; returns how many connections it looked at."""
        self._next_sweep = now + SWEEP_EVERY_S
        if self.has_region and self.held_leases and now >= self._next_lease_check:
            self._next_lease_check = now + LEASE_CHECK_S
            if self._reap_held_leases():
                self._maintain(now)  # objects only dead readers pinned: reclaim them now
        cfg = self.cfg
        looked = 0
        for queue, since, limit, why in (
            (self._ungreeted, "accepted", cfg.hello_timeout_s, f"no HELLO within {cfg.hello_timeout_s:g} s"),
            (self._partial, "partial_since", cfg.frame_timeout_s,
             f"request left unfinished for {cfg.frame_timeout_s:g} s"),
        ):  # fmt: skip
            while queue:
                c = next(iter(queue.values()))
                looked += 1
                if now - getattr(c, since) <= limit:
                    break
                self._drop(c, why)
        return looked

    def _account(self, c: Conn) -> None:
        """Re-count what ``c`` holds (unread requests + unsent replies); enforce the buffer caps."""
        pending = c.reader.pending
        waiting = c.reader.has_frame  # whole requests for the next turn: nothing is stuck
        if waiting:
            self._runnable[c.cid] = c
        else:
            self._runnable.pop(c.cid, None)
        if pending and not waiting:
            if not c.partial_since:
                c.partial_since = time.monotonic()
                self._partial[c.cid] = c  # the latest start so far: the queue stays in order
        elif c.partial_since:
            c.partial_since = 0.0
            self._partial.pop(c.cid, None)
        held = pending + len(c.out)
        self.buffered += held - c.buffered
        c.buffered = held
        # Only an unfinished request counts against the per-connection cap: whole requests waiting for
        # their turn are at most one RECV_CHUNK (nothing more is read from the connection until they
        # are served).
        if pending > self.cfg.max_conn_buffer and not waiting:
            self._drop(
                c, f"unfinished request above {self.cfg.max_conn_buffer} bytes (GISMO_MAX_CONN_BUFFER)"
            )
        while self.buffered > self.cfg.max_total_buffer and self.conns:
            hog = max(self.conns.values(), key=lambda x: x.buffered)
            self._drop(hog, f"all connections buffer above {self.cfg.max_total_buffer} bytes "
                            "(GISMO_MAX_TOTAL_BUFFER): dropped the largest")  # fmt: skip

    def _on_read(self, c: Conn, data: bytes | None = None) -> None:
        """Serve ``c``'s share of this turn: requests left from an earlier read first (reading no more
        until they are served), else ``data`` (read already) or one read of at most RECV_CHUNK bytes."""
        c.turn = self._turn_no
        try:
            if c.reader.has_frame:
                frames = c.reader.take(FRAMES_PER_TURN)
            else:
                if data is None:
                    try:
                        data = c.sock.recv(RECV_CHUNK)
                    except (BlockingIOError, InterruptedError):
                        return
                    except OSError:
                        data = b""
                if not data:
                    self._close(c)
                    return
                frames = c.reader.feed(data, FRAMES_PER_TURN)
        except ProtocolError as exc:
            # A length we cannot trust: there is no resynchronising this stream. Say why, then drop it.
            with contextlib.suppress(OSError):
                c.sock.send(protocol.reply(exc.code, str(exc).encode()))
            self._close(c)
            return
        out = c.out
        for payload in frames:
            op = payload[0]
            noreply = op & protocol.NOREPLY
            try:
                body = self.dispatch(c, op & 0x7F, memoryview(payload)[1:])
                rep = protocol.reply(protocol.OK, body)
            except GismoError as exc:
                rep = protocol.reply(exc.code, str(exc).encode())
            except (struct.error, ValueError, TypeError, UnicodeDecodeError) as exc:
                rep = protocol.reply(ProtocolError.code, f"malformed {protocol.OP_NAMES.get(op & 0x7F, op)} "
                                     f"request: {exc}".encode())  # fmt: skip
            except Exception as exc:  # a bug must not take the agent down for every other client
                log.exception("request failed")
                rep = protocol.reply(GismoError.code, f"internal error: {exc!r}".encode())
            if not noreply:
                out += rep
        if out:
            self._flush_out(c)
            if len(c.out) > MAX_BACKLOG:  # a client that sends but never reads: cut it off
                self._drop(c, "does not read its replies")
                return
        if c.cid in self.conns:
            self._account(c)

    def _flush_out(self, c: Conn) -> None:
        try:
            n = c.sock.send(c.out)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            self._close(c)
            return
        del c.out[:n]
        want = _READ_WRITE if c.out else _READ
        if want != c.events:  # an epoll call only when the interest changes, not per reply
            self._watch(c, want)
        if n and c.buffered:
            self._account(c)

    def _watch(self, c: Conn, events: int) -> None:
        """Have epoll report ``events`` of ``c`` (registering it the first time)."""
        assert self.ep is not None
        if c.events:
            self.ep.modify(c.fd, events)
        else:
            self.ep.register(c.fd, events)
        c.events = events

    def _close(self, c: Conn) -> None:
        if self.conns.pop(c.cid, None) is None:
            return
        self.buffered -= c.buffered
        c.buffered = 0
        if self._by_fd.get(c.fd) is c:
            del self._by_fd[c.fd]
        self._ungreeted.pop(c.cid, None)
        self._partial.pop(c.cid, None)
        self._runnable.pop(c.cid, None)
        if c.events and self.ep is not None:
            with contextlib.suppress(OSError):
                self.ep.unregister(c.fd)
        c.events = 0
        c.sock.close()
        for s in list(c.reserved):
            self._settle_reservation(s, self.reserved[s][1])
        if c.tied:
            self.drop_tied(c)
        for lease in c.leases:
            self._drop_lease(lease)

    # ---- requests -----------------------------------------------------------------------------
    def dispatch(self, c: Conn, op: int, body: memoryview) -> bytes:
        """Handle one request; return the reply body or raise a GismoError (sent as an error reply)."""
        if op == protocol.CREATE:  # the hot path first
            (n,) = protocol.CREATE_REQ.unpack(body)
            return protocol.CREATE_REP.pack(*self.create(c, n))
        if op == protocol.SEAL:
            self.seal(c, *protocol.SLOT_REQ.unpack(body))
            return b""
        if op == protocol.SEAL_MANY:
            # Batched seal notices: one bad entry must not void the others, so each is settled alone.
            size = protocol.SLOT_REQ.size
            if len(body) % size:
                raise ProtocolError("seal_many body is not a whole number of entries")
            errors = 0
            for i in range(0, len(body), size):
                try:
                    self.seal(c, *protocol.SLOT_REQ.unpack_from(body, i))
                except GismoError:
                    errors += 1
            if errors:
                raise StaleRef(
                    f"{errors} of {len(body) // size} seal notices named no reservation of this client"
                )
            return b""
        if op == protocol.CREATE_MANY:
            n, count = protocol.CREATE_MANY_REQ.unpack(body)
            return b"".join(protocol.CREATE_REP.pack(*r) for r in self.create_many(c, n, count))
        handler = self._handlers.get(op)
        if handler is None:
            raise ProtocolError(f"unknown op {op}")
        return handler(c, body)

    def _op_delete(self, c: Conn, body: memoryview) -> bytes:
        self.delete(*protocol.DELETE_REQ.unpack(body))
        return b""

    def _op_tie(self, c: Conn, body: memoryview) -> bytes:
        size = protocol.SLOT_REQ.size
        if not body or len(body) % size:
            raise ProtocolError("tie body is not a whole, non-zero number of entries")
        for i in range(0, len(body), size):
            self.tie(c, *protocol.SLOT_REQ.unpack_from(body, i))
        return b""

    def _op_abort(self, c: Conn, body: memoryview) -> bytes:
        slot, gen = protocol.SLOT_REQ.unpack(body)
        r = self.reserved.get(slot)
        if r is None or r[0] != c.cid or r[1] != gen:
            raise StaleRef(f"slot {slot} generation {gen} is not reserved by this client")
        self._settle_reservation(slot, gen, abort=True)
        return b""

    def _op_hello(self, c: Conn, body: memoryview) -> bytes:
        claimed, c.token = protocol.HELLO_REQ.unpack(body)
        # The kernel's word for who the peer is, not the claim (0 when it lives in a pid namespace
        # this agent cannot see: then the claim is only shown in logs).
        c.peer_pid = holders.peer_pid(c.sock)
        c.peer_start = holders.start_time(c.peer_pid) if c.peer_pid else 0
        c.pid = c.peer_pid or claimed
        c.greeted = True
        self._ungreeted.pop(c.cid, None)
        return protocol.json_body(self.hello(c))

    def _op_lease(self, c: Conn, body: memoryview) -> bytes:
        if body:
            raise ProtocolError("lease takes no body")
        return protocol.LEASE_REP.pack(*self._new_lease(c))

    def _op_fallback(self, c: Conn, body: memoryview) -> bytes:
        (n,) = protocol.COUNT_REQ.unpack(body)
        if not 1 <= n <= protocol.MAX_FALLBACK_COUNT:
            raise ProtocolError(f"fallback count {n} outside 1..{protocol.MAX_FALLBACK_COUNT}")
        self.fallbacks += n
        return b""

    def _op_stats(self, c: Conn, body: memoryview) -> bytes:
        return protocol.json_body(self.stats())

    def stats(self) -> dict[str, Any]:
        """The region's figures plus the socket's bounds at work."""
        out = super().stats()
        out["buffered_bytes"] = self.buffered
        out["dropped"] = dict(self.dropped)
        return out

    def _op_list(self, c: Conn, body: memoryview) -> bytes:
        return protocol.json_body(self.list_objects())

    def _op_health(self, c: Conn, body: memoryview) -> bytes:
        health = {"ok": True, "ready": self.ready, "region": self.region, "epoch": self.epoch}
        return protocol.json_body(health)

    def hello(self, c: Conn) -> dict[str, Any]:
        cfg = self.cfg
        try:
            lease: tuple[int, int] | None = self._new_lease(c)
        except StoreFull:
            lease = None
        return {
            "version": layout.VERSION, "pool": cfg.pool, "backend": cfg.backend, "device": cfg.device,
            "slice_offset": cfg.slice_offset, "slice_size": cfg.slice_size, "region": self.region,
            "region_size": cfg.region_size, "epoch": self.epoch, "lease": lease,
            "format_id": self.geom.format_id,
            "coherence": resolve_mode(cfg.coherence, cfg.backend),
            # Inherited pin leases recorded with this client's token: its again (region.reclaim_leases).
            "reclaimed": self.reclaim_leases(c), "lease_reclaim_s": cfg.lease_reclaim_s,
        }  # fmt: skip


def _restrict(path: str, mode: int) -> None:
    """Open ``path`` to the pod's user and group only: mode ``mode``, group AGENT_GID (the id the
    injection runs the agent and the Ray container with). Best effort: a folder the agent does not
    own (an emptyDir made by the kubelet) keeps its mode, and the socket's own mode still holds."""
    with contextlib.suppress(OSError):
        os.chmod(path, mode)
    if os.getgid() != AGENT_GID:
        with contextlib.suppress(OSError):
            os.chown(path, -1, AGENT_GID)


def _serve_refusing(cfg: Config, reason: str, retry_after_s: float) -> int:
    """A region the agent refuses (the pool rule, a path that is not this pool's pool file) is served
    degraded, like any other start failure: the startup probe passes and Ray starts, every client is
    refused with the reason and falls back to Ray's own store, ``gismo health`` says why, and after
    ``retry_after_s`` the agent exits so the kubelet retries (a device that appears later is used)."""
    log.error("agent refuses to serve region %d (Ray pods use Ray's own object store)", cfg.region)
    return serve_degraded(cfg.socket, reason, retry_after_s)


def run(cfg: Config, *, force_format: bool = False, degraded_retry_s: float = DEFAULT_RETRY_AFTER_S) -> int:
    """Entry point used by ``gismo agent``: build, optionally serve metrics, serve until SIGTERM.

    A region the agent refuses (a configuration or pool the pool rule refuses, a path that is not
    this pool's Gismo pool file: see RegionOwner._check_target), and any other start failure (its
    socket, a bug), is served degraded for ``degraded_retry_s`` seconds (see
    :mod:`gismo.daemon.degraded`): Ray starts on its own object store, the reason is one
    ``gismo health`` away, and the agent then exits so the kubelet retries it.
    """
    try:
        cfg.validate()
    except ConfigError as exc:
        return _serve_refusing(cfg, str(exc), degraded_retry_s)
    try:
        agent = Agent(cfg, force_format=force_format)
    except (RegionRefused, CoherenceUnavailable) as exc:  # CoherenceUnavailable: `flush` memory, no flushes
        return _serve_refusing(cfg, str(exc), degraded_retry_s)
    except GismoError as exc:  # e.g. the region is served by another agent: exit, a restart retries
        log.error("%s", exc)
        return 2
    except OSError as exc:
        log.error("agent cannot start: %s", os.strerror(exc.errno or errno.EIO))
        return 2
    try:
        agent.listen()
    except GismoError as exc:
        return serve_degraded(cfg.socket, str(exc), degraded_retry_s)
    except OSError as exc:
        return serve_degraded(
            cfg.socket, f"agent cannot start: {os.strerror(exc.errno or errno.EIO)}", degraded_retry_s
        )
    except Exception as exc:  # a bug must not keep Ray waiting either: say it, serve degraded
        log.exception("agent cannot start")
        return serve_degraded(
            cfg.socket, f"agent cannot start: {type(exc).__name__}: {exc}", degraded_retry_s
        )
    if cfg.metrics_port:
        from .metrics import serve_http

        serve_http(agent, cfg.metrics_port)
    log.info("agent serving region %d on %s", agent.region, cfg.socket)
    print(json.dumps({"event": "ready", "region": agent.region, "socket": cfg.socket}), flush=True)
    agent.serve()
    return 0


def serve_degraded(socket_path: str, reason: str, retry_after_s: float) -> int:
    """Answer on ``socket_path`` as a degraded agent (see :mod:`gismo.daemon.degraded`); the exit status."""
    log.error("%s", reason)
    if retry_after_s <= 0:
        return 2
    degraded = DegradedAgent(socket_path, reason)
    try:
        degraded.listen()
    except (GismoError, OSError) as exc:
        log.error("cannot serve degraded either: %s", exc)
        return 2
    with contextlib.suppress(ValueError):  # not the main thread: the caller handles signals
        signal.signal(signal.SIGTERM, degraded.stop)
        signal.signal(signal.SIGINT, degraded.stop)
    return degraded.serve(retry_after_s)
