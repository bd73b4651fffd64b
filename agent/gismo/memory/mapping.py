"""Map a slice of the pool (an shm file or a DAX device) into this process.

The same code serves both backends: both are byte ranges behind a path. The whole slice is mapped
read-only, which makes "readers never write another region" a property the MMU enforces rather
than a convention; the process's own region (if it has one) is mapped a second time read-write for
puts and pins. Both mappings share the same physical pages.

Views handed to callers point into the read-only mapping by raw address (see serialize.py), so the
mapping object is kept alive by every view and is never unmapped under one.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import stat
import sys
import threading
from typing import Any

import numpy as np

from ..errors import GismoError

MADV_POPULATE_READ = 22  # Linux ≥ 5.14; pre-faults page tables without touching contents
MADV_POPULATE_WRITE = 23
DAX_ALIGN = 2 << 20


class MappingError(GismoError):
    """The slice cannot be mapped (missing path, too small, misaligned for the device)."""


class SliceMapping:
    """The slice mapped read-only, plus this process's own region mapped read-write.

    Cost: two mmap calls; nothing is read or faulted in except (optionally, in a background thread)
    the own region's page tables, so that the first put into a page does not pay a page fault.
    """

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
    ) -> None:
        self.device = device
        self.slice_offset = slice_offset
        self.slice_size = slice_size
        self.region_size = region_size
        self.own_region = own_region
        flags = os.O_RDWR if own_region is not None else os.O_RDONLY
        try:
            fd = os.open(device, flags)
        except OSError as exc:
            raise MappingError(f"cannot open {device}: {exc.strerror}") from exc
        try:
            st = os.fstat(fd)
            is_file = stat.S_ISREG(st.st_mode)
            if not is_file and (slice_offset % DAX_ALIGN or region_size % DAX_ALIGN):
                raise MappingError(f"{device}: DAX offsets and region sizes must be multiples of 2 MiB")
            end = slice_offset + slice_size
            if is_file and st.st_size < end:
                if not allocate:
                    raise MappingError(f"{device} has {st.st_size} bytes, the slice ends at {end}")
                os.ftruncate(fd, end)
            if is_file and allocate and own_region is not None:
                # Give tmpfs real pages now: a full /dev/shm then fails here, not as SIGBUS on a store.
                try:
                    os.posix_fallocate(fd, self.region_start(own_region), region_size)
                except OSError as exc:
                    raise MappingError(f"cannot allocate region {own_region} in {device}: {exc}") from exc
            self.ro = mmap.mmap(fd, slice_size, mmap.MAP_SHARED, mmap.PROT_READ, offset=slice_offset)
            self.rw: mmap.mmap | None = None
            if own_region is not None:
                if not 0 <= own_region < slice_size // region_size:
                    raise MappingError(f"region {own_region} is outside the slice")
                self.rw = mmap.mmap(
                    fd, region_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE,
                    offset=self.region_start(own_region),
                )  # fmt: skip
        finally:
            os.close(fd)
        # A numpy export pins the mapping (mmap.close() refuses while it exists) and gives the address.
        self._keeper = np.frombuffer(self.ro, dtype=np.uint8)
        self.address: int = self._keeper.ctypes.data
        self.view = memoryview(self.ro)
        self.rw_view: memoryview | None = memoryview(self.rw) if self.rw is not None else None
        self.prefaulted = threading.Event()
        if prefault and self.rw is not None:
            threading.Thread(target=self._populate, name="gismo-prefault", daemon=True).start()
        else:
            self.prefaulted.set()

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
        if self.rw is not None:
            with contextlib.suppress(BufferError, ValueError):
                self.rw.close()
        # Views hold self._keeper; only when nothing else does is unmapping the slice safe.
        if sys.getrefcount(self._keeper) <= 2:
            self._keeper = np.empty(0, np.uint8)
            with contextlib.suppress(BufferError, ValueError):
                self.ro.close()
