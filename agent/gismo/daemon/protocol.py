"""The agent socket protocol: length-prefixed binary frames over a Unix stream socket.

Request frame: ``u32 length`` then ``u8 op`` and a fixed struct body (hot ops) or JSON (rare ops).
Setting bit 0x80 of ``op`` asks for no reply (used for seal notifications and fallback counts).
Reply frame: ``u32 length`` then ``u8 status`` (0 = ok, else an error code from errors.py) and a
body (the error message, UTF-8, for errors).

A malformed request gets an error reply and the connection stays usable; only a length prefix
above ``MAX_FRAME`` (which leaves no way to resynchronise) closes that one connection.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

from ..errors import ProtocolError

MAX_FRAME = 1 << 20
LEN = struct.Struct("<I")
NOREPLY = 0x80

HELLO, CREATE, SEAL, ABORT, DELETE, LIST, STATS, HEALTH, LEASE, FALLBACK, CREATE_MANY, SEAL_MANY = range(
    1, 13
)
#: Tie sealed objects (SLOT_REQ bodies, concatenated) to this connection: the agent deletes them when
#: the connection closes (the process that made them died or exited). Used by the GISMO tensor
#: transport, whose objects Ray never garbage-collects once their source process is gone.
TIE = 13
OP_NAMES = {
    HELLO: "hello", CREATE: "create", SEAL: "seal", ABORT: "abort", DELETE: "delete", LIST: "list",
    STATS: "stats", HEALTH: "health", LEASE: "lease", FALLBACK: "fallback", CREATE_MANY: "create_many",
    SEAL_MANY: "seal_many", TIE: "tie",
}  # fmt: skip

# Bodies.
#: client pid (its claim, for logs) and token: a random 64-bit number the client draws once and sends
#: with every HELLO; a restarted agent gives a reconnecting client back the pin leases recorded with it.
HELLO_REQ = struct.Struct("<IQ")
CREATE_REQ = struct.Struct("<Q")  # bytes wanted
CREATE_REP = struct.Struct("<IQQ")  # slot, generation, offset (region relative)
CREATE_MANY_REQ = struct.Struct("<QI")  # bytes each, how many (reply: CREATE_REP repeated)
SLOT_REQ = struct.Struct("<IQ")  # slot, generation (seal, abort)
DELETE_REQ = struct.Struct("<IIQ")  # region, slot, generation
LEASE_REP = struct.Struct("<II")  # first entry, lease index
COUNT_REQ = struct.Struct("<I")  # fallback count
#: Most fallbacks one FALLBACK message may report (a client sends 1 per fallback).
MAX_FALLBACK_COUNT = 1024

OK = 0


def frame(op: int, body: bytes = b"", noreply: bool = False) -> bytes:
    """A request frame."""
    return LEN.pack(len(body) + 1) + bytes([op | (NOREPLY if noreply else 0)]) + body


def reply(status: int, body: bytes = b"") -> bytes:
    """A reply frame."""
    return LEN.pack(len(body) + 1) + bytes([status]) + body


def json_body(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def recv_frame(sock: socket.socket) -> bytes:
    """Block until one whole frame has arrived on ``sock``; its payload (status byte + body).

    For the one-request exchanges (a client's HELLO, the CLI's health and stats); a pipelined
    stream uses :class:`FrameReader`. Raises ConnectionResetError when the agent closes first.
    """
    buf = b""
    while len(buf) < LEN.size or len(buf) < LEN.size + LEN.unpack_from(buf)[0]:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("agent closed the connection")
        buf += chunk
    return buf[LEN.size : LEN.size + LEN.unpack_from(buf)[0]]


class FrameReader:
    """Accumulates bytes from a stream and hands out complete frames' payloads (op byte + body), at
    most ``limit`` per call: the rest stay held, so one connection's pipeline is served in fixed
    shares (the socket server reads no more from it until they are taken)."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held: whole frames not taken yet, then the start of an unfinished one."""
        return len(self._buf)

    @property
    def has_frame(self) -> bool:
        """A whole frame (or a length no frame may have, which take() refuses) is held."""
        buf = self._buf
        if len(buf) < 4:
            return False
        length: int = LEN.unpack_from(buf, 0)[0]
        return length == 0 or length > MAX_FRAME or len(buf) - 4 >= length

    def feed(self, data: bytes, limit: int = 1 << 62) -> list[bytes]:
        """Add received bytes; return up to ``limit`` payloads now complete (the rest stay held for
        take()). ProtocolError on a length outside 1..MAX_FRAME."""
        if self._buf:
            self._buf += data
            return self.take(limit)
        # Fast path (the common case): the read holds whole frames; slice them without copying the
        # stream into the buffer first.
        out, pos = _frames(data, 0, limit)
        if pos < len(data):
            self._buf += data[pos:]
        return out

    def take(self, limit: int = 1 << 62) -> list[bytes]:
        """Up to ``limit`` complete payloads held; ProtocolError on a length outside 1..MAX_FRAME."""
        buf = self._buf
        out, pos = _frames(buf, 0, limit)
        if pos:
            del buf[:pos]
        return out


def _frames(data: bytes | bytearray, pos: int, limit: int) -> tuple[list[bytes], int]:
    """Up to ``limit`` whole frames' payloads of ``data`` from ``pos``, and where the next one starts."""
    out: list[bytes] = []
    n = len(data)
    while len(out) < limit and n - pos >= 4:
        (length,) = LEN.unpack_from(data, pos)
        if length == 0 or length > MAX_FRAME:
            raise ProtocolError(f"frame length {length} outside 1..{MAX_FRAME}")
        if n - pos - 4 < length:
            break
        out.append(bytes(data[pos + 4 : pos + 4 + length]))
        pos += 4 + length
    return out, pos
