"""What sysfs says about a device-DAX character device (``/dev/daxX.Y``): is it one, and its size.

Why: a DAX device has no file size (fstat says 0) and cannot be truncated or allocated; its size is
``/sys/dev/char/<major>:<minor>/size`` (the same attribute as ``/sys/bus/dax/devices/<dev>/size``),
and every mapping of it must start and end on its alignment (2 MiB by default), or mmap fails.
``sysfs_root`` is a parameter so tests can point it at a fake tree.
"""

from __future__ import annotations

import os
import stat

from ..errors import GismoError

DAX_ALIGN = 2 << 20


class DaxError(GismoError):
    """The path is not a usable device-DAX device (missing, not a char device, not dax, no size)."""


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def device_size(path: str, st: os.stat_result, sysfs_root: str = "/sys") -> int:
    """The size in bytes of the dax character device ``path`` whose stat is ``st``.

    Looks up ``<sysfs>/dev/char/<major>:<minor>``, checks that its ``subsystem`` is ``dax``, and reads
    ``size``; falls back to ``<sysfs>/bus/dax/devices/<basename>/size``. DaxError names what is wrong.
    """
    if not stat.S_ISCHR(st.st_mode):
        raise DaxError(f"{path}: backend devdax needs a character device (/dev/daxX.Y), this is not one")
    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    node = os.path.join(sysfs_root, "dev", "char", f"{major}:{minor}")
    candidates = []
    if os.path.exists(node):
        subsystem = os.path.basename(os.path.realpath(os.path.join(node, "subsystem")))
        if subsystem != "dax":
            raise DaxError(f"{path}: sysfs says device {major}:{minor} belongs to {subsystem!r}, not dax")
        candidates.append(os.path.join(node, "size"))
    candidates.append(os.path.join(sysfs_root, "bus", "dax", "devices", os.path.basename(path), "size"))
    for c in candidates:
        text = _read(c)
        if text is not None:
            try:
                size = int(text, 0)
            except ValueError:
                raise DaxError(f"{path}: {c} holds {text!r}, not a size") from None
            if size <= 0:
                raise DaxError(f"{path}: sysfs reports size {size}")
            return size
    raise DaxError(f"{path}: no dax size in sysfs (looked at {', '.join(candidates)})")


def check_alignment(path: str, slice_offset: int, slice_size: int, region_size: int) -> None:
    """Every mapping of a DAX device starts and ends on DAX_ALIGN: the slice and each region."""
    for name, value in (("slice offset", slice_offset), ("slice size", slice_size),
                        ("region size", region_size)):  # fmt: skip
        if value % DAX_ALIGN:
            raise DaxError(f"{path}: devdax {name} {value} is not a multiple of 2 MiB")
