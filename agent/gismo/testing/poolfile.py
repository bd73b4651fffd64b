"""Create a Gismo pool file for emulation (LocalCluster, the demo, tests, benchmarks).

The same file the node component makes for an shm pool: ``capacity`` bytes (sparse) followed by the
pool-file marker page of :mod:`gismo.memory.poolfile`, so an agent accepts it exactly as it accepts a
node-prepared file (an agent formats only Gismo pool files; see gismo.daemon.region).
"""

from __future__ import annotations

import os

from ..contract import PAGE
from ..memory.poolfile import PoolFileMarker, file_size


def create_pool_file(path: str, pool: str, capacity: int, mode: int = 0o600) -> str:
    """Create the pool file of ``pool`` at ``path`` (must not exist); return the path.

    ``capacity`` is rounded up to a whole page (the marker's rule); pages are allocated by tmpfs only
    as agents write them.
    """
    capacity = -(-capacity // PAGE) * PAGE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.ftruncate(fd, file_size(capacity))
        os.pwrite(fd, PoolFileMarker(pool, capacity).pack(), capacity)
    finally:
        os.close(fd)
    return path
