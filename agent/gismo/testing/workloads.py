"""The data the benchmark and the demo move around, made and checked the same way on both sides.

Why shared: Ray-vs-Gismo figures are only comparable when both sides make, split and read the
same arrays; one definition keeps `bench/ray_vs_gismo.py` and the demo from drifting apart.
"""

from __future__ import annotations

import numpy as np

from gismo.contract import PAGE

# PAGE is re-exported: the readers touch one byte per page, and callers size their data by it.
__all__ = ["PAGE", "make_array", "touch_pages"]


def make_array(nbytes: int, fill: int) -> np.ndarray:
    """A uint8 array of ``nbytes``, every byte ``fill`` (cheap to make, cheap to verify)."""
    return np.full(nbytes, fill, dtype=np.uint8)


def touch_pages(a: np.ndarray) -> int:
    """Read one byte of every page (forces every page to be mapped in); returns their sum."""
    return int(a.reshape(-1).view(np.uint8)[::PAGE].sum(dtype=np.int64))
