"""The client: put through the pod's agent, get straight from the mapping.

``put`` costs one socket round trip (CREATE), one memcpy per buffer into the region, a local seal
and a one-way notice. ``get`` costs no message at all: read the slot under its seqlock, pin the
object in this pod's own region, re-check the slot, and wrap the bytes in read-only views. Objects
of every region in the slice are readable; only this pod's region is ever written.

``create``/``create_array`` split put in two: the reservation hands out a writable numpy array
over the reserved extent (header already written), the caller fills it in place, and ``seal``
publishes it (no copy at all); ``abort``, an exception in the ``with`` block, or the writer's
death frees it unseen. Readers see the slot RESERVED until the seal, so a half-written object is
never readable.

A Client is thread safe (one lock around the socket and the pin bookkeeping). Views returned by
``get`` keep their pin until the last of them is garbage collected; ``close()`` waits for that
before releasing the pins (the socket is closed when the last view goes).

A Client survives a restart of its agent: a watcher thread notices the agent hang up and
reconnects (every RECONNECT_PAUSE_S while the agent is down), saying HELLO with the token the
client drew once; the restarted agent then gives back the pin leases recorded with that token,
so views held across the restart keep their pins (daemon/holders.py). The agent keeps those leases
for ``lease_reclaim_s`` (default 10 s) after it starts; a client that stays away longer (frozen,
or its agent down for good) loses them, and its views are then no longer protected from reuse.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import select
import socket
import threading
import time
import weakref
from collections.abc import Iterable
from typing import Any

import numpy as np

from . import crashpoints
from .config import Config
from .config import load as load_config
from .daemon import protocol
from .errors import (
    AgentUnavailable,
    CorruptRegion,
    GismoError,
    ObjectNotFound,
    StaleRef,
    StoreFull,
    error_from_code,
)
from .memory import layout
from .memory.layout import LEASE, SEALED, Geometry
from .memory.mapping import SliceMapping
from .memory.serialize import BYTES, Encoded, decode, encode, plan_array, write, write_header
from .ref import Ref

SEAL_BATCH = 1024  # seal notices sent at the latest after this many puts
REQUEST_TIMEOUT = 60.0  # seconds; the agent answers in microseconds unless it is stuck
CONNECT_RETRY_S = 2.0  # how long connect retries while the agent's listen backlog is full
#: While its agent is down, the watcher tries to reconnect this often: far below the agent's
#: lease_reclaim_s (10 s), so a living client claims its pin leases back in time.
RECONNECT_PAUSE_S = 0.25
#: How long the watcher waits for a hang-up before re-checking that its client is still in use.
WATCH_POLL_S = 1.0
log = logging.getLogger("gismo.client")
# layout's precompiled records, bound once: the get path reads a slot twice and writes a pin.
_SEQ = layout.SLOT_SEQ
_SLOT = layout.SLOT
_write_pin = layout.write_pin
_clear_pin = layout.clear_pin
_write_counters = layout.write_counters
_CRASH = crashpoints.ARMED  # test seam (crashpoints.py): False unless GISMO_TEST_CRASH_AT is set


def _crash_before_copy(enc: Encoded, rw: memoryview, off: int) -> None:
    """Test seam (crashpoints.py): die holding a reservation, before or halfway through the copy."""
    crashpoints.reached("put-reserved")
    if crashpoints.due("put-mid-copy"):
        write_header(enc, rw, off)
        if enc.places:
            (pos, n), buf = enc.places[0], enc.buffers[0]
            rw[off + pos : off + pos + n // 2] = buf[: n // 2]
        crashpoints.now()


class _Release:
    """Drops one get's pin, once (called by the last view's finaliser, or on a failed get)."""

    __slots__ = ("client", "key")

    def __init__(self, client: Client, key: tuple[int, int, int]) -> None:
        self.client: Client | None = client
        self.key = key

    def __call__(self) -> None:
        c, self.client = self.client, None
        if c is not None:
            c._unpin(self.key)


class Pending:
    """An object reserved by ``Client.create``/``create_array`` and being written in place.

    ``array`` (also ``buffer``) is a writable numpy array over this pod's own region. The object
    is invisible to every reader until ``seal()``; ``abort()`` frees it. As a context manager it
    seals on a clean exit and aborts when the block raises. After seal or abort the array is made
    read-only; views derived from it earlier stay writable but must not be written to (after an
    abort the space is reused by other objects; after a seal readers expect the bytes to stay).
    Only the process that created it may seal it (one writer per byte).
    """

    __slots__ = ("_client", "_lock", "array", "epoch", "gen", "offset", "ref", "size", "slot", "state")

    def __init__(
        self, client: Client, slot: int, gen: int, off: int, size: int, array: np.ndarray, epoch: int
    ) -> None:
        self._client = client
        self.epoch = epoch  # of the agent that made the reservation: only it may see it sealed
        self._lock = threading.Lock()
        self.slot, self.gen, self.offset, self.size = slot, gen, off, size
        self.array = array
        self.ref: Ref | None = None
        self.state = "open"  # open -> sealed | aborted

    @property
    def buffer(self) -> np.ndarray:
        return self.array

    @property
    def nbytes(self) -> int:
        return int(self.array.nbytes)

    def would_be_ref(self) -> Ref:
        """The Ref this object will have once sealed (for tests: it is not readable before)."""
        return Ref(self._client.region, self.slot, self.gen, self.offset, self.size)

    def seal(self) -> Ref:
        with self._lock:
            if self.state == "sealed" and self.ref is not None:
                return self.ref
            if self.state != "open":
                raise GismoError(f"object r{self._client.region}/s{self.slot} was {self.state}; cannot seal")
            c = self._client
            c._check_pid()
            try:
                c._seal_slot(self.slot, self.gen, self.offset, self.size, self.epoch)
            except BaseException:
                self._abort_locked()
                raise
            self.state = "sealed"
            c._queue_seal(self.slot, self.gen)
            self.array.flags.writeable = False
            self.ref = Ref(c.region, self.slot, self.gen, self.offset, self.size)
            return self.ref

    def abort(self) -> None:
        with self._lock:
            if self.state == "open":
                self._abort_locked()

    def _abort_locked(self) -> None:
        self.state = "aborted"
        self.array.flags.writeable = False
        self._client._abort_slot(self.slot, self.gen)

    def __enter__(self) -> Pending:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.seal()
        else:
            self.abort()

    def __repr__(self) -> str:
        return f"<gismo.Pending r{self._client.region}/s{self.slot}@g{self.gen} {self.size} B {self.state}>"


def connect(socket_path: str | None = None, **env: Any) -> Client:
    """Connect to this pod's agent. ``socket_path`` defaults to ``GISMO_SOCKET``; other keywords
    override ``GISMO_*`` variables (``device=...``, ``GISMO_DEVICE=...``). Raises AgentUnavailable."""
    if socket_path is not None:
        env["socket"] = socket_path
    return Client(load_config(env))


class Client:
    """A connection to the local agent plus the slice mapping. See module docstring for costs."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._lock = threading.RLock()
        self._sock: socket.socket | None = None
        self._rbuf = bytearray()
        self._pending = bytearray()  # one-way notice frames not yet sent
        self._seals = bytearray()  # SLOT_REQ bodies of puts sealed since the last message
        self._stash: dict[int, list[tuple[int, int, int]]] = {}
        self._batch: dict[int, int] = {}
        self._closed = False
        self._pid = os.getpid()
        self._pinned: dict[tuple[int, int, int], list[int]] = {}  # key -> [entry, count]
        self._free_pins: list[int] = []
        self._counter_pos = -1
        self._gets = 0
        self._copy_rejections = 0  # checked copies refused because the slot changed during the copy
        self._geoms: dict[int, Geometry] = {}
        #: Drawn once, sent with every HELLO: how a restarted agent knows this client's leases.
        self._token = secrets.randbits(64) or 1
        self._leases: set[int] = set()  # indices of the pin leases this client writes
        self._lost = ""  # why this client can no longer reconnect ("" while it can)
        self._sock, info = self._hello()
        self.info = info
        self.region: int = int(info["region"])
        self.epoch: int = int(info["epoch"])
        device = cfg.device or str(info["device"])
        try:
            # The agent says what the memory is and needs (its GISMO_* came from the same webhook);
            # the client's own GISMO_COHERENCE, when set, wins.
            self.map = SliceMapping(
                device, int(info["slice_offset"]), int(info["slice_size"]), int(info["region_size"]),
                self.region, prefault=True, backend=str(info.get("backend") or cfg.backend),
                coherence=cfg.coherence or str(info.get("coherence") or ""),
            )  # fmt: skip
        except BaseException:
            self._sock.close()
            self._sock = None
            raise
        assert self.map.rw_view is not None
        self._rw = self.map.rw_view
        self._ro = self.map.view
        self._addr = self.map.address
        self._keep = self.map.keepalive()
        self.region_size = self.map.region_size
        self.geom = self._geometry(self.region)
        self._pin_off = self.geom.pin_off
        self._add_lease(info.get("lease"))
        threading.Thread(
            target=_watch, args=(weakref.ref(self),), name="gismo-client-watch", daemon=True
        ).start()

    # ---- socket -------------------------------------------------------------------------------
    def _hello(self) -> tuple[socket.socket, dict[str, Any]]:
        """Connect and say HELLO on a new socket: (socket, the agent's answer). The client's state is
        not touched (the watcher reconnects with it, outside the lock)."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # A hung agent must surface as AgentUnavailable (the Ray layer then falls back), not a hang.
        s.settimeout(REQUEST_TIMEOUT)
        deadline = time.monotonic() + CONNECT_RETRY_S
        while True:
            try:
                s.connect(self.cfg.socket)
                break
            except BlockingIOError:
                # The agent's listen backlog is full (a burst or a flood of connections): it drains it
                # continuously, so try again for a moment before falling back to Ray.
                if time.monotonic() < deadline:
                    time.sleep(0.005)
                    continue
                s.close()
                raise AgentUnavailable(f"Gismo agent at {self.cfg.socket}: its backlog stayed full") from None
            except OSError as exc:
                s.close()
                raise AgentUnavailable(f"no Gismo agent at {self.cfg.socket}: {exc.strerror or exc}") from exc
        try:
            s.sendall(protocol.frame(protocol.HELLO, protocol.HELLO_REQ.pack(os.getpid(), self._token)))
            rep = protocol.recv_frame(s)
        except OSError as exc:
            s.close()
            raise AgentUnavailable(f"agent connection lost: {exc}") from exc
        if rep[0] != protocol.OK:
            s.close()
            raise error_from_code(rep[0], rep[1:].decode(errors="replace"))
        info: dict[str, Any] = json.loads(rep[1:])
        return s, info

    # ---- reconnection (the watcher thread) --------------------------------------------------------
    def _watched_fd(self) -> int | None:
        """The socket the watcher waits on; None to reconnect; -1 when there is nothing to keep."""
        with self._lock:
            if self._lost or (self._closed and not self._pinned) or self._pid != os.getpid():
                return -1
            return None if self._sock is None else self._sock.fileno()

    def _hung_up(self, fd: int) -> None:
        """The agent closed our connection (it died or restarted): drop it; the watcher reconnects."""
        with self._lock:
            s = self._sock
            if s is not None and s.fileno() == fd:
                self._sock = None
                s.close()

    def _reconnect(self) -> bool:
        """One attempt to reconnect and claim this client's pin leases back; False: try again later."""
        try:
            s, info = self._hello()
        except GismoError:
            return False  # down, or degraded: the agent retries its region, so do we
        same = all(info.get(k) == self.info.get(k) for k in ("region", "format_id", "slice_offset", "device"))
        with self._lock:
            if self._sock is not None or self._lost:
                s.close()
                return True
            kept = {int(i) for i in info.get("reclaimed") or ()}
            lost = self._leases - kept
            self._forget_leases(lost)
            if not same:
                # A region formatted anew: nothing this client knew of it holds any more.
                s.close()
                self._lost = "the agent formatted its region anew; reconnect with gismo.connect()"
                return True
            self._sock = s
            self._rbuf.clear()
            self._pending.clear()
            self._seals.clear()
            self._stash.clear()  # reservations of the previous agent: void (its recovery frees them)
            self.info = info
            self.epoch = int(info["epoch"])
            self._add_lease(info.get("lease"))
        if lost:
            log.warning("Gismo agent restarted and kept %d of this client's pin leases (%d lost: not "
                        "claimed within %s s); views over them may see their bytes reused", len(kept),
                        len(lost), info.get("lease_reclaim_s"))  # fmt: skip
        return True

    def _forget_leases(self, lost: set[int]) -> None:
        """Stop writing leases the agent no longer gives this client (lock held): their free entries
        go, and pins held in them are no longer cleared by this client (another may own the entry)."""
        if not lost:
            return
        self._leases -= lost
        self._free_pins = [e for e in self._free_pins if e // LEASE not in lost]
        for e in self._pinned.values():
            if e[0] >= 0 and e[0] // LEASE in lost:
                e[0] = -1
        if (
            self._counter_pos >= 0
            and (self._counter_pos - self.geom.counter_off) // layout.COUNTER_SIZE in lost
        ):
            self._counter_pos = -1

    def _call(self, op: int, body: bytes = b"") -> bytes:
        """One request/reply round trip; raises the agent's error or AgentUnavailable."""
        with self._lock:
            rep = self._exchange(protocol.frame(op, body), 1)[0]
        if rep[0] != protocol.OK:
            raise error_from_code(rep[0], rep[1:].decode(errors="replace"))
        return rep[1:]

    def _exchange(self, frames: bytes, replies: int) -> list[bytes]:
        """Send queued notices plus ``frames``, then read ``replies`` reply payloads (lock held)."""
        s = self._sock
        if s is None:
            raise AgentUnavailable(
                self._lost or ("client is closed" if self._closed else "agent connection lost")
            )
        out: list[bytes] = []
        try:
            if self._pending or self._seals:
                frames = self._take_notices() + frames
            s.sendall(frames)
            buf = self._rbuf
            while len(out) < replies:
                if len(buf) >= 4:
                    (n,) = protocol.LEN.unpack_from(buf, 0)
                    if len(buf) >= 4 + n:
                        out.append(bytes(buf[4 : 4 + n]))
                        del buf[: 4 + n]
                        continue
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionResetError("agent closed the connection")
                buf += chunk
        except OSError as exc:
            raise AgentUnavailable(f"agent connection lost: {exc}") from exc
        return out

    def _take_notices(self) -> bytes:
        """Queued notices as frames (seals batched into one SEAL_MANY frame); clears the queues."""
        out = bytes(self._pending)
        if self._seals:
            out += protocol.frame(protocol.SEAL_MANY, bytes(self._seals), noreply=True)
        self._pending = bytearray()
        self._seals = bytearray()
        return out

    def _notify(self, op: int, body: bytes) -> None:
        """Queue a one-way notice; it leaves with the next request (one syscall saved per put)."""
        with self._lock:
            self._pending += protocol.frame(op, body, noreply=True)
            if len(self._pending) > 1 << 16:
                self._flush_notices()

    def _flush_notices(self) -> None:
        with self._lock:
            if (self._pending or self._seals) and self._sock is not None:
                data = self._take_notices()
                try:
                    self._sock.sendall(data)
                except OSError as exc:
                    raise AgentUnavailable(f"agent connection lost: {exc}") from exc

    # ---- put ----------------------------------------------------------------------------------
    def put(self, obj: Any) -> Ref:
        """Store ``obj`` in this pod's region; returns its Ref. StoreFull when it does not fit.

        Cost: one round trip (CREATE, carrying the previous put's seal notice), one memcpy per buffer.
        The object is sealed in shared memory before this returns, so the ref is valid everywhere
        at once; the agent's own bookkeeping learns of the seal with this client's next message.
        AgentUnavailable when the agent restarted before or during the seal (no ref is returned
        that the restarted agent may not keep).
        """
        self._check_pid()
        enc = encode(obj)
        n = enc.size
        slot, gen, off, epoch = self._reserve_current(n)
        if _CRASH:
            _crash_before_copy(enc, self._rw, off)
        try:
            write(enc, self._rw, off)
            self._seal_slot(slot, gen, off, n, epoch)
        except BaseException:
            self._abort_slot(slot, gen)
            raise
        self._queue_seal(slot, gen)
        if _CRASH and crashpoints.due("put-sealed"):
            self._flush_notices()
            crashpoints.now()
        return Ref(self.region, slot, gen, off, n)

    def _reserve_current(self, n: int) -> tuple[int, int, int, int]:
        """Reserve ``n`` bytes, refusing a reservation the agent's current epoch does not own;
        (slot, generation, offset, that epoch).

        A restarted agent bumps the epoch and keeps its predecessor's reservations quarantined for
        orphan_grace_s, then frees them: a reservation of an older epoch (e.g. from the small-object
        stash) must never be written, and one written meanwhile never sealed. The epoch is the one
        this client knew before reserving: the watcher may reconnect (and learn a newer one) meanwhile.
        """
        epoch = self.epoch
        slot, gen, off = self._reserve(n)
        if layout.read_run(self._rw, 0)[0] != epoch:
            self._abort_slot(slot, gen)
            raise AgentUnavailable("agent restarted; this client's reservations are void, reconnect")
        return slot, gen, off, epoch

    def _abort_slot(self, slot: int, gen: int) -> None:
        """Give a reservation back; an agent that is gone frees it itself (best effort)."""
        with contextlib.suppress(GismoError):
            self._call(protocol.ABORT, protocol.SLOT_REQ.pack(slot, gen))

    def _check_pid(self) -> None:
        if self._pid != os.getpid():
            raise GismoError("this Client belongs to the parent process; call gismo.connect() after fork")

    def _reserve(self, n: int) -> tuple[int, int, int]:
        """A reservation of ``n`` bytes in this pod's region: (slot, generation, offset)."""
        if n <= layout.SMALL_MAX:
            slot, gen, off = self._reserve_small(n)
        else:
            rep = self._call(protocol.CREATE, protocol.CREATE_REQ.pack(n))
            slot, gen, off = protocol.CREATE_REP.unpack(rep)
        g = self.geom
        if off < g.data_off or off + n > g.region_size:
            raise CorruptRegion(f"agent handed out extent {off}+{n} outside the data area")
        return slot, gen, off

    def _seal_slot(self, slot: int, gen: int, off: int, n: int, epoch: int) -> None:
        """Seal a reservation of agent epoch ``epoch``, written, in shared memory (the caller aborts
        if this raises)."""
        rw = self._rw
        self.map.flush(off, n)  # the data is in shared memory before the seal can be
        if layout.read_run(rw, 0)[0] != epoch:
            raise AgentUnavailable("agent restarted during put; object discarded")
        pos = self.geom.slot_off + slot * layout.SLOT_SIZE
        layout.write_seal(rw, pos, n)
        self.map.flush(pos, layout.SLOT_SIZE)
        # Read again after the seal store. A restarted agent writes its new epoch before it scans the
        # slot table, so an unchanged epoch means its scan (if one comes) finds this slot SEALED and
        # keeps it. A changed one means the restart overlapped the seal: the scan may have caught the
        # slot mid-seal and retired it (recovery never serves an interrupted seal), so the ref might
        # be dead on arrival and is not returned (tests/agent/daemon/test_restart_races.py).
        if layout.read_run(rw, 0)[0] != epoch:
            raise AgentUnavailable("agent restarted while the object was being sealed; it is not returned")

    def _queue_seal(self, slot: int, gen: int) -> None:
        """Queue the seal notice; it leaves with this client's next message (batched)."""
        with self._lock:
            self._seals += protocol.SLOT_REQ.pack(slot, gen)
            if len(self._seals) >= SEAL_BATCH * protocol.SLOT_REQ.size:
                self._flush_notices()

    # ---- create in place ----------------------------------------------------------------------
    def create(self, nbytes: int) -> Pending:
        """Reserve an object of ``nbytes`` raw bytes and hand out a writable view of it.

        Write ``pending.buffer`` (a writable uint8 numpy array over this pod's region), then
        ``seal`` it: ``get`` returns a read-only memoryview, as for a put of ``bytes``. Nothing is
        copied. Until sealed the object is invisible to every reader (its slot stays RESERVED); if
        this process dies first, the agent frees the space. StoreFull when it does not fit.
        """
        if nbytes < 0:
            raise ValueError("nbytes must be >= 0")
        return self._create(Encoded(BYTES, b"", [], [int(nbytes)]), None)

    def create_array(self, shape: int | tuple[int, ...], dtype: Any = np.uint8) -> Pending:
        """Reserve a C-contiguous numpy array of ``shape``/``dtype`` in this pod's region.

        ``pending.array`` is a writable array over the region (uninitialised: whatever bytes the
        extent held). After ``seal`` the object is exactly what ``put`` of such an array stores
        (same header), so ``get`` anywhere returns a read-only view with that dtype and shape.
        Cost: one agent round trip (no round trip for arrays up to 64 KiB, as with put) and no copy.
        ValueError for dtypes with Python objects or fields (put those instead).

        Usage::

            with client.create_array((1024, 1024), np.float32) as p:
                p.array[:] = 1.0   # an exception here aborts the object
            ref = p.ref            # sealed on a clean exit
        """
        shp = (int(shape),) if isinstance(shape, int | np.integer) else tuple(int(d) for d in shape)
        dt = np.dtype(dtype)
        return self._create(plan_array(shp, dt), (shp, dt))

    def _create(self, enc: Encoded, array: tuple[tuple[int, ...], np.dtype[Any]] | None) -> Pending:
        self._check_pid()
        n = enc.size
        slot, gen, off, epoch = self._reserve_current(n)
        rw = self._rw
        try:
            write_header(enc, rw, off)
            pos, length = enc.places[0]
            data = np.frombuffer(rw, np.uint8, length, off + pos)
            view: np.ndarray = data if array is None else data.view(array[1]).reshape(array[0])
        except BaseException:
            self._abort_slot(slot, gen)
            raise
        return Pending(self, slot, gen, off, n, view, epoch)

    def seal(self, pending: Pending) -> Ref:
        """Seal an object made by ``create``/``create_array``: it becomes readable everywhere, and
        ``pending.array`` read-only. Returns its Ref (also ``pending.ref``). Cost: no round trip
        (the seal notice leaves with this client's next message), as for put."""
        return pending.seal()

    def abort(self, pending: Pending) -> None:
        """Give up an object made by ``create``/``create_array``; its space is freed (one round trip)."""
        pending.abort()

    def _reserve_small(self, n: int) -> tuple[int, int, int]:
        """A reservation from this client's stash for the size class of ``n`` (a power of two ≥ 256).

        The stash is refilled with one CREATE_MANY round trip for 4, then 8, ... up to 256
        reservations, so a steady stream of small puts needs about one round trip per 256 objects.
        Cost: up to 2x space for an object just above a power of two; unused reservations are
        released when the client disconnects.
        """
        cls = max(256, 1 << (n - 1).bit_length())
        with self._lock:
            stash = self._stash.get(cls)
            if not stash:
                count = self._batch.get(cls, 4)
                rep = self._call(protocol.CREATE_MANY, protocol.CREATE_MANY_REQ.pack(cls, count))
                stash = [
                    protocol.CREATE_REP.unpack_from(rep, i)
                    for i in range(0, len(rep), protocol.CREATE_REP.size)
                ]
                stash.reverse()
                self._stash[cls] = stash
                # Grow the batch up to 256, but never let one class's stash hold more than 1/64 of
                # the data area (small regions would otherwise be mostly stashed away).
                cap = max(4, min(256, self.geom.data_size // (cls * 64)))
                self._batch[cls] = min(cap, count * 2)
            return stash.pop()

    # ---- get ----------------------------------------------------------------------------------
    def _geometry(self, region: int) -> Geometry:
        g = self._geoms.get(region)
        if g is None:
            if not 0 <= region < self.map.regions:
                raise ObjectNotFound(f"region {region} is outside this slice ({self.map.regions} regions)")
            base = self.map.region_base(region)
            self.map.invalidate(base, layout.HEADER_SIZE)
            g = Geometry.unpack_header(self._ro, base, region, self.region_size)
            self._geoms[region] = g
        return g

    def _locate(self, ref: Any) -> tuple[int, int, int, int, int, int]:
        """Validate a ref's shape and bounds; (region, slot, gen, offset, size, slot position)."""
        try:
            region, slot, gen, off, size = ref
            if type(region) is not int or type(slot) is not int or type(off) is not int:
                region, slot, gen, off, size = (int(x) for x in ref)
        except (TypeError, ValueError) as exc:
            raise ObjectNotFound(f"not a Gismo ref: {ref!r}") from exc
        g = self._geoms.get(region) or self._geometry(region)
        if not 0 <= slot < g.slots:
            raise ObjectNotFound(f"slot {slot} does not exist in region {region}")
        if size <= 0 or off < g.data_off or off + size > g.region_size:
            raise ObjectNotFound(f"ref points outside region {region}'s data area")
        return region, slot, gen, off, size, region * self.region_size + g.slot_off + slot * layout.SLOT_SIZE

    def _check(self, pos: int, region: int, slot: int, gen: int, off: int, size: int) -> int:
        """One read of the slot; returns its (even) seq when it names exactly this sealed object.

        This is the first half of the seqlock: the caller re-reads seq after pinning and accepts the
        fields only if it is unchanged, so a torn read here is caught there.
        """
        invalidate = self.map.invalidate
        for _ in range(10000):
            invalidate(pos, layout.SLOT_SIZE)
            seq, sgen, state, _f, soff, slen, _t = _SLOT.unpack_from(self._ro, pos)
            if not seq & 1:
                break
        else:
            raise StaleRef(f"slot {slot} of region {region} is being rewritten")
        if sgen != gen or state != SEALED:
            raise StaleRef(
                f"object r{region}/s{slot}@g{gen} is gone (slot is {layout.STATE_NAMES.get(state, state)}"
                f" at generation {sgen})"
            )
        if soff != off or slen != size:
            raise StaleRef(f"ref r{region}/s{slot}@g{gen} does not match its slot (forged or damaged)")
        return int(seq)

    def get(self, ref: Ref) -> Any:
        """The object, as read-only views over the shared mapping (numpy array, memoryview, or the
        unpickled object whose buffers are views). No message to any agent. Raises StaleRef when the
        object was deleted or its slot reused, ObjectNotFound for refs that name nothing."""
        region, slot, gen, off, size, pos = self._locate(ref)
        for _attempt in range(3):
            seq = self._check(pos, region, slot, gen, off, size)
            key = (region, slot, gen)
            try:
                self._pin(key)
            except StoreFull:
                return self._get_copy(pos, region, slot, gen, off, size)
            # Re-check after the pin is published: an unchanged, even seq means the fields we checked
            # were consistent and the owner had not started deleting when we pinned, so it will see
            # our pin before it reclaims anything (see daemon/region.py, "Delete protocol").
            self.map.invalidate(pos, layout.SLOT_SIZE)
            if _SEQ.unpack_from(self._ro, pos)[0] == seq:
                break
            self._unpin(key)
        else:
            raise StaleRef(f"object r{region}/s{slot}@g{gen} keeps changing under the reader")
        release = _Release(self, key)
        try:
            base = region * self.region_size + off
            self.map.invalidate(base, size)
            obj = decode(self._ro, self._addr, base, size, self._keep, release)
        except BaseException:
            release()
            raise
        with self._lock:  # one writer of the counter record, and no lost increments across threads
            self._gets += 1
            if self._counter_pos >= 0:
                _write_counters(self._rw, self._counter_pos, self._gets, 0)
        return obj

    def _get_copy(self, pos: int, region: int, slot: int, gen: int, off: int, size: int) -> Any:
        """No pin entry left for this client: copy the object out under the seqlock instead.

        Without a pin the owner may reclaim the object once it is deleted, so the bytes are copied
        and accepted only if the slot's seq did not move meanwhile. Cost: one copy of the object.
        """
        seq = self._check(pos, region, slot, gen, off, size)
        base = region * self.region_size + off
        self.map.invalidate(base, size)
        data = np.frombuffer(self._ro, np.uint8, size, base).copy()
        self.map.invalidate(pos, layout.SLOT_SIZE)
        if _SEQ.unpack_from(self._ro, pos)[0] != seq:
            with self._lock:
                self._copy_rejections += 1
            raise StaleRef(f"object r{region}/s{slot}@g{gen} changed while being copied")
        return decode(data, data.ctypes.data, 0, size, data, None)

    def contains(self, ref: Ref) -> bool:
        """True when ``ref`` names a sealed, undeleted object (local check, no message)."""
        try:
            region, slot, gen, off, size, pos = self._locate(ref)
            self._check(pos, region, slot, gen, off, size)
        except GismoError:
            return False
        return True

    # ---- pins ---------------------------------------------------------------------------------
    def _add_lease(self, lease: Any) -> None:
        if not lease:
            return
        first, index = int(lease[0]), int(lease[1])
        with self._lock:
            self._leases.add(index)
            self._free_pins.extend(range(first + LEASE - 1, first - 1, -1))
            if self._counter_pos < 0:
                self._counter_pos = self.geom.counter_pos(index)

    def _pin(self, key: tuple[int, int, int]) -> None:
        with self._lock:
            e = self._pinned.get(key)
            if e is not None:
                e[1] += 1
                return
            if self._pid != os.getpid():
                # A forked child shares our socket and pin lease: two writers on one lease would break
                # the one-writer rule. It must connect() itself.
                raise GismoError("this Client belongs to the parent process; call gismo.connect() after fork")
            if not self._free_pins:
                rep = self._call(protocol.LEASE)
                self._add_lease(protocol.LEASE_REP.unpack(rep))
            entry = self._free_pins.pop()
            pos = self._pin_off + entry * layout.PIN_SIZE
            _write_pin(self._rw, pos, key[0], key[1], key[2])
            self.map.flush(pos, layout.PIN_SIZE)
            self._pinned[key] = [entry, 1]

    def _unpin(self, key: tuple[int, int, int]) -> None:
        with self._lock:
            e = self._pinned.get(key)
            if e is None:
                return
            e[1] -= 1
            if e[1]:
                return
            del self._pinned[key]
            if e[0] < 0:  # its lease was not given back after an agent restart: no longer ours
                if self._closed and not self._pinned:
                    self._finish_close()
                return
            pos = self._pin_off + e[0] * layout.PIN_SIZE
            try:
                _clear_pin(self._rw, pos)
            except (ValueError, TypeError):  # mapping already released at interpreter exit
                return
            self.map.flush(pos, layout.PIN_SIZE)
            self._free_pins.append(e[0])
            if self._closed and not self._pinned:
                self._finish_close()

    @property
    def pins(self) -> int:
        """Objects this client currently pins (views alive)."""
        return len(self._pinned)

    # ---- the rest -----------------------------------------------------------------------------
    def delete(self, ref: Ref) -> None:
        """Delete an object of this pod's region. Readers holding views keep them valid; the space is
        reused once every view is gone. StaleRef if it was already deleted."""
        region, slot, gen, _off, _size, _pos = self._locate(ref)
        if region != self.region:
            raise GismoError(f"object {ref!r} belongs to region {region}; only its own pod can delete it")
        body = protocol.DELETE_REQ.pack(region, slot, gen)
        if _CRASH and crashpoints.due("delete-sent"):
            self._flush_notices()
            assert self._sock is not None
            self._sock.sendall(protocol.frame(protocol.DELETE, body))
            crashpoints.now()
        self._call(protocol.DELETE, body)

    def delete_many(self, refs: Iterable[Ref]) -> int:
        """Delete many objects of this pod's region in one pipelined exchange; returns how many were
        deleted (refs already gone are skipped, not errors). Cost: one round trip for the batch."""
        body = bytearray()
        count = 0
        for ref in refs:
            region, slot, gen, _off, _size, _pos = self._locate(ref)
            if region != self.region:
                raise GismoError(f"object {ref!r} belongs to region {region}; only its own pod can delete it")
            body += protocol.frame(protocol.DELETE, protocol.DELETE_REQ.pack(region, slot, gen))
            count += 1
        if not count:
            return 0
        deleted = 0
        with self._lock:
            for rep in self._exchange(bytes(body), count):
                if rep[0] == protocol.OK:
                    deleted += 1
                elif rep[0] not in (ObjectNotFound.code, StaleRef.code):
                    raise error_from_code(rep[0], rep[1:].decode(errors="replace"))
        return deleted

    def tie(self, refs: Iterable[Ref]) -> None:
        """Have the agent delete these objects of this pod's region when this client's connection
        closes (its process exits or dies), unless they were deleted before. Cost: one round trip."""
        body = bytearray()
        for ref in refs:
            region, slot, gen, _off, _size, _pos = self._locate(ref)
            if region != self.region:
                raise GismoError(f"object {ref!r} belongs to region {region}; only its own pod can tie it")
            body += protocol.SLOT_REQ.pack(slot, gen)
        if body:
            self._call(protocol.TIE, bytes(body))

    def stats(self) -> dict[str, Any]:
        """The agent's counters for this region plus this client's own."""
        st: dict[str, Any] = json.loads(self._call(protocol.STATS))
        st["client"] = {
            "pins": len(self._pinned), "gets": self._gets, "pid": os.getpid(),
            "copy_rejections": self._copy_rejections,
            "coherence": self.map.coherence,
        }  # fmt: skip
        return st

    def list(self) -> list[Ref]:
        """Refs of every sealed object in this pod's region."""
        return [Ref(*r) for r in json.loads(self._call(protocol.LIST))]

    def health(self) -> dict[str, Any]:
        h: dict[str, Any] = json.loads(self._call(protocol.HEALTH))
        return h

    def note_fallback(self, count: int = 1) -> None:
        """Tell the agent the caller used Ray's own store instead (counted in gismo_fallbacks)."""
        with contextlib.suppress(GismoError):
            self._notify(protocol.FALLBACK, protocol.COUNT_REQ.pack(count))

    def close(self) -> None:
        """Stop using the agent. Pins held by live views stay until those views are collected."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if not self._pinned:
                self._finish_close()

    def _finish_close(self) -> None:
        with contextlib.suppress(GismoError):
            self._flush_notices()
        s, self._sock = self._sock, None
        if s is not None:
            s.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<gismo.Client region={self.region} socket={self.cfg.socket!r}>"


def _watch(ref: weakref.ref[Client]) -> None:
    """The watcher of one Client: wait for its agent to hang up, then reconnect (see the module doc).

    Holds the client only weakly between steps, so an unused client is still garbage collected. The
    wait is a poll for POLLRDHUP alone: replies arriving on the socket do not wake it.
    """
    while True:
        c = ref()
        if c is None:
            return
        fd = c._watched_fd()
        if fd == -1:
            return
        if fd is None:
            ok = c._reconnect()
            del c
            if not ok:
                time.sleep(RECONNECT_PAUSE_S)
            continue
        del c
        p = select.poll()
        p.register(fd, select.POLLRDHUP)
        try:
            events = p.poll(WATCH_POLL_S * 1000)
        except OSError:
            events = []
        if any(ev & (select.POLLRDHUP | select.POLLHUP | select.POLLERR) for _fd, ev in events):
            c = ref()
            if c is not None:
                c._hung_up(fd)
            del c
