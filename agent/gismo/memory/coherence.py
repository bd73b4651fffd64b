"""The one coherence hook of the data plane, and the list of every point where it is needed.

Why: memory that several hosts share over CXL is in general not coherent between them (multi-headed
CXL 2.0 devices, pooling appliances; famfs documents the same for its metadata). A writer's stores
sit in its CPU caches until it writes them back; a reader keeps reading its own stale copies of
lines until it drops them. Processes on ONE host are coherent with each other (one cache
hierarchy), so the agent and the clients of a node never need this among themselves; only what one
node publishes and another node observes does.

Two calls, both on a :class:`~gismo.memory.mapping.SliceMapping` (which picks the strategy once,
when it maps the slice):

- ``flush(offset, size)``: write back ``[offset, offset+size)`` of this process's OWN region (the
  only memory it writes), then fence; after it returns the bytes are in the shared memory.
- ``invalidate(offset, size)``: drop this node's cached copies of ``[offset, offset+size)`` of the
  SLICE (offsets relative to the slice) so the next loads read the shared memory.

Both round to whole 64-byte cache lines. Strategies (``stats()["coherence"]`` and the metric
``gismo_coherence_info`` name the one in use):

- ``hardware``: both are no-ops (/dev/shm on one host, CXL 3.x hardware coherence).
- ``flush``: x86-64 CLWB (else CLFLUSHOPT, else CLFLUSH) + SFENCE, and CLFLUSHOPT (else CLFLUSH) +
  MFENCE for invalidate; ARM64 DC CVAC / DC CIVAC + DSB (written, not run here), through the
  optional C extension ``gismo.memory._cacheflush``.
- ``flush-noop``: ``flush`` was asked for but the extension is not built (no compiler at install,
  or the pure-Python client copied into a Ray image): no-ops, and said so in stats, metrics and
  the agent's log. Correct only on memory that is coherent after all.
- ``noncoherent-model``: the test model (``GISMO_TEST_MEMORY=noncoherent``, see model.py): each
  node reads and writes a private copy of the slice and these calls copy lines to and from the
  shared file, so a missing or misplaced call makes the test suite fail.

Every publish/observe point of the protocol and the call that covers it (P = publisher, O =
observer on another node; "local" = only read on the writer's own node, no call needed):

======================  ==============================================  ===============================
record                  publish (P)                                     observe (O)
======================  ==============================================  ===============================
header (geometry,       RegionOwner._format: flush(0, data_off) after   Client._geometry: invalidate
format_id, owner)       the header, slot table, pins and counters are   (header) before unpack;
                        written (one call covers the whole format)      scan_pins and _wait_for_foreign_
                                                                        pins: invalidate(header) first
run record (epoch, pid, local: read by the region's own agent and       -
clean flag)             clients only
seal (slot -> SEALED,   Client._seal_slot: flush(data) BEFORE the seal  Client._check: invalidate(slot)
length) and the data    store, then flush(slot) after it (the whole     before each read of it;
                        64-byte slot line: generation, offset, length,  Client.get/_get_copy:
                        state, seq go out together);                    invalidate(data) after the pin
                        RegionOwner.seal: flush(slot) when the agent    is published and the slot re-
                        seals a slot the client left RESERVED           checked
generation              travels in the slot line with the seal; the     as the seal
                        random generations of a format with the format
slot states FREE,       not published: a remote reader refuses every    -
RESERVED                non-SEALED state alike, and the next publish
                        of the line (a seal) carries them
delete (SEALED ->       RegionOwner.delete: flush(slot) right after     Client._check (invalidate slot)
DELETING)               the DELETING store, before the grace period
seqlock re-check        -                                               Client.get/_get_copy:
                                                                        invalidate(slot) before re-
                                                                        reading seq after the pin
pins                    Client._pin: flush(entry) after write_pin,      RegionOwner.scan_pins:
                        BEFORE the re-check; Client._unpin:             invalidate(pin table) per scan;
                        flush(entry) after clear_pin;                   _wait_for_foreign_pins: the same
                        RegionOwner._drop_lease: flush(lease) after
                        clearing a dead client's lease
lease counters          local: summed by the region's own agent only    -
lease holder (pid,      RegionOwner._record_holder: flush(record)       local: read back by the next
start time, client      when a lease is granted or given back to a      agent of the same region (same
token)                  reconnecting client (one site for both)         node): _recover, _reap_held_
                                                                        leases
recovery (restart on    RegionOwner._recover: flush(slot table) after   as the seal / delete
the same node)          rewriting interrupted and damaged slots
======================  ==============================================  ===============================

The delete protocol with these calls: the reader publishes its pin (flush) and only then
re-reads the slot (invalidate); the owner publishes DELETING (flush), waits ``grace_ms``, then reads
every pin table (invalidate). Either the reader's re-check sees DELETING, or its pin was
flushed before the owner's scan began.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from ..contract import COHERENCE_FLUSH, COHERENCE_HARDWARE, COHERENCE_MODES

log = logging.getLogger("gismo.coherence")

LINE = 64  # bytes per cache line on x86-64 (ARM64 cores may use 64 or 128; the extension asks)

try:  # optional: the pure-Python package (e.g. copied into a Ray image) works without it
    from . import _cacheflush  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on whether the build had a compiler
    _cacheflush = None


class Strategy(Protocol):
    """What a SliceMapping calls; offsets as in the module docstring."""

    name: str

    def flush(self, offset: int, size: int) -> None: ...

    def invalidate(self, offset: int, size: int) -> None: ...


class Hardware:
    """Coherent memory: nothing to do (cost: one Python call per site)."""

    name = COHERENCE_HARDWARE

    def flush(self, offset: int, size: int) -> None:
        return None

    def invalidate(self, offset: int, size: int) -> None:
        return None


class FlushNoop(Hardware):
    """``flush`` was asked for but the extension is missing: reported, otherwise a no-op."""

    name = "flush-noop"


class CpuFlush:
    """Real cache maintenance on the mapping's addresses through ``_cacheflush``."""

    def __init__(self, own_address: int, slice_address: int, ext: Any) -> None:
        self.name = f"{COHERENCE_FLUSH}:{ext.method()}"
        self._own = own_address
        self._slice = slice_address
        self._flush = ext.flush
        self._invalidate = ext.invalidate

    def flush(self, offset: int, size: int) -> None:
        if size > 0:
            self._flush(self._own + offset, size)

    def invalidate(self, offset: int, size: int) -> None:
        if size > 0:
            self._invalidate(self._slice + offset, size)


