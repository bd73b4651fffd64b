"""The region owner: the one writer of its region's metadata (slots, allocator, leases, reclaim).

It maps the slice, formats its region (first start, or a region left by another pod) or recovers it
(a restart of the same pod). Everything that allocates, deletes or reclaims goes through here; reads
never do (clients validate and pin on their own). It holds no socket: server.py feeds it requests.

Put protocol (one round trip): CREATE reserves a slot and an extent and hands the slot to the caller
(state RESERVED, written by the agent); the client writes the object, flips the slot to SEALED
itself under the slot's seqlock (it is the slot's one writer while it holds it), and sends a
one-way SEAL notice. Until the agent processes that notice it treats the memory slot as the truth.

Delete protocol: DELETE flips SEALED to DELETING (readers now refuse it), and the slot joins a
pending list. After ``grace_ms`` the agent scans the pin tables of every region in the slice and
frees the extent only when no pin names (slot, generation). The grace period covers a reader whose
pin store was still in flight when the DELETING store landed (store→load ordering without fences):
a reader pins first, then re-checks the slot, so any reader that accepted the object has a pin
visible long before the scan.
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import stat
import struct
import time
from collections import deque
from typing import Any

import numpy as np

from .. import crashpoints
from ..config import Config
from ..contract import BACKEND_DEVDAX
from ..errors import CorruptRegion, GismoError, ObjectNotFound, ProtocolError, StaleRef, StoreFull
from ..memory import layout, poolfile
from ..memory.layout import DELETING, FREE, LEASE, RESERVED, SEALED, Geometry
from ..memory.mapping import OPEN_HINT, SliceMapping
from . import holders
from .alloc import Allocator
from .conn import Conn

log = logging.getLogger("gismo.agent")

SLOT_DTYPE = layout.slot_dtype()
_CRASH = crashpoints.ARMED  # test seam (crashpoints.py): False unless GISMO_TEST_CRASH_AT is set


class RegionRefused(GismoError):
    """The configured path or region is not this agent's to write (the message names the path)."""


