"""Prepare the pool files of ``shm`` pools on this node (what examples/pool-node-prep.yaml used to do).

The rule (the same one the agent follows): Gismo formats only Gismo pool files and never creates a
device. So for each shm pool:
- no file at the path: create it, ``capacity`` bytes (sparse: memory is used only as objects are
  written) plus the pool-file marker page, owned by the agent's uid/gid, mode 0660;
- a Gismo pool file of this pool and capacity: keep it as it is (objects in it survive a restart of
  the node component);
- anything else (another pool's file, a different capacity, a foreign file, a symlink, a folder):
  refuse with a message naming the path, and leave it untouched.

Creation is atomic and never clobbers: the file is built under a temporary name in the same folder
and ``link``-ed into place, which fails if anything appeared at the path meanwhile (another node's
component on a shared folder, say). The loser removes its temporary file and checks the winner's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets

from ..contract import BACKEND_SHM
from ..memory.poolfile import PoolFileError, PoolFileMarker, check_pool_file, file_size
from .config import NodeConfig, PoolSpec

log = logging.getLogger(__name__)


def prepare(pool: PoolSpec, config: NodeConfig) -> str:
    """Make sure the pool file of ``pool`` exists; return "created" or "present".

    Raises PoolFileError (naming the path) for a path that holds anything but this pool's file, and
    OSError for a failure to create it (no space, no permission). Not for device or famfs pools.
    """
    if pool.backend != BACKEND_SHM:
        raise ValueError(f"pool {pool.name}: only shm pool files are prepared, not {pool.backend}")
    path = config.local(pool.path)
    if os.path.lexists(path):
        check_pool_file(path, pool.name, pool.capacity)
        return "present"
    folder = os.path.dirname(path)
    os.makedirs(folder, mode=0o755, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.gismo-tmp-{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.ftruncate(fd, file_size(pool.capacity))
        os.pwrite(fd, PoolFileMarker(pool.name, pool.capacity).pack(), pool.capacity)
        os.fchmod(fd, config.file_mode)
        try:
            # Linked while still ours: with fs.protected_hardlinks, linking another user's file would
            # need CAP_FOWNER.
            os.link(tmp, path, follow_symlinks=False)
        except FileExistsError:
            # Someone else created it first: theirs stands if it is this pool's file.
            check_pool_file(path, pool.name, pool.capacity)
            return "present"
        if config.file_uid is not None or config.file_gid is not None:
            uid = -1 if config.file_uid is None else config.file_uid
            gid = -1 if config.file_gid is None else config.file_gid
            os.fchown(fd, uid, gid)  # the mode was set first: changing it afterwards needs CAP_FOWNER
    finally:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    log.info("created pool file %s for pool %s (%d bytes + marker)", path, pool.name, pool.capacity)
    return "created"


def prepare_all(config: NodeConfig) -> dict[str, str]:
    """Prepare every shm pool; pool name -> "created", "present" or the refusal. Never raises for one
    pool's problem: the others are still prepared, and the refused one is reported unhealthy."""
    out: dict[str, str] = {}
    for pool in config.pools:
        if pool.backend != BACKEND_SHM:
            continue
        try:
            out[pool.name] = prepare(pool, config)
        except PoolFileError as exc:
            log.error("pool %s: refusing to touch %s: %s", pool.name, pool.path, exc)
            out[pool.name] = f"refused: {exc}"
        except OSError as exc:
            log.error("pool %s: cannot create %s: %s", pool.name, pool.path, exc)
            out[pool.name] = f"failed: {pool.path}: {exc.strerror}"
    return out