def resolve_mode(mode: str, backend: str) -> str:
    """The coherence a pool needs: ``mode`` when given, else the backend's default (contract)."""
    from ..contract import DEFAULT_COHERENCE

    if not mode:
        return DEFAULT_COHERENCE.get(backend, COHERENCE_HARDWARE)
    if mode not in COHERENCE_MODES:
        raise ValueError(f"coherence must be one of {', '.join(COHERENCE_MODES)}, not {mode!r}")
    return mode


def extension_method() -> str | None:
    """The instruction the extension uses here (``clwb``, ``clflushopt``, ...), None without it."""
    return None if _cacheflush is None else str(_cacheflush.method())


def cpu_strategy(mode: str, own_address: int, slice_address: int) -> Strategy:
    """The strategy for real memory: ``hardware``, or ``flush`` through the extension if built."""
    if mode == COHERENCE_HARDWARE:
        return Hardware()
    if _cacheflush is None:
        log.warning("coherence 'flush' requested but gismo.memory._cacheflush is not built: no-op flushes")
        return FlushNoop()
    if _cacheflush.method() == "none":
        log.warning("coherence 'flush' requested but this CPU has no cache flush instruction: no-op flushes")
        return FlushNoop()
    return CpuFlush(own_address, slice_address, _cacheflush)
