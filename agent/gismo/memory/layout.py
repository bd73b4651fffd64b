"""Byte layout of one region in the shared mapping: THE one definition of the shared-memory format.

Every struct format, offset and entry size that several processes (and hosts) read lives here, with
the one encoder and decoder of each record kind: the header, the run record, slots (and their
seqlock), pin entries and lease counters. The client and the daemon both go through these; neither
packs a record of its own (tests/agent/memory/test_records.py writes every kind one way and reads
it the other).

A region is ``[header page][slot table][pin table][lease counters][data area]``, all offsets relative
to the region start, which is page aligned in the slice. Every multi-byte field is little endian and
naturally aligned. Geometry fields are covered by a CRC so a reader can tell a formatted region from
foreign or damaged memory; fields that change at run time (epoch, agent pid) sit outside the CRC.

Who writes what (one writer per byte, no atomics):
- header, slot table: the region's agent; a slot in RESERVED state is handed to the client that
  asked for it, which writes its data and flips it to SEALED, then tells the agent (see client.py).
- pin table: divided into leases of ``LEASE`` entries; each lease is written only by the one client
  process the agent leased it to (the agent clears it again once that client's connection is gone).
- lease records: one 64-byte record (a cache line) per lease: counters (gets, fallbacks), written by
  the lease holder; then the holder's identity (pid, process start time, client token), written by
  the agent when it grants, re-grants or frees the lease, so a restarted agent can tell a dead holder
  from a live one (pid + start time, when the holder's pid is visible to it) and give a living holder
  its leases back when it reconnects (the token, when it is not: see daemon/holders.py).
- data area: an extent is written by the client that reserved it, before sealing; immutable after.

Slots are updated under a seqlock: the writer makes ``seq`` odd, writes the fields, makes it even.
A reader copies the slot, and accepts it only when ``seq`` was even and unchanged around the copy.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib
from typing import Any

from ..contract import PAGE
from ..errors import CorruptRegion

MAGIC = b"GISMO\x00R1"
VERSION = 3  # 3: lease records carry the holder's client token (64 bytes); 2: pid + start (32 bytes)
ALIGN = 64
HEADER_SIZE = PAGE
SLOT_SIZE = 64  # one cache line: a seal publishes the whole slot with one line flush
PIN_SIZE = 16
COUNTER_SIZE = 64  # one line per lease record: no two leases' writers share a cache line
LEASE = 64  # pin entries per client lease
SMALL_MAX = 64 << 10  # objects up to this size may come from a client's pre-reserved stash

# Slot states.
FREE = 0
RESERVED = 1  # handed to a client, data being written; never readable
SEALED = 2  # immutable and readable
DELETING = 3  # delete requested; reclaimed once no pin names it
STATE_NAMES = {FREE: "free", RESERVED: "reserved", SEALED: "sealed", DELETING: "deleting"}

# Header: magic, version, header_size, region, flags, region_size, slots, pins, slot_off, pin_off,
# counter_off, data_off, data_size, format_id, owner; then crc32 of those bytes.
_HDR = struct.Struct("<8sIIIIQIIQQQQQQ64s")
_HDR_CRC = struct.Struct("<I")
HDR_CRC_OFF = _HDR.size
# Run-time fields, outside the CRC: epoch (agent starts), agent pid, clean-shutdown flag.
_RUN = struct.Struct("<QQI")
RUN_OFF = 256

# Slot: seq, generation, state, flags, offset, length, alloc_size (offsets relative to the region).
SLOT = struct.Struct("<QQIIQQQ")
SLOT_SEQ = struct.Struct("<Q")  # at +0
_SLOT_GEN = struct.Struct("<Q")
SLOT_GEN_OFF = 8
_SLOT_STATE = struct.Struct("<I")
SLOT_STATE_OFF = 16
_SLOT_LENGTH = struct.Struct("<Q")
SLOT_LENGTH_OFF = 32
#: The slot table as a numpy record array (vectorised scans and batch writes by the owner agent).
SLOT_FIELDS = (
    ("seq", "<u8"), ("generation", "<u8"), ("state", "<u4"), ("flags", "<u4"), ("offset", "<u8"),
    ("length", "<u8"), ("alloc", "<u8"), ("pad", f"V{SLOT_SIZE - SLOT.size}"),
)  # fmt: skip
# Pin entry: region + 1 (0 = empty), slot, generation.
PIN = struct.Struct("<IIQ")
PIN_FIELDS = (("region", "<u4"), ("slot", "<u4"), ("generation", "<u8"))
EMPTY_PIN = bytes(PIN_SIZE)
# Lease record: counters gets, fallbacks (written by the lease holder, summed by the agent), then the
# holder: pid and start time (/proc/<pid>/stat field 22; 0, 0 = a pid the agent could not see) and
# the client's random token (HELLO; 0 = none), written by the agent; then padding to the line.
COUNTERS = struct.Struct("<QQ")
HOLDER = struct.Struct("<QQQ")
HOLDER_OFF = COUNTERS.size
COUNTER_FIELDS = (
    ("gets", "<u8"), ("fallbacks", "<u8"), ("holder_pid", "<u8"), ("holder_start", "<u8"),
    ("holder_token", "<u8"), ("pad", f"V{COUNTER_SIZE - COUNTERS.size - HOLDER.size}"),
)  # fmt: skip
_SLOT_DTYPE: Any = None  # numpy dtypes, built lazily so layout stays importable without numpy cost
_PIN_DTYPE: Any = None
_COUNTERS_DTYPE: Any = None
assert SLOT.size <= SLOT_SIZE and PIN.size == PIN_SIZE and COUNTERS.size + HOLDER.size <= COUNTER_SIZE


# The pool-file marker: the last page of a file-backed pool, after its data (see memory/poolfile.py
# for why it is there). Same first six bytes as the region header's MAGIC; "P1": pool file, v1.
POOL_MAGIC = b"GISMO\x00P1"
POOL_MARKER_VERSION = 1
POOL_MARKER_SIZE = PAGE
#: The longest pool name the marker holds (Kubernetes object names used as pool names are shorter).
POOL_NAME_MAX = 64
# magic, version, marker size, capacity, pool name (NUL padded); then crc32 of those bytes.
_POOL_MARKER = struct.Struct("<8sIIQ64s")


def pack_pool_marker(pool: str, capacity: int) -> bytes:
    """The marker page of the pool file of ``pool`` (``capacity`` bytes of data before it)."""
    name = pool.encode()
    if not name or len(name) > POOL_NAME_MAX or b"\0" in name:
        raise ValueError(f"pool name {pool!r}: must be 1-{POOL_NAME_MAX} bytes without NUL")
    if capacity <= 0 or capacity % PAGE:
        raise ValueError(f"capacity {capacity}: must be a positive multiple of {PAGE}")
    body = _POOL_MARKER.pack(POOL_MAGIC, POOL_MARKER_VERSION, POOL_MARKER_SIZE, capacity, name)
    raw = body + _HDR_CRC.pack(zlib.crc32(body))
    return raw + bytes(POOL_MARKER_SIZE - len(raw))


def unpack_pool_marker(page: bytes) -> tuple[str, int] | None:
    """(pool, capacity) of a marker page; None when ``page`` is not a valid Gismo pool-file marker."""
    if len(page) < _POOL_MARKER.size + _HDR_CRC.size:
        return None
    body = page[: _POOL_MARKER.size]
    (crc,) = _HDR_CRC.unpack_from(page, _POOL_MARKER.size)
    magic, version, size, capacity, name = _POOL_MARKER.unpack(body)
    if magic != POOL_MAGIC or version != POOL_MARKER_VERSION or size != POOL_MARKER_SIZE:
        return None
    if zlib.crc32(body) != crc:
        return None
    try:
        return name.rstrip(b"\0").decode(), capacity
    except UnicodeDecodeError:
        return None


def align_up(n: int, a: int) -> int:
    """Round ``n`` up to a multiple of ``a`` (a power of two)."""
    return (n + a - 1) & ~(a - 1)


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Where each table of a region lives. Derived from the region size; stored in the header."""

    region: int
    region_size: int
    slots: int
    pins: int
    slot_off: int
    pin_off: int
    counter_off: int
    data_off: int
    data_size: int
    format_id: int = 0
    owner: str = ""

    @property
    def leases(self) -> int:
        return self.pins // LEASE

    @classmethod
    def compute(
        cls, region: int, region_size: int, slots: int = 0, pins: int = 0, format_id: int = 0, owner: str = ""
    ) -> Geometry:
        """Lay out a region. Default slots: one per 8 KiB (64..4M); pins: as many as slots (≥ 16384)."""
        if slots <= 0:
            slots = max(64, min(region_size // (8 << 10), 1 << 22))
        if pins <= 0:
            pins = max(16384, min(slots, 1 << 18))
        pins = align_up(pins, LEASE)
        slot_off = HEADER_SIZE
        pin_off = align_up(slot_off + slots * SLOT_SIZE, PAGE)
        counter_off = align_up(pin_off + pins * PIN_SIZE, ALIGN)
        data_off = align_up(counter_off + (pins // LEASE) * COUNTER_SIZE, PAGE)
        if data_off + PAGE > region_size:
            raise CorruptRegion(f"region size {region_size} is too small for {slots} slots and {pins} pins")
        return cls(
            region, region_size, slots, pins, slot_off, pin_off, counter_off, data_off,
            region_size - data_off, format_id, owner,
        )  # fmt: skip

    def pack_header(self) -> bytes:
        """Header bytes including the CRC (the run-time fields are written separately)."""
        body = _HDR.pack(
            MAGIC, VERSION, HEADER_SIZE, self.region, 0, self.region_size, self.slots, self.pins,
            self.slot_off, self.pin_off, self.counter_off, self.data_off, self.data_size, self.format_id,
            self.owner.encode()[:64],
        )  # fmt: skip
        return body + _HDR_CRC.pack(zlib.crc32(body))

    @classmethod
    def unpack_header(cls, buf: Any, base: int, expect_region: int, expect_size: int) -> Geometry:
        """Read and validate a header at ``base``; CorruptRegion with the reason when it is not ours."""
        raw = bytes(buf[base : base + _HDR.size + _HDR_CRC.size])
        body, (crc,) = raw[: _HDR.size], _HDR_CRC.unpack(raw[_HDR.size :])
        f = _HDR.unpack(body)
        if f[0] != MAGIC:
            raise CorruptRegion(f"region {expect_region}: no Gismo header (unformatted or foreign memory)")
        if f[1] != VERSION:
            raise CorruptRegion(f"region {expect_region}: layout version {f[1]}, this build reads {VERSION}")
        if zlib.crc32(body) != crc:
            raise CorruptRegion(f"region {expect_region}: header checksum mismatch")
        g = cls(f[3], f[5], f[6], f[7], f[8], f[9], f[10], f[11], f[12], f[13], f[14].rstrip(b"\0").decode())
        if g.region != expect_region or g.region_size != expect_size:
            raise CorruptRegion(
                f"region {expect_region}: header says region {g.region} of {g.region_size} bytes, "
                f"expected {expect_size}"
            )
        ref = cls.compute(g.region, g.region_size, g.slots, g.pins)
        if (ref.slot_off, ref.pin_off, ref.counter_off, ref.data_off, ref.data_size) != (
            g.slot_off, g.pin_off, g.counter_off, g.data_off, g.data_size,
        ):  # fmt: skip
            raise CorruptRegion(f"region {expect_region}: inconsistent table offsets in header")
        return g

    def slot_pos(self, slot: int) -> int:
        return self.slot_off + slot * SLOT_SIZE

    def pin_pos(self, entry: int) -> int:
        return self.pin_off + entry * PIN_SIZE

    def counter_pos(self, lease: int) -> int:
        return self.counter_off + lease * COUNTER_SIZE

    def in_data(self, offset: int, size: int) -> bool:
        """True when ``[offset, offset+size)`` lies inside the data area (the bounds check of every read)."""
        return self.data_off <= offset and size >= 0 and offset + size <= self.region_size


def read_run(buf: Any, base: int) -> tuple[int, int, int]:
    """(epoch, agent pid, clean flag) of a region."""
    return _RUN.unpack_from(buf, base + RUN_OFF)


def write_run(buf: Any, base: int, epoch: int, pid: int, clean: int) -> None:
    _RUN.pack_into(buf, base + RUN_OFF, epoch, pid, clean)


@dataclasses.dataclass
class Slot:
    """A decoded slot. ``offset`` is relative to the region start."""

    seq: int
    generation: int
    state: int
    flags: int
    offset: int
    length: int
    alloc_size: int


def read_slot_raw(buf: Any, pos: int) -> tuple[int, int, int, int, int, int, int]:
    """One unsynchronised copy of a slot (callers apply the seqlock rule)."""
    return SLOT.unpack_from(buf, pos)


def read_slot_stable(buf: Any, pos: int, tries: int = 10000) -> Slot | None:
    """Seqlock read: a consistent copy, or None when a writer held the slot for all ``tries`` spins."""
    for _ in range(tries):
        f = SLOT.unpack_from(buf, pos)
        if f[0] & 1:
            continue
        (seq2,) = SLOT_SEQ.unpack_from(buf, pos)
        if seq2 == f[0]:
            return Slot(*f)
    return None


def read_seq(buf: Any, pos: int) -> int:
    """The slot's seqlock word (the reader's re-check after pinning)."""
    return int(SLOT_SEQ.unpack_from(buf, pos)[0])


def read_generation(buf: Any, pos: int) -> int:
    return int(_SLOT_GEN.unpack_from(buf, pos + SLOT_GEN_OFF)[0])


def read_state(buf: Any, pos: int) -> int:
    return int(_SLOT_STATE.unpack_from(buf, pos + SLOT_STATE_OFF)[0])


def write_slot(
    buf: Any, pos: int, generation: int, state: int, flags: int, offset: int, length: int, alloc_size: int
) -> None:
    """Seqlock write by the slot's current single writer: seq odd, fields, seq even."""
    (seq,) = SLOT_SEQ.unpack_from(buf, pos)
    seq = (seq | 1) + 1  # an odd seq left by a crashed writer is closed off here
    SLOT_SEQ.pack_into(buf, pos, seq - 1)
    SLOT.pack_into(buf, pos, seq - 1, generation, state, flags, offset, length, alloc_size)
    SLOT_SEQ.pack_into(buf, pos, seq)


def write_state(buf: Any, pos: int, state: int) -> None:
    """Seqlock update of the state field only (seal by the agent, delete by the agent)."""
    (seq,) = SLOT_SEQ.unpack_from(buf, pos)
    seq = (seq | 1) + 1
    SLOT_SEQ.pack_into(buf, pos, seq - 1)
    _SLOT_STATE.pack_into(buf, pos + SLOT_STATE_OFF, state)
    SLOT_SEQ.pack_into(buf, pos, seq)


def write_seal(buf: Any, pos: int, length: int) -> None:
    """Seqlock update by a client sealing a reservation: state SEALED and the real length."""
    (seq,) = SLOT_SEQ.unpack_from(buf, pos)
    seq = (seq | 1) + 1
    SLOT_SEQ.pack_into(buf, pos, seq - 1)
    _SLOT_STATE.pack_into(buf, pos + SLOT_STATE_OFF, SEALED)
    _SLOT_LENGTH.pack_into(buf, pos + SLOT_LENGTH_OFF, length)
    SLOT_SEQ.pack_into(buf, pos, seq)


def write_pin(buf: Any, pos: int, region: int, slot: int, generation: int) -> None:
    """Publish a pin on (region, slot, generation): the owner will not reclaim that object."""
    PIN.pack_into(buf, pos, region + 1, slot, generation)


def clear_pin(buf: Any, pos: int) -> None:
    PIN.pack_into(buf, pos, 0, 0, 0)


def read_pin(buf: Any, pos: int) -> tuple[int, int, int] | None:
    """(region, slot, generation) of a pin entry, or None when it is empty."""
    region1, slot, generation = PIN.unpack_from(buf, pos)
    return None if region1 == 0 else (region1 - 1, slot, generation)


def pack_pin(region: int, slot: int, generation: int) -> bytes:
    return PIN.pack(region + 1, slot, generation)


def write_counters(buf: Any, pos: int, gets: int, fallbacks: int) -> None:
    COUNTERS.pack_into(buf, pos, gets, fallbacks)


def read_counters(buf: Any, pos: int) -> tuple[int, int]:
    """(gets, fallbacks) of one lease."""
    return COUNTERS.unpack_from(buf, pos)


def write_holder(buf: Any, pos: int, pid: int, start: int, token: int) -> None:
    """Record who holds the lease whose record is at ``pos`` (the agent's write): pid and start time
    (0, 0 when the agent cannot see the holder's pid) and the client's token (0: none)."""
    HOLDER.pack_into(buf, pos + HOLDER_OFF, pid, start, token)


def read_holder(buf: Any, pos: int) -> tuple[int, int, int]:
    """(pid, start time, token) of the holder of the lease whose record is at ``pos``."""
    return HOLDER.unpack_from(buf, pos + HOLDER_OFF)


def slot_dtype() -> Any:
    """numpy dtype of a slot entry (SLOT_SIZE bytes), for vectorised scans by the owner agent."""
    global _SLOT_DTYPE
    if _SLOT_DTYPE is None:
        import numpy as np

        _SLOT_DTYPE = np.dtype(list(SLOT_FIELDS))
        assert _SLOT_DTYPE.itemsize == SLOT_SIZE
    return _SLOT_DTYPE


def pin_dtype() -> Any:
    """numpy dtype of a pin entry, for vectorised scans by the owner agent (``region`` is region + 1)."""
    global _PIN_DTYPE
    if _PIN_DTYPE is None:
        import numpy as np

        _PIN_DTYPE = np.dtype(list(PIN_FIELDS))
        assert _PIN_DTYPE.itemsize == PIN_SIZE
    return _PIN_DTYPE


def counters_dtype() -> Any:
    """numpy dtype of a lease's counter record, for the agent's sum over every lease."""
    global _COUNTERS_DTYPE
    if _COUNTERS_DTYPE is None:
        import numpy as np

        _COUNTERS_DTYPE = np.dtype(list(COUNTER_FIELDS))
        assert _COUNTERS_DTYPE.itemsize == COUNTER_SIZE
    return _COUNTERS_DTYPE
