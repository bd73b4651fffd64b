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
  MFENCE for invalidate; ARM64 DC CVAC / DC CIVAC + DSB (written, not run here), through the C
  extension ``gismo.memory._cacheflush`` (built with the limited API, one ``.abi3.so`` for every
  CPython >= 3.10, and delivered with the client into Ray images).
- no extension, or a CPU without a flush instruction, on ``flush`` memory: REFUSED, never a no-op
  (a no-op flush on non-coherent memory is wrong, not slow). :func:`cpu_strategy` raises
  :class:`CoherenceUnavailable` naming the reason; the agent then serves degraded with that reason
  and a client's ``connect`` fails with it, so ``gismo.ray`` falls back to Ray's store and says why.
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

The lease holder record is flushed although only the next agent of the same region reads it: a
host that reboots or crashes loses its caches, and the restarted agent then finds only what reached
memory (tests/agent/client/test_coherence_points.py::
test_lease_holder_record_survives_a_host_that_loses_its_caches fails without the flush).

That each call site matters is checked by ``scripts/check_coherence_sites.py`` (it removes one call
at a time and runs the non-coherent tests); docs/architecture.md lists each site with the test that
fails without it.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from ..contract import COHERENCE_FLUSH, COHERENCE_HARDWARE, COHERENCE_MODES
from ..errors import GismoError

log = logging.getLogger("gismo.coherence")

LINE = 64  # bytes per cache line on x86-64 (ARM64 cores may use 64 or 128; the extension asks)

try:  # built by the package's build; a copy or install without it refuses ``flush`` memory
    from . import _cacheflush  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on whether the build had a compiler
    _cacheflush = None

#: "The extension this process imported" (the default of cpu_strategy's ``ext``; tests inject others).
BUILT: Any = object()


class CoherenceUnavailable(GismoError):
    """The memory needs ``flush`` and this process cannot flush (the message says why)."""


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


def require(mode: str, ext: Any = BUILT) -> Any:
    """The extension ``mode`` needs (None for ``hardware``); CoherenceUnavailable, naming why, when
    ``flush`` cannot be done here (default ``ext``: the built extension; tests inject others)."""
    if mode == COHERENCE_HARDWARE:
        return None
    if ext is BUILT:
        ext = _cacheflush
    if ext is None:
        raise CoherenceUnavailable(
            "coherence 'flush': the cache-flush extension gismo.memory._cacheflush is not built or "
            "not loadable here, and a no-op flush on non-coherent memory would serve stale bytes"
        )
    if ext.method() == "none":
        raise CoherenceUnavailable(
            "coherence 'flush': this CPU has no cache flush instruction gismo.memory._cacheflush "
            "knows (x86-64 CLWB/CLFLUSHOPT/CLFLUSH, ARM64 DC CVAC)"
        )
    return ext


def cpu_strategy(mode: str, own_address: int, slice_address: int, ext: Any = BUILT) -> Strategy:
    """The strategy for real memory: ``hardware``, or ``flush`` through ``ext`` (see :func:`require`).
    Fails closed: never a no-op where ``flush`` was asked for."""
    found = require(mode, ext)
    if found is None:
        return Hardware()
    return CpuFlush(own_address, slice_address, found)
