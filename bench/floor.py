"""The physical floor under the Ray-vs-Gismo figures: the same bytes moved by bare numpy, no store.

Why: reading shared memory cannot be cheaper than reading memory that is already mapped, and a
shuffle cannot be cheaper than writing its bytes once and reading them once. These baselines do
exactly that, with nothing else in the way, so a ratio to them says how much a store adds.

- `ShuffleFloor`: `procs` worker processes (the shuffle's number of CPUs) share one tmpfs file
  of the shuffle's size. Phase 1, the maps: each of M map items fills its R blocks (every byte,
  as the benchmark's map does). Phase 2, the reducers: reducer j reads block j of every map the
  way the benchmark's reducer does (`touch_pages`: one byte of every 4 KiB page). Items go to
  whichever worker is free, like tasks on Ray workers. Every worker pre-faults its mapping of the
  whole file at start (`prefault`), as a Gismo client pre-faults its region at connect, so no run
  pays page faults or page allocation: the floor is the bytes' own cost.
- `read_mapped`: map a tmpfs file, fault every page in once, then time `touch_pages` over it:
  the remote get+read of Gismo at zero store cost.

Workers are started with "spawn" (the driver has Ray's threads; forking it is unsafe). Cost:
the file's size in /dev/shm while a `ShuffleFloor` is open; it is removed by `close()`.
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

PAGE = 4096
MADV_POPULATE_WRITE = 23  # linux/mman.h; not in Python 3.11's mmap module

_WORKER: dict[str, Any] = {}  # per worker process: the shared mapping as a uint8 array


def fill_value(index: int) -> int:
    """The byte map `index` writes (as bench/ray_vs_gismo.py's shuffle maps do)."""
    return index % 251 + 1


def expected_checksum(maps: int, bytes_per_map: int) -> int:
    """Sum of one byte per page over every block of every map, as the reducers compute it."""
    return sum(fill_value(i) * (bytes_per_map // PAGE) for i in range(maps))


def _touch_pages(a: np.ndarray) -> int:
    return int(a[::PAGE].sum(dtype=np.int64))


def prefault(mm: mmap.mmap, nbytes: int) -> None:
    """Populate this process's page tables for the whole mapping (allocating the file's pages).

    Why: without it every worker takes one fault per 4 KiB page it has not touched yet (items go to
    whichever worker is free, so that is most pages, every run); in this VM a fault costs ~10x the
    write of the page. A Gismo client pre-faults its region the same way at connect, so the floor
    pays no faults either. MADV_POPULATE_WRITE (Linux >= 5.14), else a write of every page."""
    try:
        mm.madvise(MADV_POPULATE_WRITE, 0, nbytes)
    except (OSError, ValueError):
        a = np.frombuffer(mm, np.uint8)
        a[::PAGE] = a[::PAGE]  # rewrite each page's first byte: same bytes, page now mapped writable
        del a


def _init_worker(path: str, total: int) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        mm = mmap.mmap(fd, total, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)
    prefault(mm, total)
    _WORKER["mm"] = mm
    _WORKER["a"] = np.frombuffer(mm, np.uint8)


def _write_map(spec: tuple[int, int, int]) -> int:
    index, block, reducers = spec
    a: np.ndarray = _WORKER["a"]
    start = index * reducers * block
    for j in range(reducers):
        a[start + j * block : start + (j + 1) * block].fill(fill_value(index))
    return reducers * block


def _read_reduce(spec: tuple[int, int, int, int]) -> tuple[int, int]:
    reducer, block, reducers, maps = spec
    a: np.ndarray = _WORKER["a"]
    seen = checksum = 0
    for i in range(maps):
        start = (i * reducers + reducer) * block
        checksum += _touch_pages(a[start : start + block])
        seen += block
    return seen, checksum


class ShuffleFloor:
    """M maps x R reducers over `total` bytes, by `procs` processes writing and reading one file."""

    def __init__(self, total: int, maps: int, reducers: int, procs: int, shm_dir: str = "/dev/shm") -> None:
        if total % (maps * reducers * PAGE):
            raise ValueError(f"total={total}: must be a multiple of maps*reducers*{PAGE}")
        self.total, self.maps, self.reducers, self.procs = total, maps, reducers, procs
        self.block = total // (maps * reducers)
        fd, self.path = tempfile.mkstemp(prefix="gismo-floor-", suffix=".bin", dir=shm_dir)
        try:
            os.ftruncate(fd, total)  # sparse: the workers' prefault allocates the pages
        finally:
            os.close(fd)
        self._pool: Any = None
        try:
            ctx = multiprocessing.get_context("spawn")
            self._pool = ctx.Pool(procs, initializer=_init_worker, initargs=(self.path, total))
            self._pool.map(_noop, range(procs), chunksize=1)  # every worker up before the first timing
        except BaseException:
            self.close()
            raise

    def run(self) -> float:
        """One shuffle's worth of writing then reading; returns seconds. Raises on wrong bytes."""
        maps = [(i, self.block, self.reducers) for i in range(self.maps)]
        reduces = [(j, self.block, self.reducers, self.maps) for j in range(self.reducers)]
        t0 = time.perf_counter()
        written = sum(self._pool.map(_write_map, maps, chunksize=1))
        results = self._pool.map(_read_reduce, reduces, chunksize=1)
        dt = time.perf_counter() - t0
        seen = sum(r[0] for r in results)
        checksum = sum(r[1] for r in results)
        want = expected_checksum(self.maps, self.block * self.reducers)
        if written != self.total or seen != self.total or checksum != want:
            raise AssertionError(f"floor shuffle: wrote {written} B, read {seen} B, sum {checksum} != {want}")
        return dt

    def close(self) -> None:
        """Stop the workers and remove the file. Idempotent."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.terminate()
            pool.join()
        Path(self.path).unlink(missing_ok=True)

    def __enter__(self) -> ShuffleFloor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _noop(_: int) -> None:
    return None


def make_mapped_file(nbytes: int, fill: int, shm_dir: str = "/dev/shm") -> str:
    """A tmpfs file of `nbytes`, every byte `fill` (its pages allocated). The caller removes it."""
    fd, path = tempfile.mkstemp(prefix="gismo-floor-read-", suffix=".bin", dir=shm_dir)
    try:
        os.ftruncate(fd, nbytes)
        mm = mmap.mmap(fd, nbytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        try:
            np.frombuffer(mm, np.uint8).fill(fill)
        finally:
            mm.close()
    except BaseException:
        os.close(fd)
        Path(path).unlink(missing_ok=True)
        raise
    os.close(fd)
    return path


def read_mapped(path: str, nbytes: int, reps: int) -> tuple[list[float], int]:
    """Seconds of `touch_pages` over an already-mapped, already-faulted file, `reps` times; and the
    checksum of the last read (the caller checks it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        mm = mmap.mmap(fd, nbytes, mmap.MAP_SHARED, mmap.PROT_READ)
    finally:
        os.close(fd)
    try:
        a = np.frombuffer(mm, np.uint8)
        checksum = _touch_pages(a)  # fault every page into this process's page table (untimed)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            checksum = _touch_pages(a)
            times.append(time.perf_counter() - t0)
        del a
    finally:
        mm.close()
    return times, checksum
