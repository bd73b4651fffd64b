"""A reader process for the stale-ref stress test: loops ``get()`` on refs of another region's objects
while their owner deletes them and reuses the same slots at the same offsets.

Every object of the stress test is the array ``stress_words(slot, generation, words)``: its bytes
are a function of the ref alone, so a reader can tell its own object from any other one without
asking anybody. Each ``get`` must return exactly those words, or raise StaleRef/ObjectNotFound.

Modes: ``pin`` (the normal path: views over the mapping, pinned; a few are held while newer ones are
read, then checked again, so a delete that did not wait for the pin would show) and ``copy``
(started where no pin lease is left: every get takes the checked-copy path, whose refusals the
client counts in ``stats()["client"]["copy_rejections"]``).
"""

from __future__ import annotations

import collections
import random
from multiprocessing.queues import Queue
from multiprocessing.sharedctypes import SynchronizedArray
from multiprocessing.synchronize import Event
from typing import Any

import numpy as np

import gismo
from gismo.memory import layout

_MIX = 0x9E3779B97F4A7C15


def stress_words(slot: int, generation: int, words: int) -> np.ndarray:
    """The content of the object at (slot, generation): every word differs from every other object's."""
    key = np.uint64((generation * _MIX + slot) % (1 << 64))
    return np.arange(words, dtype=np.uint64) + key


#: Indexes of the live counters a reader publishes (a shared array): what the test waits for.
OK, STALE, REJECTED = 0, 1, 2


def run(
    sock: str, region: int, mode: str, seed: int, stop: Event, live: SynchronizedArray[int], out: Queue[Any]
) -> None:
    rng = random.Random(seed)
    c = gismo.connect(sock)
    lo, hi = c.map.address, c.map.address + c.map.slice_size
    g = c._geometry(region)
    base = c.map.region_base(region)
    table = np.frombuffer(c._ro, layout.slot_dtype(), g.slots, base + g.slot_off)
    counts: collections.Counter[str] = collections.Counter()
    foreign: list[str] = []
    seen: collections.deque[gismo.Ref] = collections.deque(maxlen=64)
    held: collections.deque[tuple[gismo.Ref, np.ndarray]] = collections.deque()

    def check(ref: gismo.Ref, v: Any, when: str) -> None:
        want = stress_words(ref.slot, ref.generation, ref.size // 8 - 8)  # minus the array's header
        if not isinstance(v, np.ndarray) or v.shape != want.shape or not np.array_equal(v, want):
            foreign.append(f"{when} {tuple(ref)}: not the object put under this ref")

    try:
        while not stop.is_set():
            counts["iterations"] += 1
            if seen and rng.random() < 0.3:
                ref = rng.choice(seen)  # probably stale by now
            else:
                sealed = np.nonzero(table["state"] == layout.SEALED)[0]  # what the owner has now
                if not len(sealed):
                    continue
                slot = int(sealed[rng.randrange(len(sealed))])
                s = layout.read_slot_stable(c._ro, base + g.slot_pos(slot))
                if s is None or s.state != layout.SEALED:
                    continue
                ref = gismo.Ref(region, slot, s.generation, s.offset, s.length)
                seen.append(ref)
            try:
                v = c.get(ref)
            except gismo.ObjectNotFound:  # StaleRef included
                counts["stale"] += 1
                live[STALE] = counts["stale"]
                continue
            counts["ok"] += 1
            live[OK] = counts["ok"]
            check(ref, v, "get")
            addr = v.ctypes.data
            shares = lo <= addr and addr + v.nbytes <= hi  # inside the mapping: a view, else a copy
            if shares != (mode == "pin"):
                foreign.append(f"{tuple(ref)}: a {mode} reader got {'a view' if shares else 'a copy'}")
            if mode == "pin":
                held.append((ref, v))
                if len(held) > rng.randrange(1, 6):
                    old, ov = held.popleft()
                    check(old, ov, "held view")  # the owner may have deleted it: it waited for our pin
            if counts["ok"] % 32 == 0:
                live[REJECTED] = int(c.stats()["client"]["copy_rejections"])
        while held:
            old, ov = held.popleft()
            check(old, ov, "held view")
        live[REJECTED] = int(c.stats()["client"]["copy_rejections"])
        out.put({"mode": mode, **counts, "copy_rejections": live[REJECTED], "foreign": foreign[:20]})
    except BaseException as exc:
        out.put({"mode": mode, "error": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        held.clear()
        c.close()
