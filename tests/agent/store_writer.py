"""Put objects into one agent in a loop, recording every step in a side file (one JSON line each).

Used by the crash tests: the agent or this writer is killed while it runs (kill -9, or a crash point
armed with GISMO_TEST_CRASH_AT). The side file is written line by line straight to the kernel, so
what it says survives the kill of this process:

    ["putting", seed, size]       a put of tagged(size, seed) starts
    ["put", ref, seed, size]      it returned ref (the object is sealed)
    ["deleting", ref]             a delete of ref starts
    ["deleted", ref]              it returned
    ["agent-gone"]                the agent went away (AgentUnavailable); the writer exits 0

Usage: store_writer.py SOCKET COUNT SIDE_FILE
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from store_node import tagged

import gismo

SIZES = [64 << 10, 1 << 20, 3 << 20, 200_000]


def main() -> int:
    sock, count, side = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    fd = os.open(side, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def record(*msg: Any) -> None:
        os.write(fd, (json.dumps(list(msg)) + "\n").encode())  # unbuffered: survives kill -9

    c = gismo.connect(sock)
    try:
        for i in range(count):
            n = SIZES[i % len(SIZES)]
            record("putting", i, n)
            ref = c.put(tagged(n, i))
            record("put", list(ref), i, n)
            if c.stats()["bytes_free"] < 8 << 20:  # keep room: delete the oldest half
                listed = c.list()
                for r in listed[: len(listed) // 2]:
                    record("deleting", list(r))
                    c.delete(r)
                    record("deleted", list(r))
    except gismo.AgentUnavailable:
        record("agent-gone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
