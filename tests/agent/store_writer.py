"""Put objects into one agent in a loop, printing each returned ref (sealed) as a JSON line.

Used by the crash test: the agent is killed with SIGKILL while this runs; whatever was printed was
sealed, whatever was in flight was not.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np
from store_node import pattern

import gismo


def tagged(n: int, seed: int) -> np.ndarray:
    """pattern() with the seed in its first 8 bytes, so any object found later names its content."""
    a = pattern(n, seed)
    a[:8] = np.frombuffer(np.uint64(seed).tobytes(), np.uint8)
    return a


def main() -> int:
    sock, count = sys.argv[1], int(sys.argv[2])
    c = gismo.connect(sock)
    sizes = [64 << 10, 1 << 20, 3 << 20, 200_000]
    try:
        for i in range(count):
            n = sizes[i % len(sizes)]
            ref = c.put(tagged(n, i))
            print(json.dumps([list(ref), i, n]), flush=True)
            if c.stats()["bytes_free"] < 8 << 20:  # keep room: delete the oldest half
                for r in c.list()[: len(c.list()) // 2]:
                    c.delete(r)
                    print(json.dumps(["deleted", list(r)]), flush=True)
    except gismo.AgentUnavailable:
        print(json.dumps(["agent-gone"]), flush=True)
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
