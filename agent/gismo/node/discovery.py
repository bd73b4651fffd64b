"""Which of the configured pools this node can hand to a container right now.

A pool is present on a node when its path is what its backend needs:
- ``devdax``: a character device (followed through symlinks, as the container runtime does when it
  creates the device node in the container);
- ``shm`` and ``famfs``: the Gismo pool file of this pool (its marker, see ``gismo.memory.poolfile``),
  never a symlink. famfs files are made by famfs's own tools; node prep writes the marker into their
  last page (``gismo mark-pool-file``), and an agent refuses a file without it, so a node does not
  advertise one either.

Every probe is a few ``stat`` calls and at most one page read, cheap enough to run every poll.
"""

from __future__ import annotations

import dataclasses
import os
import stat

from ..contract import BACKEND_DEVDAX
from ..memory.poolfile import PoolFileError, check_pool_file
from .config import PoolSpec


@dataclasses.dataclass(frozen=True)
class Presence:
    """Whether the pool is usable here, and why not (for logs and the operator's Events)."""

    healthy: bool
    reason: str = ""


def probe(pool: PoolSpec, host_root: str = "") -> Presence:
    """The pool's presence on this node (whose filesystem this process sees under ``host_root``)."""
    path = host_root + pool.path
    if pool.backend == BACKEND_DEVDAX:
        return _probe_device(path)
    try:  # shm and famfs (capacity 0: a famfs pool configured without one, taken from the marker)
        check_pool_file(path, pool.name, pool.capacity or None)
    except PoolFileError as exc:
        return Presence(False, str(exc))
    return Presence(True)


def _probe_device(path: str) -> Presence:
    try:
        st = os.stat(path)
    except OSError as exc:
        return Presence(False, f"{path}: {exc.strerror}")
    if not stat.S_ISCHR(st.st_mode):
        return Presence(False, f"{path}: not a character device (Gismo never creates devices)")
    return Presence(True)
