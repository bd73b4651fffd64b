"""The agent daemon's socket server: one Unix socket, one thread, frames in, replies out.

One thread runs the socket loop (selectors, no asyncio: ~2x less overhead per message) and hands
each request to the region owner (region.py); an optional HTTP thread (metrics.py) only reads
counters for Prometheus and probes. A malformed request gets an error reply; a client that never
reads its replies is cut off once its backlog passes MAX_BACKLOG.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import selectors
import signal
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from ..config import Config
from ..errors import GismoError, ProtocolError, StaleRef, StoreFull
from ..memory import layout
from . import protocol
from .conn import Conn
from .degraded import DEFAULT_RETRY_AFTER_S, DegradedAgent
from .region import RegionOwner

log = logging.getLogger("gismo.agent")

MAX_BACKLOG = 16 << 20  # unsent reply bytes tolerated per connection


class Agent(RegionOwner):
    """Owns one region and serves it. Build with a validated Config; ``serve()`` runs until SIGTERM."""

    def __init__(self, cfg: Config, *, force_format: bool = False) -> None:
        super().__init__(cfg, force_format=force_format)
        self._next_cid = 1
        self._stop = False
        self.ready = False
        self.sel: selectors.BaseSelector | None = None
        self.listener: socket.socket | None = None
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
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
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
        ls.bind(path)
        with contextlib.suppress(OSError):
            os.chmod(path, 0o666)  # the Ray container may run under another uid
        ls.listen(256)
        ls.setblocking(False)
        self.listener = ls
        self.sel = selectors.DefaultSelector()
        self.sel.register(ls, selectors.EVENT_READ, None)
        self.ready = True

    def stop(self, *_: Any) -> None:
        self._stop = True

    def serve(self) -> None:
        """Run until stop(); SIGTERM and SIGINT stop it cleanly (region stays; socket removed)."""
        if self.listener is None:
            self.listen()
        assert self.sel is not None
        with contextlib.suppress(ValueError):  # not the main thread: caller handles signals
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        try:
            while not self._stop:
                timeout = min(0.1, max(0.0, self._next_due - time.monotonic()))
                for key, mask in self.sel.select(timeout):
                    if key.data is None:
                        self._accept()
                    elif mask & selectors.EVENT_READ:
                        self._on_read(key.data)
                    elif mask & selectors.EVENT_WRITE:
                        self._flush_out(key.data)
                if self._next_due <= time.monotonic():
                    self._maintain(time.monotonic())
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Stop serving. Clients' reservations stay RESERVED in memory on purpose: a client that is
        still alive may be writing into one, so only the next agent's recovery (which quarantines
        them for orphan_grace_s) may free them; sealed ones are simply kept."""
        self.ready = False
        for c in list(self.conns.values()):
            self.conns.pop(c.cid, None)
            c.sock.close()
        if self.listener is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.cfg.socket)
            self.listener.close()
            self.listener = None
        if self.sel is not None:
            self.sel.close()
            self.sel = None
        with contextlib.suppress(ValueError, TypeError):
            layout.write_run(self.rw, 0, self.epoch, os.getpid(), 1)
        log.info("agent for region %d stopped", self.region)

    def _accept(self) -> None:
        assert self.listener is not None and self.sel is not None
        while True:
            try:
                s, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("accept: %s", exc)
                return
            s.setblocking(False)
            c = Conn(s, self._next_cid)
            self._next_cid += 1
            self.conns[c.cid] = c
            self.sel.register(s, selectors.EVENT_READ, c)

    def _on_read(self, c: Conn) -> None:
        try:
            data = c.sock.recv(1 << 18)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(c)
            return
        try:
            frames = c.reader.feed(data)
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
                log.warning("client %d (pid %d) does not read its replies; closing it", c.cid, c.pid)
                self._close(c)

    def _flush_out(self, c: Conn) -> None:
        assert self.sel is not None
        try:
            n = c.sock.send(c.out)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            self._close(c)
            return
        del c.out[:n]
        with contextlib.suppress(KeyError, ValueError):
            self.sel.modify(c.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if c.out else 0), c)

    def _close(self, c: Conn) -> None:
        if self.conns.pop(c.cid, None) is None:
            return
        if self.sel is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(c.sock)
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
        (c.pid,) = protocol.HELLO_REQ.unpack(body)
        return protocol.json_body(self.hello(c))

    def _op_lease(self, c: Conn, body: memoryview) -> bytes:
        if body:
            raise ProtocolError("lease takes no body")
        return protocol.LEASE_REP.pack(*self._new_lease(c))

    def _op_fallback(self, c: Conn, body: memoryview) -> bytes:
        (n,) = protocol.COUNT_REQ.unpack(body)
        self.fallbacks += n
        return b""

    def _op_stats(self, c: Conn, body: memoryview) -> bytes:
        return protocol.json_body(self.stats())

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
        }  # fmt: skip


def run(cfg: Config, *, force_format: bool = False, degraded_retry_s: float = DEFAULT_RETRY_AFTER_S) -> int:
    """Entry point used by ``gismo agent``: build, optionally serve metrics, serve until SIGTERM.

    An agent that cannot serve its region (a missing device, a foreign pool file, a region its
    tables do not fit, a bug) serves degraded for ``degraded_retry_s`` seconds instead of exiting,
    so the sidecar's startup probe passes and Ray starts on its own object store (see
    :mod:`gismo.daemon.degraded`); ``degraded_retry_s`` 0 exits at once with status 2.
    """
    try:
        agent = Agent(cfg, force_format=force_format)
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
