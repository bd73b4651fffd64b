"""The non-coherent memory model for tests: each node's view of the slice is a write-back cache.

Why: on one host every process sees every store at once, so a store whose flushes and invalidates
(coherence.py) are missing or misplaced still passes every test. Under this model it does not.

Selected with ``GISMO_TEST_MEMORY=noncoherent`` (read once, when a process maps the slice; the
store tests and ``LocalCluster(memory="noncoherent")`` set it for agents, clients and Ray workers).

How: a node is the set of processes that own the same region (the agent and its clients: one host,
coherent among themselves). Each node has a cache file next to the pool file,
``<pool>.node<region>.cache``, the size of the slice; every process of the node maps it MAP_SHARED
instead of the pool, so views handed out by ``get`` point into the node's copy. Then:

- the node's own stores reach the pool file only at ``flush(offset, size)``, which copies whole
  64-byte lines of the node's own region from the cache to the pool;
- reads of another region see whatever the cache holds (zeros until the first invalidate: a line
  never loaded) until ``invalidate(offset, size)`` copies those lines from the pool into the cache.

A flush outside the own region and an invalidate inside it do nothing: a node never has dirty
lines of memory it does not write, and its own lines are never stale. The cache file is created
(and the own region loaded into it from the pool) by the first process of the node; a restarted
agent keeps it, as a restarted process keeps its host's caches.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import mmap
import os

import numpy as np

from ..contract import ENV_TEST_MEMORY
from .coherence import LINE

NONCOHERENT = "noncoherent"
MODES = ("", "coherent", NONCOHERENT)
NAME = "noncoherent-model"
_LOAD_STEP = 4 << 20


def selected() -> bool:
    """True when this process runs under the model (``GISMO_TEST_MEMORY=noncoherent``)."""
    mode = os.environ.get(ENV_TEST_MEMORY, "")
    if mode not in MODES:
        raise ValueError(f"{ENV_TEST_MEMORY} must be 'coherent' or 'noncoherent', not {mode!r}")
    return mode == NONCOHERENT


def cache_path(device: str, region: int) -> str:
    """The cache file of the node that owns ``region`` of the slice in ``device``."""
    return f"{device}.node{region}.cache"


def cache_files(device: str) -> list[str]:
    """Every node cache file of ``device`` (for cleanup by the test harnesses)."""
    return glob.glob(glob.escape(device) + ".node*.cache")


class NodeCache:
    """The node's copy of the slice, and flush/invalidate between it and the pool's mapping.

    ``ro`` (the whole slice, read-only) and ``rw`` (the own region) are what SliceMapping exposes in
    place of the pool's mappings; the pool itself is only reached by ``flush`` and ``invalidate``.
    """

    name = NAME

    def __init__(
        self, device: str, dev_fd: int, slice_offset: int, slice_size: int, region_size: int, own: int | None
    ) -> None:
        self.slice_size = slice_size
        self.region_size = region_size
        self.own_lo = -1 if own is None else own * region_size
        self.own_hi = -1 if own is None else self.own_lo + region_size
        self._pool = mmap.mmap(dev_fd, slice_size, mmap.MAP_SHARED, mmap.PROT_READ, offset=slice_offset)
        self._pool_rw: mmap.mmap | None = None
        if own is None:  # a process with no region: a private cache of its own
            self._cache = mmap.mmap(-1, slice_size)
            self.ro = self._cache
            self.rw: mmap.mmap | None = None
            return
        self._pool_rw = mmap.mmap(
            dev_fd, region_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE,
            offset=slice_offset + self.own_lo,
        )  # fmt: skip
        fd = os.open(cache_path(device, own), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # the first process of the node fills it, the rest wait
            fresh = os.fstat(fd).st_size == 0
            if fresh:
                os.ftruncate(fd, slice_size)
            elif os.fstat(fd).st_size != slice_size:
                raise ValueError(f"{cache_path(device, own)} does not match this slice's size")
            self._cache = mmap.mmap(fd, slice_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            if fresh:
                self._load_own()
            self.ro = mmap.mmap(fd, slice_size, mmap.MAP_SHARED, mmap.PROT_READ)
            self.rw = mmap.mmap(
                fd, region_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=self.own_lo
            )
        finally:
            # Unlock explicitly: each mmap keeps a dup of fd, so closing fd would not drop the flock.
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _load_own(self) -> None:
        """A cold cache: the own region as the pool holds it (all-zero chunks stay sparse)."""
        assert self._pool_rw is not None
        src = np.frombuffer(self._pool_rw, np.uint8)
        dst = np.frombuffer(self._cache, np.uint8, self.region_size, self.own_lo)
        for a in range(0, self.region_size, _LOAD_STEP):
            chunk = src[a : a + _LOAD_STEP]
            if chunk.any():
                dst[a : a + _LOAD_STEP] = chunk
        del src, dst

    def flush(self, offset: int, size: int) -> None:
        """Copy the own region's lines covering ``[offset, offset+size)`` to the pool."""
        if size <= 0 or self._pool_rw is None:
            return
        a = max(offset & ~(LINE - 1), 0)
        b = min(-(-(offset + size) // LINE) * LINE, self.region_size)
        base = self.own_lo
        self._pool_rw[a:b] = self._cache[base + a : base + b]

    def invalidate(self, offset: int, size: int) -> None:
        """Reload the slice's lines covering ``[offset, offset+size)`` from the pool, except the own
        region's (never stale: this node is their only writer)."""
        if size <= 0:
            return
        a = max(offset & ~(LINE - 1), 0)
        b = min(-(-(offset + size) // LINE) * LINE, self.slice_size)
        for lo, hi in ((a, min(b, self.own_lo)), (max(a, self.own_hi), b)) if self.own_lo >= 0 else ((a, b),):
            if lo < hi:
                self._cache[lo:hi] = self._pool[lo:hi]

    def close(self) -> None:
        for m in (self._pool_rw, self._pool, self._cache):
            if m is not None:
                with contextlib.suppress(BufferError, ValueError):
                    m.close()