class RegionOwner:
    """Owns one region's metadata. Create with a validated Config (server.Agent adds the socket)."""

    def __init__(self, cfg: Config, *, force_format: bool = False) -> None:
        self.cfg = cfg.validate()
        self.region = cfg.region
        self._not_pool_file = ""  # why the file is not a pool file (for the refusal to format)
        #: Why this agent may format a region that carries no Gismo header ("" when it may not).
        self._may_format = self._check_target()
        self._lock_fd = self._lock_region()
        self.map = SliceMapping(
            cfg.device, cfg.slice_offset, cfg.slice_size, cfg.region_size, cfg.region, allocate=True,
            backend=cfg.backend, coherence=cfg.coherence,
        )  # fmt: skip
        assert self.map.rw_view is not None
        self.rw = self.map.rw_view
        self.started = time.time()
        self.puts = self.deletes = self.store_full = self.fallbacks = self.closed_gets = 0
        self.tied_reclaimed = 0  # objects deleted because the connection that tied them closed
        # slot -> (conn id, generation, offset, taken): reservations handed to clients, by the agent's
        # own record (the client may write the slot; the agent frees by this record, never by memory)
        self.reserved: dict[int, tuple[int, int, int, int]] = {}
        # DELETING objects: (slot, generation, due, delay); a pinned one is re-checked with backoff
        self.pending: deque[tuple[int, int, float, float]] = deque()
        self._next_due = float("inf")
        # RESERVED slots left by a previous agent: (slot, generation, due, offset, taken)
        self.orphans: list[tuple[int, int, float, int, int]] = []
        self.sealed = 0
        self.sealed_bytes = 0
        self.reserved_bytes = 0  # extents handed to clients and not yet sealed (in-flight puts, stashes)
        self.recovered: dict[str, int] = {}
        self.lease_recovery: dict[str, int] = {"held": 0, "dead_holders": 0, "reclaimed": 0, "unclaimed": 0}
        #: Inherited leases by their holder's token (see reclaim_leases), and until when (monotonic) a
        #: holder the agent cannot identify may still claim its leases back.
        self.held_tokens: dict[int, set[int]] = {}
        self.reclaim_until = 0.0
        self.geom = self._format_or_recover(force_format)
        # the connections holding reservations and leases, by id (filled by the server)
        self.conns: dict[int, Conn] = {}

    # ---- region setup -------------------------------------------------------------------------
    def _check_target(self) -> str:
        """Refuse any path that is not ours to write: the agent never destroys what is not its own.

        A devdax backend must be an existing character device (never created: opening is done
        without O_CREAT). A file backend must be an existing regular file (never a symlink, never
        grown): either a Gismo pool file of this pool (gismo.memory.poolfile, made by the node component),
        whose capacity holds the slice, or a file whose regions already carry Gismo headers (checked
        again before formatting, see _format_or_recover). Returns why formatting a header-less region
        is allowed, "" when it is not. Raises GismoError naming the path otherwise.
        """
        cfg = self.cfg
        path = cfg.device
        end = cfg.slice_offset + cfg.slice_size
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            what = "DAX device" if cfg.backend == BACKEND_DEVDAX else "pool file"
            raise RegionRefused(f"{path}: no such {what}; the agent never creates one") from None
        except OSError as exc:
            raise RegionRefused(f"{path}: cannot inspect it ({exc.strerror})") from exc
        if cfg.backend == BACKEND_DEVDAX:
            if not stat.S_ISCHR(st.st_mode):
                raise RegionRefused(f"{path}: not a character device, refusing to use it as a DAX device")
            return "a DAX device given to this pod"
        if not stat.S_ISREG(st.st_mode):
            raise RegionRefused(f"{path}: not a regular file, refusing to use it as a pool file")
        try:
            marker = poolfile.check_pool_file(path, cfg.pool)
        except poolfile.PoolFileError as exc:
            if poolfile.read_marker(path) is not None:  # another pool's file: never ours
                raise RegionRefused(f"{exc}; refusing to use it") from None
            if st.st_size < end:
                raise RegionRefused(
                    f"{exc}; refusing to use it (and it is too small for the slice)"
                ) from None
            self._not_pool_file = str(exc)
            return ""
        if end > marker.capacity:
            raise RegionRefused(
                f"{path}: the pool file of {cfg.pool!r} holds {marker.capacity} bytes, "
                f"the slice ends at {end}"
            )
        return f"the Gismo pool file of pool {cfg.pool!r}"

    def _lock_region(self) -> int:
        """Exclusive byte-range lock on our region: two agents on one region would corrupt it.

        The kernel drops it when the agent dies (even by SIGKILL), so a restart can take it at once;
        it works across pods of one node (same kernel), not across hosts. Cost: one fcntl call.
        """
        cfg = self.cfg
        try:
            fd = os.open(cfg.device, os.O_RDWR | os.O_NOFOLLOW)  # never creates: see _check_target
        except OSError as exc:
            raise GismoError(
                f"cannot open {cfg.device}: {exc.strerror}{OPEN_HINT.get(cfg.backend, '')}"
            ) from exc
        start = cfg.slice_offset + cfg.region * cfg.region_size
        try:
            # An open-file-description lock: unlike lockf(), closing another fd of the same file
            # (mapping.py does) does not drop it. struct flock: type, whence, start, len, pid.
            flock = struct.pack("@hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, start, cfg.region_size, 0)
            fcntl.fcntl(fd, getattr(fcntl, "F_OFD_SETLK", 37), flock)
        except OSError as exc:
            os.close(fd)
            raise GismoError(
                f"region {cfg.region} of {cfg.device} is already served by another agent"
            ) from exc
        return fd

    def _slots(self) -> Any:
        g = self.geom
        return np.frombuffer(self.rw, SLOT_DTYPE, g.slots, g.slot_off)

    def _format_or_recover(self, force: bool) -> Geometry:
        cfg = self.cfg
        try:
            old = Geometry.unpack_header(self.rw, 0, cfg.region, cfg.region_size)
        except CorruptRegion as exc:
            old = None
            if "no Gismo header" not in str(exc) and not force:
                log.warning("region %d: %s; formatting it", cfg.region, exc)
        if old is not None and not force and old.owner == cfg.identity:
            self.geom = old
            self._recover()
            return old
        if old is None and not self._may_format:
            # Neither a pool file of ours nor a region of ours: formatting would destroy someone's data.
            raise RegionRefused(
                f"{cfg.device}: refusing to format region {cfg.region}: it carries no Gismo region header "
                f"and {self._not_pool_file}"
            )
        if old is not None:
            self._wait_for_foreign_pins(old)
        return self._format()

    def _wait_for_foreign_pins(self, old: Geometry) -> None:
        """Before reformatting a region that held another pod's objects, let readers finish.

        Readers in other regions may still hold views (and pins) on the previous owner's objects;
        formatting would change bytes under them. Wait up to ``format_wait_s`` for those pins to go,
        then format anyway (a reader that outlives that sees new bytes, never a crash).
        """
        me = self.region + 1
        deadline = time.monotonic() + self.cfg.format_wait_s
        while True:
            n = 0
            for r in range(self.map.regions):
                if r == self.region:
                    continue
                base = self.map.region_base(r)
                self.map.invalidate(base, layout.HEADER_SIZE)
                try:
                    g = Geometry.unpack_header(self.map.ro, base, r, self.cfg.region_size)
                except CorruptRegion:
                    continue
                self.map.invalidate(base + g.pin_off, g.pins * layout.PIN_SIZE)
                t = np.frombuffer(self.map.ro, layout.pin_dtype(), g.pins, base + g.pin_off)
                n += int(np.count_nonzero(t["region"] == me))
            if not n:
                return
            if time.monotonic() >= deadline:
                log.warning(
                    "region %d: formatting although %d pins from other regions remain", self.region, n
                )
                return
            log.info("region %d: waiting for %d pins on the previous owner's objects before formatting",
                     self.region, n)  # fmt: skip
            time.sleep(0.25)

    def _format(self) -> Geometry:
        cfg = self.cfg
        g = Geometry.compute(cfg.region, cfg.region_size, cfg.slots, cfg.pin_entries,
                             format_id=random.getrandbits(63), owner=cfg.identity)  # fmt: skip
        self.geom = g
        rw = self.rw
        # Kill the old magic first: a crash mid-format leaves memory that no reader accepts.
        rw[0 : layout.HEADER_SIZE] = bytes(layout.HEADER_SIZE)
        slots = self._slots()
        slots[:] = np.zeros(1, SLOT_DTYPE)
        # Random starting generations: refs into the region's previous life can never match.
        slots["generation"] = np.uint64(random.getrandbits(40) << 20)
        np.frombuffer(rw, np.uint8, g.data_off - g.pin_off, g.pin_off)[:] = 0
        layout.write_run(rw, 0, 1, os.getpid(), 0)
        rw[0 : len(g.pack_header())] = g.pack_header()
        self.map.flush(0, g.data_off)
        self.alloc = Allocator(g.data_off, g.data_size)
        self.free_slots = list(range(g.slots - 1, -1, -1))
        self.free_leases = list(range(g.leases - 1, -1, -1))
        self.held_leases: set[int] = set()
        self.epoch = 1
        self.recovered = {"formatted": 1}
        log.info("region %d formatted: %d slots, %d pin entries, %d data bytes", g.region, g.slots, g.pins,
                 g.data_size)  # fmt: skip
        return g

    def _recover(self) -> None:
        """Rebuild in-memory state from the tables; half-written objects never become visible."""
        g = self.geom
        rw = self.rw
        epoch, _pid, _clean = layout.read_run(rw, 0)
        self.epoch = epoch + 1
        layout.write_run(rw, 0, self.epoch, os.getpid(), 0)
        slots = self._slots()
        now = time.monotonic()
        used: list[tuple[int, int, int]] = []
        kept = dropped = orphaned = deleting = 0
        busy = np.nonzero((slots["state"] != FREE) | (slots["seq"] & 1).astype(bool))[0]
        for s in busy.tolist():
            pos = g.slot_pos(s)
            seq, gen, state, _f, off, length, taken = layout.read_slot_raw(rw, pos)
            sane = g.in_data(off, taken) and length <= taken and taken > 0
            if not sane:
                layout.write_slot(rw, pos, gen + 1, FREE, 0, 0, 0, 0)
                dropped += 1
                continue
            if seq & 1:
                # Interrupted transition: either a seal by a client whose put never returned, or a
                # delete. Neither object may be served; readers that pinned it before stay safe.
                state = DELETING if state in (SEALED, DELETING) else RESERVED
                layout.write_slot(rw, pos, gen, state, 0, off, length, taken)
            used.append((off, taken, s))
            if state == SEALED:
                kept += 1
                self.sealed += 1
                self.sealed_bytes += length
            elif state == DELETING:
                deleting += 1
                self.pending.append((s, gen, now, self.cfg.grace_ms / 1000))
                self._next_due = now
            else:
                orphaned += 1
                self.orphans.append((s, gen, now + self.cfg.orphan_grace_s, off, taken))
                self._next_due = min(self._next_due, now + self.cfg.orphan_grace_s)
        used.sort()
        good: list[tuple[int, int]] = []
        end = 0
        for off, taken, s in used:
            if off < end:  # overlapping extents: metadata damage; drop the later one
                layout.write_slot(rw, g.slot_pos(s), int(slots["generation"][s]) + 1, FREE, 0, 0, 0, 0)
                dropped += 1
                continue
            good.append((off, taken))
            end = off + taken
        self.alloc = Allocator.from_used(g.data_off, g.data_size, good)
        # Publish the slots rewritten above (an interrupted delete that other nodes may still see
        # SEALED, damaged slots now FREE): one flush of the slot table, once per start.
        self.map.flush(g.slot_off, g.slots * layout.SLOT_SIZE)
        in_use = {s for _o, _t, s in used}
        states = slots["state"]
        self.free_slots = [s for s in range(g.slots - 1, -1, -1) if s not in in_use and states[s] == FREE]
        # Leases with live entries may belong to clients of the previous agent that still hold views;
        # leases with a holder token, to clients that will reconnect and claim them (reclaim_leases).
        pins = np.frombuffer(rw, layout.pin_dtype(), g.pins, g.pin_off)
        tokens = np.frombuffer(rw, layout.counters_dtype(), g.leases, g.counter_off)["holder_token"]
        busy_leases = set((np.nonzero(pins["region"])[0] // LEASE).tolist())
        busy_leases.update(np.nonzero(tokens)[0].tolist())
        self.held_leases = busy_leases
        self.free_leases = [i for i in range(g.leases - 1, -1, -1) if i not in busy_leases]
        for i in busy_leases:
            if tokens[i]:
                self.held_tokens.setdefault(int(tokens[i]), set()).add(i)
        self.reclaim_until = time.monotonic() + self.cfg.lease_reclaim_s
        reaped = self._reap_held_leases()
        self.recovered = {"kept": kept, "dropped": dropped, "orphaned": orphaned, "deleting": deleting}
        # Inherited pin leases: still held (by a live holder, or awaiting its reconnection), freed
        # because their holder is gone; later also claimed back by their holder, or never claimed.
        self.lease_recovery = {"held": len(self.held_leases), "dead_holders": reaped, "reclaimed": 0,
                               "unclaimed": 0}  # fmt: skip
        log.info("region %d recovered (epoch %d): %s, leases %s", g.region, self.epoch, self.recovered,
                 self.lease_recovery)  # fmt: skip

    def _new_lease(self, c: Conn) -> tuple[int, int]:
        if not self.free_leases and self.held_leases:
            self._reap_held_leases()
        if not self.free_leases:
            raise StoreFull("no free pin lease in this region")
        i = self.free_leases.pop()
        c.leases.append(i)
        self._record_holder(c, i)
        return i * LEASE, i

    def _record_holder(self, c: Conn, i: int) -> None:
        """Who holds lease ``i``, for the next agent: a lease outlives this agent, never its holder."""
        cpos = self.geom.counter_pos(i)
        layout.write_holder(self.rw, cpos, c.peer_pid, c.peer_start, c.token)
        self.map.flush(cpos, layout.COUNTER_SIZE)

    def reclaim_leases(self, c: Conn) -> list[int]:
        """Give connection ``c`` the inherited leases recorded with its token (its HELLO); returns them.

        A client of the previous agent that is still alive reconnects and says HELLO with the token it
        drew once; from then on those leases are tied to its new connection like any other (freed when
        the kernel closes it, in whatever pid namespace the client lives). Cost: one dict lookup and
        one holder record written per lease given back.
        """
        mine = self.held_tokens.pop(c.token, None) if c.token else None
        if not mine:
            return []
        out = sorted(mine & self.held_leases)
        for i in out:
            self.held_leases.discard(i)
            c.leases.append(i)
            self._record_holder(c, i)
        self.lease_recovery["reclaimed"] += len(out)
        return out

    def _reap_held_leases(self) -> int:
        """Free leases inherited from a previous agent once their holder dropped every pin, or is gone;
        returns how many holders were found gone.

        A holder is gone when its recorded pid and start time name no live process (pids are reused:
        the start time tells them apart), or, when the agent could not see its pid (another pid
        namespace), when it did not claim its lease back within ``lease_reclaim_s`` of this agent's
        start (reclaim_leases). A visible holder that still runs keeps a lease it still pins in
        (checked again every server.LEASE_CHECK_S). Cost: one read of the lease's 64 pins and at most
        one /proc read per held lease.
        """
        g = self.geom
        pins = np.frombuffer(self.rw, layout.pin_dtype(), g.pins, g.pin_off)
        window_open = time.monotonic() < self.reclaim_until
        dead = 0
        for i in list(self.held_leases):
            pinned = bool(pins["region"][i * LEASE : (i + 1) * LEASE].any())
            pid, start, token = layout.read_holder(self.rw, g.counter_pos(i))
            alive = holders.alive(pid, start)
            # A visible holder that runs keeps a lease it pins in; within the window, any holder that
            # may still claim its lease back keeps it, even without pins: it may pin into its free
            # entries before it reconnects, and one lease has one writer.
            if (alive and pinned) or (alive is not False and window_open and (pinned or token)):
                continue
            if pinned:
                if alive is None:
                    self.lease_recovery["unclaimed"] += 1
                    log.info("region %d: pin lease %d: its holder (pid not visible here) did not claim "
                             "it back within %g s; freeing its pins", self.region, i,
                             self.cfg.lease_reclaim_s)  # fmt: skip
                else:
                    log.info("region %d: pin lease %d: its holder (pid %d) is gone; freeing its pins",
                             self.region, i, pid)  # fmt: skip
                dead += 1
            self.held_leases.discard(i)
            self._drop_lease(i)
        if not self.held_leases:
            self.held_tokens.clear()
        return dead

    def _drop_lease(self, i: int) -> None:
        """A client is gone: its pins and requests go with it (the agent is now the lease's writer)."""
        g = self.geom
        pos = g.pin_pos(i * LEASE)
        self.rw[pos : pos + LEASE * layout.PIN_SIZE] = layout.EMPTY_PIN * LEASE
        cpos = g.counter_pos(i)
        gets, _fb = layout.read_counters(self.rw, cpos)
        self.closed_gets += gets
        self.rw[cpos : cpos + layout.COUNTER_SIZE] = bytes(layout.COUNTER_SIZE)
        self.map.flush(pos, LEASE * layout.PIN_SIZE)
        self.free_leases.append(i)

    def create(self, c: Conn, n: int) -> tuple[int, int, int]:
        """Reserve a slot and ``n`` bytes for the caller; it writes them, then seals."""
        if n <= 0 or n > self.geom.data_size:
            if n > self.geom.data_size:
                self.store_full += 1
                raise StoreFull(
                    f"object of {n} bytes exceeds the region's {self.geom.data_size}-byte data area"
                )
            raise ProtocolError(f"cannot create an object of {n} bytes")
        ext = self.alloc.alloc(n)
        if ext is None and self.pending:
            # Deleted objects may free enough; waiting out their grace (≤ grace_ms) beats StoreFull.
            wait = min(p[2] for p in self.pending) - time.monotonic()
            if wait > 0:
                time.sleep(min(wait, self.cfg.grace_ms / 1000))
            self._maintain(time.monotonic())
            ext = self.alloc.alloc(n)
        if ext is None:
            self.store_full += 1
            raise StoreFull(
                f"region {self.region} has no free extent of {n} bytes "
                f"({self.alloc.free_bytes} free, largest {self.alloc.largest_free})"
            )
        if not self.free_slots:
            self.alloc.free(*ext)
            self.store_full += 1
            raise StoreFull(f"region {self.region} has no free slot ({self.geom.slots} in use)")
        slot = self.free_slots.pop()
        pos = self.geom.slot_pos(slot)
        gen = layout.read_generation(self.rw, pos) + 1
        off, taken = ext
        # Not flushed: readers on other nodes refuse a RESERVED slot as they refuse the FREE one
        # they may still see, and the seal flushes this whole slot line (coherence.py).
        layout.write_slot(self.rw, pos, gen, RESERVED, 0, off, n, taken)
        if _CRASH:
            crashpoints.reached("agent-create")
        self.reserved[slot] = (c.cid, gen, off, taken)
        self.reserved_bytes += taken
        c.reserved.add(slot)
        return slot, gen, off

    def create_many(self, c: Conn, n: int, count: int) -> list[tuple[int, int, int]]:
        """Up to ``count`` reservations of ``n`` bytes each, for a client's small-object stash.

        Each is an ordinary reservation (own slot, own extent), so sealing, aborting, crash recovery
        and quarantine treat it exactly like one from CREATE. The extents are cut from one allocation
        and the slots written with three vectorised stores (seq odd, fields, seq even), so a batch of
        64 costs about as much as two single creates. Returns at least one or raises StoreFull.
        """
        if not 0 < n <= layout.SMALL_MAX or not 0 < count <= 256:
            raise ProtocolError(f"create_many of {count} x {n} bytes is out of range")
        each, _align = Allocator.rounded(n)
        k = min(count, len(self.free_slots))
        ext = None
        while k > 1 and ext is None:
            ext = self.alloc.alloc(each * k)
            if ext is None:
                k //= 2
        if ext is None:
            return [self.create(c, n)]  # one, with the full wait-for-reclaim and StoreFull logic
        off0, total = ext
        if total > each * k:
            self.alloc.free(off0 + each * k, total - each * k)
        slots = [self.free_slots.pop() for _ in range(k)]
        idx = np.array(slots, dtype=np.intp)
        t = self._slots()
        odd = t["seq"][idx] | np.uint64(1)
        gens = t["generation"][idx] + np.uint64(1)
        offs = off0 + np.arange(k, dtype=np.uint64) * np.uint64(each)
        t["seq"][idx] = odd
        t["generation"][idx] = gens
        t["state"][idx] = RESERVED
        t["flags"][idx] = 0
        t["offset"][idx] = offs
        t["length"][idx] = n
        t["alloc"][idx] = each
        t["seq"][idx] = odd + np.uint64(1)  # not flushed: see create
        out = []
        for slot, gen, off in zip(slots, gens.tolist(), offs.tolist(), strict=True):
            self.reserved[slot] = (c.cid, gen, off, each)
            self.reserved_bytes += each
            c.reserved.add(slot)
            out.append((slot, gen, off))
        return out

    def seal(self, c: Conn, slot: int, gen: int) -> None:
        """The client finished writing (and normally sealed the slot in memory already).

        The hot path of the agent (one call per put): one slot read, no allocation.
        """
        r = self.reserved.get(slot)
        if r is None or r[0] != c.cid or r[1] != gen:
            raise StaleRef(f"slot {slot} generation {gen} is not reserved by this client")
        pos = self.geom.slot_off + slot * layout.SLOT_SIZE
        seq, sgen, state, _f, off, length, taken = layout.read_slot_raw(self.rw, pos)
        if seq & 1 or sgen != gen or state not in (RESERVED, SEALED):
            raise StaleRef(f"slot {slot} changed under its reservation")
        if off != r[2] or taken != r[3] or not 0 < length <= taken:
            # The client may only set the length inside its extent: anything else is refused.
            self._settle_reservation(slot, gen, abort=True)
            raise ProtocolError(f"slot {slot} was sealed with an extent the agent did not hand out")
        if state == RESERVED:
            layout.write_state(self.rw, pos, SEALED)
            self.map.flush(pos, layout.SLOT_SIZE)
        del self.reserved[slot]
        self.reserved_bytes -= taken
        self.sealed += 1
        self.sealed_bytes += length
        self.puts += 1
        c.reserved.discard(slot)
        if _CRASH:
            crashpoints.reached("agent-seal")

    def _adopt(self, slot: int, length: int) -> None:
        self.reserved_bytes -= self.reserved.pop(slot)[3]
        self.sealed += 1
        self.sealed_bytes += length
        self.puts += 1

    def _settle_reservation(self, slot: int, gen: int, abort: bool = False) -> None:
        """A reservation whose holder left: keep it if it was sealed in memory, otherwise free it."""
        cid, _g, off, taken = self.reserved[slot]
        c = self.conns.get(cid)
        if c is not None:
            c.reserved.discard(slot)
        pos = self.geom.slot_pos(slot)
        s = layout.read_slot_stable(self.rw, pos, tries=1)
        if (
            not abort and s is not None and s.generation == gen and s.state == SEALED
            and s.offset == off and s.alloc_size == taken and 0 < s.length <= taken
        ):  # fmt: skip
            self._adopt(slot, s.length)
            return
        del self.reserved[slot]
        self.reserved_bytes -= taken
        self._free_slot(slot, off, taken)

    def _slot_state(self, slot: int) -> int:
        return layout.read_state(self.rw, self.geom.slot_pos(slot))

    def _free_slot(self, slot: int, off: int | None = None, taken: int | None = None) -> None:
        pos = self.geom.slot_pos(slot)
        _seq, gen, _st, _f, moff, _n, mtaken = layout.read_slot_raw(self.rw, pos)
        if off is None or taken is None:
            off, taken = moff, mtaken
        # Not flushed: other nodes already refuse the DELETING (or RESERVED) state this replaces.
        layout.write_slot(self.rw, pos, gen, FREE, 0, 0, 0, 0)
        if taken:
            self.alloc.free(off, taken)
        self.free_slots.append(slot)

    def delete(self, region: int, slot: int, gen: int) -> None:
        """Mark an object of this region deleted; its space returns once no pin names it."""
        if region != self.region:
            raise ObjectNotFound(f"region {region} is not this agent's region {self.region}")
        if not 0 <= slot < self.geom.slots:
            raise ObjectNotFound(f"slot {slot} does not exist")
        pos = self.geom.slot_pos(slot)
        s = layout.read_slot_stable(self.rw, pos)
        if s is None or s.generation != gen or s.state not in (SEALED, RESERVED):
            raise StaleRef(f"object r{region}/s{slot}@g{gen} no longer exists")
        if slot in self.reserved:
            if s.state != SEALED:
                raise ObjectNotFound(f"object r{region}/s{slot}@g{gen} is not sealed yet")
            # Sealed in memory, seal notice still in flight: settle it now (validates the extent).
            self._settle_reservation(slot, gen)
            if slot in self.reserved or self._slot_state(slot) != SEALED:
                raise StaleRef(f"object r{region}/s{slot}@g{gen} no longer exists")
        layout.write_state(self.rw, pos, DELETING)
        self.map.flush(pos, layout.SLOT_SIZE)
        if _CRASH:
            crashpoints.reached("agent-delete")
        self.sealed -= 1
        self.sealed_bytes -= s.length
        self.deletes += 1
        grace = self.cfg.grace_ms / 1000
        due = time.monotonic() + grace
        self.pending.append((slot, gen, due, grace))
        self._next_due = min(self._next_due, due)

    def tie(self, c: Conn, slot: int, gen: int) -> None:
        """Delete object (slot, gen) of this region when connection ``c`` closes (see protocol.TIE).

        Only a sealed object can be tied (one whose seal notice is still in flight is settled first,
        as for delete). A later delete makes the tie stale: the close then finds the generation gone
        and skips it. Cost: one slot read.
        """
        if not 0 <= slot < self.geom.slots:
            raise ObjectNotFound(f"slot {slot} does not exist")
        if slot in self.reserved:
            self._settle_reservation(slot, gen)
        s = layout.read_slot_stable(self.rw, self.geom.slot_pos(slot))
        if s is None or s.generation != gen or s.state != SEALED or slot in self.reserved:
            raise StaleRef(f"object r{self.region}/s{slot}@g{gen} is not a sealed object; cannot tie it")
        c.tied[slot] = gen

    def drop_tied(self, c: Conn) -> int:
        """Delete what ``c`` tied (its process is gone); objects already deleted are skipped."""
        n = 0
        for slot, gen in c.tied.items():
            try:
                self.delete(self.region, slot, gen)
                n += 1
            except GismoError:
                pass
        c.tied.clear()
        self.tied_reclaimed += n
        return n

    # ---- reclaim ------------------------------------------------------------------------------
    def _maintain(self, now: float) -> None:
        """Free deleted objects no pin names; settle orphans whose quarantine expired.

        One scan of every pin table serves all due objects. A still-pinned object is re-checked
        with exponential backoff (grace .. 0.25 s), so a long-held view costs a few scans a second,
        not a busy loop.
        """
        due = [p for p in self.pending if p[2] <= now]
        orphans_due = [o for o in self.orphans if o[2] <= now]
        if not due and not orphans_due:
            self._reschedule()
            return
        pinned = self.scan_pins()
        if due:
            keep: deque[tuple[int, int, float, float]] = deque(p for p in self.pending if p[2] > now)
            for slot, gen, _t, delay in due:
                if (slot, gen) in pinned:
                    delay = min(0.25, delay * 2)
                    keep.append((slot, gen, now + delay, delay))
                else:
                    self._free_slot(slot)
            self.pending = keep
        for o in orphans_due:
            slot, gen, _t, off, taken = o
            self.orphans.remove(o)
            s = layout.read_slot_stable(self.rw, self.geom.slot_pos(slot), tries=1)
            if (
                s is not None and s.generation == gen and s.state == SEALED and s.offset == off
                and s.alloc_size == taken and 0 < s.length <= taken
            ):  # fmt: skip
                # A client of the previous agent finished its put after the restart: keep it.
                self.sealed += 1
                self.sealed_bytes += s.length
                self.puts += 1
            elif (slot, gen) in pinned:
                self.orphans.append((slot, gen, now + self.cfg.orphan_grace_s, off, taken))
            else:
                self._free_slot(slot, off, taken)
        self._reschedule()

    def _reschedule(self) -> None:
        dues = [p[2] for p in self.pending] + [o[2] for o in self.orphans]
        self._next_due = min(dues) if dues else float("inf")

    def scan_pins(self) -> set[tuple[int, int]]:
        """(slot, generation) of this region's objects pinned anywhere in the slice.

        Reads every formatted region's pin table (vectorised; ~0.1 ms per 64K entries). A region whose
        header does not validate is skipped: it has no agent that could have leased pins.
        """
        pins: set[tuple[int, int]] = set()
        me = self.region + 1
        ro = self.map.ro
        for r in range(self.map.regions):
            base = self.map.region_base(r)
            self.map.invalidate(base, layout.HEADER_SIZE)
            try:
                g = Geometry.unpack_header(ro, base, r, self.cfg.region_size)
            except CorruptRegion:
                continue
            self.map.invalidate(base + g.pin_off, g.pins * layout.PIN_SIZE)
            t = np.frombuffer(ro, layout.pin_dtype(), g.pins, base + g.pin_off)
            m = t["region"] == me
            if m.any():
                pins.update(zip(t["slot"][m].tolist(), t["generation"][m].tolist(), strict=True))
        return pins

    # ---- introspection ------------------------------------------------------------------------
    def gets(self) -> int:
        g = self.geom
        c = np.frombuffer(self.rw, layout.counters_dtype(), g.leases, g.counter_off)
        return self.closed_gets + int(c["gets"].sum())

    def stats(self) -> dict[str, Any]:
        g = self.geom
        return {
            "region": self.region, "epoch": self.epoch, "pool": self.cfg.pool, "objects": self.sealed,
            "object_bytes": self.sealed_bytes, "bytes_used": self.alloc.used - self.reserved_bytes,
            "bytes_reserved": self.reserved_bytes, "bytes_free": self.alloc.free_bytes,
            "data_size": g.data_size,
            "largest_free": self.alloc.largest_free, "slots": g.slots, "slots_free": len(self.free_slots),
            "reserved": len(self.reserved), "pending_deletes": len(self.pending),
            "orphans": len(self.orphans), "puts": self.puts, "gets": self.gets(), "deletes": self.deletes,
            "fallbacks": self.fallbacks + self.store_full, "store_full": self.store_full,
            "tied_reclaimed": self.tied_reclaimed,
            "clients": len(self.conns), "leases_free": len(self.free_leases), "recovered": self.recovered,
            "lease_recovery": self.lease_recovery, "held_leases": len(self.held_leases),
            "reclaim_window_left_s": round(max(0.0, self.reclaim_until - time.monotonic()), 3),
            "coherence": self.map.coherence,
            "uptime_s": round(time.time() - self.started, 3),
        }  # fmt: skip

    def list_objects(self) -> list[list[int]]:
        """[region, slot, generation, offset, size] of every sealed object (reads the slot table)."""
        t = self._slots()
        idx = np.nonzero(t["state"] == SEALED)[0]
        return [[self.region, int(s), int(t["generation"][s]), int(t["offset"][s]), int(t["length"][s])]
                for s in idx.tolist()]  # fmt: skip
