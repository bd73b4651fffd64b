"""Which of the configured pools this node can hand to a container right now.

A pool is present on a node when its path is what its backend needs:
- ``devdax``: a character device (followed through symlinks, as the container runtime does when it
  creates the device node in the container);
- ``shm``: the Gismo pool file of this pool (its marker, see ``gismo.memory.poolfile``), never a symlink;
- ``famfs``: a regular file (not a symlink) of at least the pool's capacity; famfs files are made by
  famfs's own tools, so they carry no Gismo marker.

Every probe is a few ``stat`` calls and at most one page read, cheap enough to run every poll.
"""

from __future__ import annotations

import dataclasses
import os
import stat

from ..contract import BACKEND_DEVDAX, BACKEND_SHM
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
    if pool.backend == BACKEND_SHM:
        try:
            check_pool_file(path, pool.name, pool.capacity)
        except PoolFileError as exc:
            return Presence(False, str(exc))
        return Presence(True)
    return _probe_file(path, pool.capacity)


def _probe_device(path: str) -> Presence:
    try:
        st = os.stat(path)
    except OSError as exc:
        return Presence(False, f"{path}: {exc.strerror}")
    if not stat.S_ISCHR(st.st_mode):
        return Presence(False, f"{path}: not a character device (Gismo never creates devices)")
    return Presence(True)


def _probe_file(path: str, capacity: int) -> Presence:
    try:
        st = os.lstat(path)
    except OSError as exc:
        return Presence(False, f"{path}: {exc.strerror}")
    if not stat.S_ISREG(st.st_mode):
        return Presence(False, f"{path}: not a regular file")
    if st.st_size < capacity:
        return Presence(False, f"{path}: {st.st_size} bytes, the pool has {capacity}")
    return Presence(True)
