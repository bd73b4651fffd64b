"""Who holds a pin lease, and whether that process still lives (pids are reused: a pid alone is not
an identity, pid + start time is).

While an agent runs, a lease lives exactly as long as the client connection it was granted on: the
kernel closes a dead process's socket whatever pid namespace it lives in, and the agent frees the
connection's leases then. What needs more is a lease that outlives its agent (the client held views
while the agent restarted). For that the agent records the holder of each lease in the region's
lease record (layout.write_holder):

- the peer's pid as the kernel reports it for the socket (SO_PEERCRED, not the client's claim) and
  that process's start time, field 22 of ``/proc/<pid>/stat`` (clock ticks since boot; it never
  changes for a process and a new process with a reused pid has a later one);
- the client's token: a random 64-bit number the client draws once and sends with every HELLO.

A restarted agent reads the records back (region.RegionOwner._recover). A holder whose pid it can
see is checked at once and every server.LEASE_CHECK_S (the fast path: a dead one is found without
waiting). A holder in a pid namespace the agent cannot see (a pod without a shared process
namespace: the kernel reports pid 0) cannot be checked; instead a living client reconnects on its
own (client.Client watches its connection) and claims its leases back by token, tying them to its
new connection (region.RegionOwner.reclaim_leases). A lease nobody claims within
``Config.lease_reclaim_s`` of the agent's start is freed: that is the bound for a holder that died
while its agent was down (README, security).
"""

from __future__ import annotations

import socket
import struct

_UCRED = struct.Struct("3i")  # pid, uid, gid


def peer_pid(sock: socket.socket) -> int:
    """The connected peer's pid in this process's pid namespace; 0 when it is not visible here."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except (OSError, AttributeError):
        return 0
    pid, _uid, _gid = _UCRED.unpack(raw)
    return max(int(pid), 0)


def start_time(pid: int) -> int:
    """Start time of process ``pid`` (``/proc/<pid>/stat`` field 22); 0 when there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return 0
    # comm (field 2) is in parentheses and may hold spaces or ')': fields after the last ')'.
    rest = raw[raw.rfind(b")") + 2 :].split()
    try:
        return int(rest[22 - 3])
    except (IndexError, ValueError):
        return 0


def alive(pid: int, start: int) -> bool | None:
    """Whether the holder (pid, start time) still runs: None when the record names no process the
    agent could see (pid 0), False when no process has that pid or a newer one reused it."""
    if pid <= 0 or start <= 0:
        return None
    return start_time(pid) == start
