"""What one client connection of the agent holds: its socket state and its reservations and leases.

The region owner frees a connection's reservations and pin leases when it goes (see region.py);
the socket server owns its bytes in and out (see server.py).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from . import protocol


@dataclass
class Conn:
    """One client connection and what it holds."""

    sock: socket.socket
    cid: int
    reader: protocol.FrameReader = field(default_factory=protocol.FrameReader)
    out: bytearray = field(default_factory=bytearray)
    pid: int = 0
    reserved: set[int] = field(default_factory=set)
    leases: list[int] = field(default_factory=list)
    #: slot -> generation of sealed objects deleted when this connection closes (protocol.TIE); at most
    #: one entry per slot, so bounded by the region's slot count.
    tied: dict[int, int] = field(default_factory=dict)
