"""Map a slice of the pool (an shm file, a DAX device or a famfs file) into this process.

The same code serves every backend: each is a byte range behind a path (the rules that differ,
sizing and alignment, are checked in ``_check_backend``). The whole slice is mapped
read-only, which makes "readers never write another region" a property the MMU enforces rather
than a convention; the process's own region (if it has one) is mapped a second time read-write for
puts and pins. Both mappings share the same physical pages.

Views handed to callers point into the read-only mapping by raw address (see serialize.py), so the
mapping object is kept alive by every view and is never unmapped under one. Under the test model
(model.py) both mappings are of the node's cache file instead of the pool; nothing else changes.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import stat
import sys
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from ..contract import BACKEND_DEVDAX, BACKEND_FAMFS, BACKEND_SHM
from ..errors import GismoError
from . import coherence as coherence_mod
from . import devdax, model
from .devdax import DAX_ALIGN

MADV_POPULATE_READ = 22  # Linux ≥ 5.14; pre-faults page tables without touching contents
MADV_POPULATE_WRITE = 23
__all__ = ["DAX_ALIGN", "OPEN_HINT", "MappingError", "SliceMapping"]
#: What to say when the path of a backend that Gismo never creates cannot be opened.
OPEN_HINT = {
    BACKEND_FAMFS: " (famfs: the pool file must exist on every attached node)",
    BACKEND_DEVDAX: " (devdax: the device must exist on every attached node)",
}


def _with_rdev(rdev: int) -> Any:
    """A stat result that says character device ``rdev`` (the dax_rdev test seam)."""

    class _St:
        st_mode = stat.S_IFCHR | 0o600
        st_rdev = rdev
        st_size = 0

    return _St()


class MappingError(GismoError):
    """The slice cannot be mapped (missing path, too small, misaligned for the device)."""


class SliceMapping:
    """The slice mapped read-only, plus this process's own region mapped read-write.

    Cost: two mmap calls; nothing is read or faulted in except (optionally, in a background thread)
    the own region's page tables, so that the first put into a page does not pay a page fault.

    ``backend`` says what ``device`` is and which rules hold (contract BACKENDS): ``shm`` a regular
    file that may be created, sized and allocated (``allocate``); ``devdax`` a DAX character device
    whose size comes from sysfs (``sysfs_root``) and whose every mapping is 2 MiB aligned; ``famfs`` a
    famfs file of fixed size. Neither of the last two is ever created, truncated or allocated.
    ``coherence`` (contract COHERENCE_MODES, empty: the backend's default) picks ``flush`` and
    ``invalidate`` (coherence.py), or the test model when ``GISMO_TEST_MEMORY=noncoherent``.
    ``dax_rdev`` is a test seam only: treat a regular file as the DAX device with that number.
    ``cacheflush`` is the flush extension to use (default: the built one; tests inject None). Memory
    whose coherence is ``flush`` is refused (coherence.CoherenceUnavailable) when it cannot flush.
    """

    flush: Callable[[int, int], None]
    invalidate: Callable[[int, int], None]

    def __init__(
        self,
        device: str,
        slice_offset: int,
        slice_size: int,
        region_size: int,
        own_region: int | None = None,
        *,
        allocate: bool = False,
        prefault: bool = False,
        backend: str = BACKEND_SHM,
        coherence: str = "",
        sysfs_root: str = "/sys",
        dax_rdev: int | None = None,
        cacheflush: Any = coherence_mod.BUILT,
    ) -> None:
        self.device = device
        self.slice_offset = slice_offset
        self.slice_size = slice_size
        self.region_size = region_size
        self.own_region = own_region
        self.backend = backend
        try:
            mode = coherence_mod.resolve_mode(coherence, backend)
            use_model = model.selected()
        except ValueError as exc:
            raise MappingError(str(exc)) from exc
        # Fail closed before anything is mapped: `flush` memory without a working extension is refused.
        ext = None if use_model else coherence_mod.require(mode, cacheflush)
        if own_region is not None and not 0 <= own_region < slice_size // region_size:
            raise MappingError(f"region {own_region} is outside the slice")
        flags = os.O_RDWR if own_region is not None else os.O_RDONLY
        try:
            fd = os.open(device, flags)
        except OSError as exc:
            raise MappingError(f"cannot open {device}: {exc.strerror}{OPEN_HINT.get(backend, '')}") from exc
        self._cache: model.NodeCache | None = None
        try:
            self._check_backend(fd, allocate and backend == BACKEND_SHM, sysfs_root, dax_rdev)
            if use_model:
                self._cache = model.NodeCache(device, fd, slice_offset, slice_size, region_size, own_region)
                self.ro = self._cache.ro
                self.rw: mmap.mmap | None = self._cache.rw
            else:
                self.ro = mmap.mmap(fd, slice_size, mmap.MAP_SHARED, mmap.PROT_READ, offset=slice_offset)
                self.rw = None
                if own_region is not None:
                    self.rw = mmap.mmap(
                        fd, region_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE,
                        offset=self.region_start(own_region),
                    )  # fmt: skip
        except (OSError, ValueError) as exc:
            raise MappingError(f"cannot map {device}: {exc}") from exc
        finally:
            os.close(fd)
        # A numpy export pins the mapping (mmap.close() refuses while it exists) and gives the address.
        self._keeper = np.frombuffer(self.ro, dtype=np.uint8)
        self.address: int = self._keeper.ctypes.data
        self._rw_keeper = np.frombuffer(self.rw, dtype=np.uint8) if self.rw is not None else None
        strategy: coherence_mod.Strategy
        if self._cache is not None:
            strategy = self._cache
        else:
            own_addr = self._rw_keeper.ctypes.data if self._rw_keeper is not None else 0
            strategy = coherence_mod.cpu_strategy(mode, own_addr, self.address, ext)
        #: The strategy in use, as stats and metrics report it (coherence.py lists them).
        self.coherence: str = strategy.name
        self.flush = strategy.flush
        self.invalidate = strategy.invalidate
        self.view = memoryview(self.ro)
        self.rw_view: memoryview | None = memoryview(self.rw) if self.rw is not None else None
        self.prefaulted = threading.Event()
        if prefault and self.rw is not None:
            threading.Thread(target=self._populate, name="gismo-prefault", daemon=True).start()
        else:
            self.prefaulted.set()

    def _check_backend(self, fd: int, allocate: bool, sysfs_root: str, dax_rdev: int | None) -> None:
        """Enforce the backend's rules on the opened path; size (and allocate) an shm file."""
        device, backend = self.device, self.backend
        st = os.fstat(fd)
        end = self.slice_offset + self.slice_size
        if backend == BACKEND_DEVDAX:
            probe = _with_rdev(dax_rdev) if dax_rdev is not None and stat.S_ISREG(st.st_mode) else st
            size = devdax.device_size(device, probe, sysfs_root)
            devdax.check_alignment(device, self.slice_offset, self.slice_size, self.region_size)
            if size < end:
                raise MappingError(f"{device}: the DAX device has {size} bytes, the slice ends at {end}")
            return
        if not stat.S_ISREG(st.st_mode):
            raise MappingError(f"{device}: backend {backend} needs a regular file (a DAX device is devdax)")
        if backend == BACKEND_FAMFS:
            if st.st_size < end:
                raise MappingError(
                    f"{device}: the famfs file has {st.st_size} bytes, the slice ends at {end} "
                    "(famfs pool files have a fixed size; Gismo never resizes them)"
                )
            return
        if st.st_size < end:
            if not allocate:
                raise MappingError(f"{device} has {st.st_size} bytes, the slice ends at {end}")
            os.ftruncate(fd, end)
        if allocate and self.own_region is not None:
            # Give tmpfs real pages now: a full /dev/shm then fails here, not as SIGBUS on a store.
            try:
                os.posix_fallocate(fd, self.region_start(self.own_region), self.region_size)
            except OSError as exc:
                raise MappingError(f"cannot allocate region {self.own_region} in {device}: {exc}") from exc

    def region_start(self, region: int) -> int:
        """Device offset of a region."""
        return self.slice_offset + region * self.region_size

    def region_base(self, region: int) -> int:
        """Offset of a region inside the slice mapping."""
        return region * self.region_size

    @property
    def regions(self) -> int:
        return self.slice_size // self.region_size

    def _populate(self) -> None:
        """Pre-fault the own region's page tables, in both mappings, in 4 MiB steps.

        mmap.madvise holds the GIL, so small steps keep the process responsive. Without this a put
        into a fresh page runs at ~1/3 of memcpy speed (one write fault per 4 KiB), and a get of an
        object just put takes a read fault in the read-only mapping (several µs in a VM).
        """
        step = 4 << 20
        own = self.own_region
        try:
            for start in range(0, self.region_size, step):
                rw = self.rw
                if rw is None or rw.closed or self.ro.closed or own is None:
                    break
                n = min(step, self.region_size - start)
                rw.madvise(MADV_POPULATE_WRITE, start, n)
                self.ro.madvise(MADV_POPULATE_READ, self.region_base(own) + start, n)
        except (OSError, ValueError, AttributeError):
            pass  # an older kernel: pages fault in on first use instead
        finally:
            self.prefaulted.set()

    def keepalive(self) -> Any:
        """An object whose lifetime keeps the mapping valid (views hold it)."""
        return self._keeper

    def close(self) -> None:
        """Unmap what no view still uses; a mapping under a live view is left to the garbage collector."""
        for name in ("view", "rw_view"):
            mv = getattr(self, name, None)
            if mv is not None:
                with contextlib.suppress(BufferError):
                    mv.release()
        self._rw_keeper = None
        if self.rw is not None:
            with contextlib.suppress(BufferError, ValueError):
                self.rw.close()
        # Views hold self._keeper; only when nothing else does is unmapping the slice safe.
        if sys.getrefcount(self._keeper) <= 2:
            self._keeper = np.empty(0, np.uint8)
            with contextlib.suppress(BufferError, ValueError):
                self.ro.close()
            if self._cache is not None:
                self._cache.close()
