"""The object reference: everything a reader needs to find and validate an object, and nothing else.

A Ref is a NamedTuple so it is hashable, cheap to build, and pickles to ~70 bytes (well under the
128-byte budget) as a class reference plus five integers; no lookup service is ever consulted.
"""

from __future__ import annotations

from typing import NamedTuple


class Ref(NamedTuple):
    """(region, slot, generation, offset, size) of a sealed object.

    ``offset`` is relative to the region start, ``size`` is the object's byte length in the region.
    ``generation`` changes every time the slot is reused, so an old ref fails with StaleRef.
    """

    region: int
    slot: int
    generation: int
    offset: int
    size: int

    def __repr__(self) -> str:
        return f"gismo.Ref(r{self.region}/s{self.slot}@g{self.generation}, {self.size} B at {self.offset:#x})"
