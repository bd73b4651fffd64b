"""Weight broadcast: one actor publishes weights, 4 actors on 4 local Ray nodes each read all of them.

The workload the GISMO tensor transport fits: a learner or trainer actor publishing weights that
every rollout or inference actor reads. Two payloads: one 1 GiB array, and a dict of 64 arrays
totalling 1 GiB. Three ways, in the same run, on one LocalCluster of 4 nodes (the producer on
node 0, one reader per node):

- ``ray``: the method returns the arrays; Ray's object store carries them (a copy into the
  producer's store, a pull into each other node's store);
- ``gismo-transport``: ``@ray.method(tensor_transport="GISMO")`` returning ``gismo.ray.shared``
  arrays: placed once in node 0's region, every reader maps the same bytes; freed by Ray's refcount;
- ``gismo-put``: the method returns ``gismo.ray.put(...)`` (an ObjRef); readers ``gismo.ray.get``;
  freed explicitly with ``gismo.ray.free``.

Time: from the publish call until all 4 readers have touched every page (one 8-byte word per 4 KiB
page, checked against the fill pattern) of every array; the producer's weights exist beforehand
(made once, outside the timing, identical for all three). Warm medians; the first (cold) run of
each is recorded too. Memory: a separate untimed run per way, readers holding what they read,
measured while they hold it: tmpfs pages of the raylets' plasma files (what Ray's stores touched:
primary and pulled copies; a fresh cluster per benchmark, and the Ray way runs first, since plasma
never gives pages back) plus the agents' bytes in use, divided by the payload. Then every Gismo
object must be gone once the refs are (agent stats back to where they started).

Run: ``make bench-broadcast`` (or ``.venv/bin/python bench/broadcast.py [--runs N] [--gib X]``).
Output: a table, ``bench/results/broadcast.json`` (top-level ``targets``) and ``broadcast.png``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gismo.ray as gray
from gismo.testing import LocalCluster
from ray_vs_gismo import allocated, median, plasma_files, quiesce

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
MiB = 1 << 20
GiB = 1 << 30
PAGE = 4096
READERS = 4
PARTS = 64
WAYS = ("ray", "gismo-transport", "gismo-put")
TARGET_SPEEDUP = 5.0
TARGET_COPIES = 1.1


def weights(kind: str, nbytes: int) -> Any:
    """The payload, filled so every page can be checked: word k of array i holds i + 1."""
    if kind == "array":
        return {"w0": np.full(nbytes // 8, 1, dtype=np.uint64)}
    each = nbytes // PARTS // 8
    return {f"w{i}": np.full(each, i + 1, dtype=np.uint64) for i in range(PARTS)}


def touch(value: Any) -> int:
    """Read one word per page of every array; the sum of (word == expected) over pages read."""
    arrays = value if isinstance(value, dict) else {"w0": value}
    ok = 0
    for name, arr in arrays.items():
        want = int(name[1:]) + 1
        ok += int(np.count_nonzero(arr[:: PAGE // 8] == want))
    return ok


def pages(kind: str, nbytes: int) -> int:
    """How many pages ``touch`` checks in the payload ``weights(kind, nbytes)``."""
    per_page = PAGE // 8
    if kind == "array":
        return -(-(nbytes // 8) // per_page)
    return PARTS * -(-(nbytes // PARTS // 8) // per_page)


@ray.remote(enable_tensor_transport=True, num_cpus=0)
class Producer:
    def __init__(self) -> None:
        self.w: dict[str, Any] = {}
        self.kind = "array"

    def make(self, kind: str, nbytes: int) -> int:
        self.w = {}
        gc.collect()
        self.kind, self.w = kind, weights(kind, nbytes)
        return sum(int(a.nbytes) for a in self.w.values())

    def _value(self, mark: Any) -> Any:
        if self.kind == "array":
            return mark(self.w["w0"])
        return {k: mark(v) for k, v in self.w.items()}

    def publish_ray(self) -> Any:
        return self._value(lambda a: a)

    @ray.method(tensor_transport="GISMO")
    def publish_transport(self) -> Any:
        return self._value(gray.shared)

    def publish_put(self) -> Any:
        return gray.put(self._value(lambda a: a))

    def stats(self) -> dict[str, Any]:
        return gray.stats()


@ray.remote(enable_tensor_transport=True, num_cpus=0)
class Reader:
    def __init__(self) -> None:
        self.held: Any = None

    def read(self, value: Any, keep: bool = False) -> int:
        if isinstance(value, gray.ObjRef):
            value = gray.get(value)
        ok = touch(value)
        self.held = value if keep else None
        return ok

    def drop(self) -> None:
        self.held = None
        gc.collect()

    def stats(self) -> dict[str, Any]:
        return gray.stats()


def publish(producer: Any, way: str) -> Any:
    if way == "ray":
        return producer.publish_ray.remote()
    if way == "gismo-transport":
        return producer.publish_transport.remote()
    return ray.get(producer.publish_put.remote())  # the ObjRef, a few hundred bytes


def one_run(
    producer: Any, readers: list[Any], way: str, expect: int, keep: bool = False
) -> tuple[float, Any]:
    t0 = time.perf_counter()
    ref = publish(producer, way)
    got = ray.get([r.read.remote(ref, keep) for r in readers])
    elapsed = time.perf_counter() - t0
    if got != [expect] * len(readers):
        raise RuntimeError(f"{way}: readers checked {got} pages, expected {expect} each")
    return elapsed, ref


def release(readers: list[Any], way: str, ref: Any) -> None:
    ray.get([r.drop.remote() for r in readers])
    if way == "gismo-put":
        gray.free([ref])


def agent_totals(lc: LocalCluster) -> dict[str, int]:
    stats = lc.agent_stats()
    return {
        "objects": sum(int(s["objects"]) for s in stats),
        "bytes_used": sum(int(s["bytes_used"]) + int(s.get("bytes_reserved", 0)) for s in stats),
    }


def wait_back(lc: LocalCluster, base: dict[str, int], limit: float = 30.0) -> tuple[dict[str, int], float]:
    t0 = time.monotonic()
    now = agent_totals(lc)
    while now != base and time.monotonic() - t0 < limit:
        time.sleep(0.05)
        now = agent_totals(lc)
    return now, time.monotonic() - t0


def bench_kind(
    lc: LocalCluster, producer: Any, readers: list[Any], kind: str, nbytes: int, runs: int
) -> dict[str, Any]:
    size = ray.get(producer.make.remote(kind, nbytes))
    expect = pages(kind, nbytes)
    out: dict[str, Any] = {"kind": kind, "bytes": size, "arrays": 1 if kind == "array" else PARTS, "ways": {}}
    plasma = plasma_files(lc.marker)
    for way in WAYS:  # memory first, Ray first: plasma pages are a high-water mark
        quiesce(lc)
        base_gismo, base_plasma = agent_totals(lc), allocated(plasma)
        _t, ref = one_run(producer, readers, way, expect, keep=True)
        time.sleep(0.5)  # let Ray's pulls settle their pages
        held_plasma = allocated(plasma) - base_plasma
        held_gismo = agent_totals(lc)["bytes_used"] - base_gismo["bytes_used"]
        release(readers, way, ref)
        del ref
        gc.collect()
        after, waited = wait_back(lc, base_gismo)
        out["ways"][way] = {
            "memory": {
                "ray_plasma_bytes": held_plasma, "gismo_bytes": held_gismo,
                "copies": round((held_plasma + held_gismo) / size, 3),
            },
            "gismo_objects_before": base_gismo["objects"], "gismo_objects_after": after["objects"],
            "gismo_bytes_after_minus_before": after["bytes_used"] - base_gismo["bytes_used"],
            "gone_after_s": round(waited, 3),
        }  # fmt: skip
    for way in WAYS:
        times = []
        for _ in range(runs + 1):
            quiesce(lc)
            elapsed, ref = one_run(producer, readers, way, expect)
            times.append(elapsed)
            release(readers, way, ref)
            del ref
            gc.collect()
        out["ways"][way].update({"cold_s": times[0], "warm_s": times[1:], "warm_median_s": median(times[1:])})
    ray.get(producer.make.remote(kind, 0))
    return out


def targets(results: list[dict[str, Any]]) -> dict[str, Any]:
    t: dict[str, Any] = {}
    for r in results:
        w = r["ways"]
        speed = w["ray"]["warm_median_s"] / w["gismo-transport"]["warm_median_s"]
        t[f"{r['kind']}_transport_speedup_vs_ray"] = {
            "value": round(speed, 2), "target": f">= {TARGET_SPEEDUP}", "met": speed >= TARGET_SPEEDUP,
        }  # fmt: skip
        copies = w["gismo-transport"]["memory"]["copies"]
        t[f"{r['kind']}_transport_memory_copies"] = {
            "value": copies, "target": f"<= {TARGET_COPIES}", "met": copies <= TARGET_COPIES,
        }  # fmt: skip
        for way in ("gismo-transport", "gismo-put"):
            gone = w[way]["gismo_objects_after"] == w[way]["gismo_objects_before"] and (
                w[way]["gismo_bytes_after_minus_before"] == 0
            )
            t[f"{r['kind']}_{way}_objects_gone"] = {"value": gone, "target": True, "met": gone}
    return t


def print_table(results: list[dict[str, Any]]) -> None:
    head = f"{'payload':<22} {'way':<16} {'warm median':>12} {'cold':>8} {'vs ray':>8}"
    print(f"\n{head} {'copies held':>12} {'gone':>5}")
    for r in results:
        w = r["ways"]
        label = f"{r['bytes'] / GiB:g} GiB, {r['arrays']} array" + ("s" if r["arrays"] > 1 else "")
        for way in WAYS:
            x = w[way]
            speed = w["ray"]["warm_median_s"] / x["warm_median_s"]
            gone = (
                "-"
                if way == "ray"
                else ("yes" if x["gismo_objects_after"] == x["gismo_objects_before"] else "NO")
            )
            print(
                f"{label:<22} {way:<16} {x['warm_median_s']:>11.3f}s {x['cold_s']:>7.3f}s {speed:>7.1f}x "
                f"{x['memory']['copies']:>12.2f} {gone:>5}"
            )


def chart(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 3.6))
    labels = [
        f"{r['bytes'] / GiB:g} GiB, {r['arrays']} array" + ("s" if r["arrays"] > 1 else "") for r in results
    ]
    x = np.arange(len(results))
    width = 0.26
    for i, way in enumerate(WAYS):
        ax_t.bar(x + (i - 1) * width, [r["ways"][way]["warm_median_s"] for r in results], width, label=way)
        ax_m.bar(x + (i - 1) * width, [r["ways"][way]["memory"]["copies"] for r in results], width, label=way)
    for ax, title in ((ax_t, "time to reach 4 readers on 4 nodes (s)"), (ax_m, "copies of the payload held")):
        ax.set_xticks(x, labels)
        ax.set_title(title, fontsize=10)
    ax_t.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gib", type=float, default=1.0, help="payload size in GiB")
    ap.add_argument("--runs", type=int, default=3, help="warm runs per way (after one cold run)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args(argv)
    nbytes = int(args.gib * GiB) // (PARTS * 8) * (PARTS * 8)
    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "loadavg_1m_start": os.getloadavg()[0],
        "cpus": os.cpu_count(), "ray": ray.__version__, "nodes": READERS, "payload_bytes": nbytes,
        "runs": args.runs, "read": "one 8-byte word per 4 KiB page of every array, checked",
    }  # fmt: skip
    region = nbytes + nbytes // 4 + 64 * MiB
    store = nbytes + nbytes // 2
    results = []
    meta["transport_stats_producer"] = []
    for kind in ("array", "dict"):
        # A fresh cluster per payload: plasma pages are a high-water mark, so Ray's memory is only
        # measurable on stores that have not held anything that size yet.
        with LocalCluster(READERS, cpus_per_node=1, object_store_bytes=store, region_bytes=region) as lc:
            producer = Producer.options(scheduling_strategy=lc.on_node(0)).remote()
            readers = [Reader.options(scheduling_strategy=lc.on_node(i)).remote() for i in range(READERS)]
            ray.get([producer.make.remote("array", MiB), *[r.drop.remote() for r in readers]])
            for way in WAYS:  # every actor registered and connected before anything is measured
                _t, ref = one_run(producer, readers, way, pages("array", MiB))
                release(readers, way, ref)
                del ref
            results.append(bench_kind(lc, producer, readers, kind, nbytes, args.runs))
            stats = ray.get(producer.stats.remote())
            meta["transport_stats_producer"].append(
                {k: v for k, v in stats.items() if k.startswith("transport")}
            )
    meta["loadavg_1m_end"] = os.getloadavg()[0]
    doc = {"targets": targets(results), "meta": meta, "results": results}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "broadcast.json").write_text(json.dumps(doc, indent=2, default=str))
    print_table(results)
    print("\ntargets:", json.dumps(doc["targets"], indent=1))
    chart(results, out / "broadcast.png")
    print(f"wrote {out}/broadcast.json and broadcast.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
