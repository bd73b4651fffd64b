"""Deterministic crash points: a test seam that makes this process die at a named point, like kill -9.

The crash tests (tests/agent/daemon/test_crash_points.py) start a writer or an agent with
``GISMO_TEST_CRASH_AT=<point>`` or ``<point>:<n>`` (die the n-th time the point is reached; default
the first). The process then SIGKILLs itself there: no finally block, no atexit, no socket shutdown,
exactly what a crash leaves behind. The variable is read once, at import; when it is unset (always,
outside those tests) every point costs one ``if`` on a module constant (``ARMED``).

Points, in the order a put and a delete reach them:
- ``put-reserved``: the client holds a reservation and has written nothing;
- ``put-mid-copy``: the client wrote the object's header and half of its bytes;
- ``put-sealed``: the client sealed the object in memory and sent the seal notice, and dies
  before ``put`` returns the ref to its caller;
- ``delete-sent``: the client sent DELETE and dies before reading the reply;
- ``agent-create``: the agent wrote the RESERVED slot and dies before answering CREATE;
- ``agent-seal``: the agent recorded a seal notice and dies before handling anything else;
- ``agent-delete``: the agent marked the object DELETING and dies before answering DELETE.
"""

from __future__ import annotations

import os
import signal

ENV = "GISMO_TEST_CRASH_AT"
POINTS = frozenset(
    {
        "put-reserved",
        "put-mid-copy",
        "put-sealed",
        "delete-sent",
        "agent-create",
        "agent-seal",
        "agent-delete",
    }
)


def _parse(text: str | None) -> tuple[str | None, int]:
    if not text:
        return None, 0
    point, _, count = text.partition(":")
    if point not in POINTS:
        raise ValueError(f"{ENV}={text!r}: unknown crash point (one of {', '.join(sorted(POINTS))})")
    try:
        n = int(count) if count else 1
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{ENV}={text!r}: the count after ':' must be a positive integer")
    return point, n


_POINT, _LEFT = _parse(os.environ.get(ENV))
#: True only in a process started with GISMO_TEST_CRASH_AT: callers test this before anything else.
ARMED = _POINT is not None


def due(point: str) -> bool:
    """Count one arrival at ``point``; True when this arrival is the one to die at (call ``now()``)."""
    global _LEFT
    if point != _POINT:
        return False
    _LEFT -= 1
    return _LEFT == 0


def now() -> None:
    """Die at once, as kill -9 would (the exit status says SIGKILL, so a test knows the point was hit)."""
    os.kill(os.getpid(), signal.SIGKILL)


def reached(point: str) -> None:
    """``due`` and ``now`` in one call, for points that need no preparation before dying."""
    if due(point):
        now()
