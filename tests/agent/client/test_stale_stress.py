"""Readers on other nodes loop get() while the owner deletes objects and reuses their slots at the
same offsets: every result is the reader's own object, or StaleRef, never another object's bytes.

The owner's schedule is a seeded random sequence (which object to replace next); the readers pick
current refs from the slot table and old, probably stale, refs they saw before. One pin reader
(views, pins, held views re-checked later: deletion must wait for the pin) and one copy reader
(its node has no pin lease left, so every get is a checked copy) run in their own processes. The
run lasts until the checked copy has refused at least one slot that changed under it (counted by
the client), bounded by gismo.testing's one wait limit; no assertion is about time.
"""

from __future__ import annotations

import multiprocessing
import random
from typing import Any

import numpy as np
import stress_reader
from storefix import MiB, Pool
from stress_reader import stress_words

import gismo
from gismo.memory.layout import align_up
from gismo.testing import wait_until

SEED = 1515
OBJECT = 1 * MiB  # bytes of words per object; the region holds only as many as fit
MIN_STEPS = 200  # owner replacements at least, however soon the copy path is hit


def test_readers_never_see_foreign_bytes_while_slots_are_reused() -> None:
    pool = Pool(regions=3, region_size=8 * MiB)
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    out: Any = ctx.Queue()
    readers: list[Any] = []
    try:
        owner_agent = pool.agent(0)
        pool.agent(1, pin_entries=64)  # one lease: taken by `hog` below, so its readers must copy
        pool.agent(2)
        hog = gismo.connect(pool.agents[1].socket)
        assert hog.info["lease"] is not None
        owner = gismo.connect(owner_agent.socket)
        words = OBJECT // 8
        fits = owner.geom.data_size // align_up(OBJECT + 64, 4096)
        rng = random.Random(SEED)

        def make() -> gismo.Ref:
            while True:
                try:
                    p = owner.create_array((words,), np.uint64)
                except gismo.StoreFull:  # the deleted object is still pinned by a reader: try again
                    continue
                p.array[:] = stress_words(p.slot, p.gen, words)
                return p.seal()

        refs = [make() for _ in range(fits)]
        assert owner.stats()["largest_free"] < OBJECT  # full: a new object can only reuse a freed extent
        counters = []
        for i, (sock, mode) in enumerate([(pool.agents[2].socket, "pin"), (pool.agents[1].socket, "copy")]):
            counter = ctx.Array("q", 3, lock=False)  # ok, stale, copy rejections (stress_reader.OK ...)
            proc = ctx.Process(target=stress_reader.run, args=(sock, 0, mode, SEED + i, stop, counter, out))
            proc.start()
            readers.append(proc)
            counters.append(counter)

        steps = reused = 0

        def enough() -> bool:
            """What the run needs (however long a loaded machine takes to get there): the schedule
            ran, each reader saw both outcomes, and the checked copy refused a changed slot."""
            return (
                steps >= MIN_STEPS
                and all(c[stress_reader.OK] >= 10 and c[stress_reader.STALE] >= 10 for c in counters)
                and counters[1][stress_reader.REJECTED] >= 1
            )

        def replace_one() -> bool:
            """One step of the schedule; True once the run has what it needs."""
            nonlocal steps, reused
            i = rng.randrange(len(refs))
            old = refs[i]
            owner.delete(old)
            new = make()
            assert new.generation != old.generation or new.slot != old.slot
            reused += (new.slot, new.offset) == (old.slot, old.offset)
            refs[i] = new
            steps += 1
            return enough()

        wait_until(
            replace_one,
            "both readers to see objects and stale refs, and the checked copy to refuse a slot changed",
            period=0,
        )
        stop.set()
        results = [out.get(timeout=60) for _ in readers]
        for proc in readers:
            proc.join(30)
            assert proc.exitcode == 0
        by_mode = {r["mode"]: r for r in results}
        print(f"stress: {steps} replacements, {reused} at the same slot and offset; readers: {results}")
        assert all("error" not in r for r in results), results
        assert [r["foreign"] for r in results] == [[], []], results
        assert by_mode["copy"]["copy_rejections"] >= 1  # the "changed while being copied" branch ran
        for r in results:
            assert r["ok"] >= 10 and r["stale"] >= 10, r  # both outcomes happened in both modes
        assert reused >= steps // 2, (reused, steps)  # same slot, same offset, new generation
        hog.close()
        owner.close()
    finally:
        stop.set()
        for proc in readers:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        pool.close()
