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
    #: Its file descriptor (kept: a closed socket forgets it) and the epoll events the socket server
    #: watches it for (0: not registered yet).
    fd: int = -1
    events: int = 0
    reader: protocol.FrameReader = field(default_factory=protocol.FrameReader)
    out: bytearray = field(default_factory=bytearray)
    pid: int = 0
    reserved: set[int] = field(default_factory=set)
    leases: list[int] = field(default_factory=list)
    #: slot -> generation of sealed objects deleted when this connection closes (protocol.TIE); at most
    #: one entry per slot, so bounded by the region's slot count.
    tied: dict[int, int] = field(default_factory=dict)
    #: When it was accepted (monotonic), and whether it said HELLO (a client, not just a socket).
    accepted: float = 0.0
    greeted: bool = False
    #: Since when an unfinished request sits in ``reader`` (0: none), and the bytes this connection
    #: counts against the agent's total buffer (unfinished request + unsent replies).
    partial_since: float = 0.0
    buffered: int = 0
    #: The socket loop's turn in which its requests were last served (one share per turn).
    turn: int = 0
    #: The peer process as the kernel reports it (SO_PEERCRED) and its start time (/proc stat field
    #: 22), recorded with each pin lease it holds so a restarted agent can tell a dead holder.
    peer_pid: int = 0
    peer_start: int = 0
    #: The client's token (HELLO), recorded with its leases: how it claims them back after a restart.
    token: int = 0
