"""Ray's object store vs Gismo, side by side on one local 4-node Ray cluster (what `make bench` runs).

Measures, in one run, on the same cluster for both sides (`gismo.testing.LocalCluster`: 4 raylets,
one Gismo agent per node, all mapping one /dev/shm file):
  (a) a numpy array (1 GiB) made on node A and read on node B: `get`, and `get` + touch every
      page; Ray vs Gismo, and Ray's local get on node A as the reference;
  (b) an all-to-all shuffle, 16 map x 16 reduce tasks, 2 GiB and 4 GiB total, end to end; Ray vs
      Gismo on 4 nodes, and Ray on 1 node with 4 CPUs (a separate cluster) as the reference.
      The map tasks differ by API, on purpose and stated in the output: the Gismo map writes its
      blocks in place in the node's region (`shuffle(..., map_into=True)`, i.e.
      `gismo.ray.create_array`: no private array, no copy into the store), the Ray map is
      idiomatic Ray (make the array with np.full, return the blocks; Ray copies them into its
      store). `--gismo-map put` runs the Gismo map the Ray way (np.full, then `gismo.ray.put`);
  (d) the physical floor (bench/floor.py), in the same run: for (a), `touch_pages` over an
      already-mapped tmpfs file on node B (reading shared memory cannot be cheaper); for (b), bare
      numpy in as many processes as the shuffle has CPUs (4), writing the shuffle's blocks into
      one tmpfs file and then reading them as the reducers do (no Ray, no Gismo; run while no Ray
      cluster is up). Their ratios are in the table and in summary.json's "floor";
  (c) memory held for the shuffle: Ray's object stores (all nodes, incl. pulled copies: plasma
      pages touched by one shuffle on a fresh cluster) vs Gismo's slice (peak bytes used and
      reserved in all regions, plus what Ray holds for the small refs), each measured in an
      extra, untimed run.
Each measurement: the first run (cold) is reported apart, then the median of >= 3 warm repeats.
Sides are interleaved per repeat so background noise hits both alike, and every run starts on a
quiet cluster (`quiesce`: Ray keeps freeing/evicting after a call returns; neither side should
pay for the other's leftovers).

Outputs: a table on stdout, bench/results/{remote_get,shuffle,memory,summary}.json and
bench/results/ray_vs_gismo.png. `--quick` uses small sizes (and bench/results/quick/).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import ray

import gismo.ray as gray
from gismo.shuffle import shuffle
from gismo.testing import LocalCluster, leftover_processes
from gismo.testing.workloads import PAGE, make_array, touch_pages

sys.path.insert(0, str(Path(__file__).resolve().parent))
from floor import ShuffleFloor, make_mapped_file, read_mapped  # bench/ is not a package

GiB = 1 << 30
MiB = 1 << 20
HERE = Path(__file__).resolve().parent


# ---------------------------------------------------------------------------- task bodies


@ray.remote(num_cpus=1)
def ray_make(nbytes: int, fill: int) -> np.ndarray:
    return make_array(nbytes, fill)


@ray.remote(num_cpus=1)
def gismo_make(nbytes: int, fill: int) -> tuple[gray.ObjRef, float]:
    a = make_array(nbytes, fill)
    t0 = time.perf_counter()
    ref = gray.put(a)
    return ref, time.perf_counter() - t0


@ray.remote(num_cpus=1)
def read_remote(box: list[Any]) -> tuple[float, float, int, bool]:
    """Time get and get + touch-every-page of box[0] (a Ray ObjectRef or a gismo ObjRef).

    The ref is wrapped in a list so Ray does not resolve it before the task starts.
    """
    ref = box[0]
    t0 = time.perf_counter()
    a = gray.get(ref) if isinstance(ref, gray.ObjRef) else ray.get(ref)
    t1 = time.perf_counter()
    s = touch_pages(a)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t0, s, isinstance(ref, gray.ObjRef) and ref.in_gismo


@ray.remote(num_cpus=1)
def floor_read(path: str, nbytes: int) -> tuple[float, int]:
    """The floor of (a): one timed `touch_pages` over an already-mapped, already-faulted file."""
    times, checksum = read_mapped(path, nbytes, 1)
    return times[0], checksum


@ray.remote(num_cpus=0)
def ping() -> str:
    return str(ray.get_runtime_context().get_node_id())


def shuffle_map(spec: tuple[int, int, int]) -> list[np.ndarray]:
    """Map i: make bytes_per_map bytes (fill i+1) and split them into R equal blocks (views)."""
    index, bytes_per_map, reducers = spec
    return np.split(make_array(bytes_per_map, index % 251 + 1), reducers)


def shuffle_map_into(spec: tuple[int, int, int], make_block: Callable[..., np.ndarray]) -> list[np.ndarray]:
    """shuffle_map's blocks (same bytes), each made by `make_block` and filled in place."""
    index, bytes_per_map, reducers = spec
    blocks = []
    for _ in range(reducers):
        b = make_block((bytes_per_map // reducers,), np.uint8)
        b.fill(index % 251 + 1)
        blocks.append(b)
    return blocks


def shuffle_reduce(blocks: list[np.ndarray]) -> tuple[int, int]:
    """Touch every page of every block: (bytes seen, page checksum)."""
    return sum(b.nbytes for b in blocks), sum(touch_pages(b) for b in blocks)


# ---------------------------------------------------------------------------- measurement helpers


def median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def split_runs(xs: list[float]) -> dict[str, Any]:
    """{cold, warm_median, warm} from runs where run 0 is the cold one."""
    return {"cold": xs[0] if xs else None, "warm_median": median(xs[1:]), "warm": xs[1:]}


def plasma_files(marker: str) -> list[str]:
    """/proc paths of the plasma files (/dev/shm/plasma*, unlinked) held open by the cluster's raylets.

    Their st_blocks is what each store has touched: objects, pulled copies and transit buffers.
    Plasma does not give pages back, so it is a high-water mark: "memory this workload needed"
    on a fresh cluster. Cost: one scan of /proc (done once per sampler).
    """
    paths = []
    for pid in leftover_processes(marker):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() != "raylet":
                continue
            for fd in os.listdir(f"/proc/{pid}/fd"):
                path = f"/proc/{pid}/fd/{fd}"
                if "/plasma" in os.readlink(path):
                    paths.append(path)
        except OSError:
            continue
    return paths


def allocated(paths: list[str]) -> int:
    total = 0
    for path in paths:
        with contextlib.suppress(OSError):
            total += os.stat(path).st_blocks * 512
    return total


class MemorySampler:
    """Samples, every `period`, bytes held by Ray's object stores and by Gismo; keeps the peaks.

    Used only in untimed runs (a driver thread competes for the GIL and the 2 cores).
    - ray (on request): tmpfs pages allocated to the raylets' plasma files (see `plasma_files`),
      which counts pulled copies too; and the cluster's `object_store_memory` in use (primary
      copies only, reported periodically by the raylets).
    - gismo (on request): the agents' `bytes_used` (objects and reservations; freed on delete).
    Cost per tick: a few fstat calls and one GCS call (ray), one agent call per node (gismo).
    """

    def __init__(
        self, lc: LocalCluster, gismo: bool, ray_stores: bool, active: bool = True, period: float = 0.1
    ) -> None:
        self.active = active
        self.period = period
        self.peak_ray_primary = 0
        self.peak_ray_plasma = 0
        self.peak_gismo = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._clients = _agent_clients(lc) if gismo else []
        self._plasma = plasma_files(lc.marker) if ray_stores else []
        self._ray = ray_stores
        self._ray_total = float(_ray_resources(available=False).get("object_store_memory", 0))
        self.base_ray_primary, self.base_ray_plasma, self.base_gismo = self.sample()

    def sample(self) -> tuple[int, int, int]:
        primary = 0
        if self._ray:
            avail = float(_ray_resources(available=True).get("object_store_memory", self._ray_total))
            primary = int(self._ray_total - avail)
        gismo_bytes = sum(_gismo_used(c.stats()) for c in self._clients)
        return primary, allocated(self._plasma), gismo_bytes

    def _tick(self) -> None:
        try:
            r, p, g = self.sample()
        except Exception:
            return
        self.peak_ray_primary = max(self.peak_ray_primary, r)
        self.peak_ray_plasma = max(self.peak_ray_plasma, p)
        self.peak_gismo = max(self.peak_gismo, g)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._tick()
            self._stop.wait(self.period)

    def __enter__(self) -> MemorySampler:
        if self.active:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.active:
            self._thread.join()
            self._tick()
        for c in self._clients:
            c.close()


def _cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except (OSError, IndexError, ValueError):
            continue
    return total / tick


def quiesce(lc: LocalCluster, idle: float = 0.1, window: float = 0.5, limit: float = 15.0) -> float:
    """Wait until the cluster's processes use < `idle` of a core over `window` s; returns the wait.

    Why: Ray keeps working after a call returns (freeing and evicting objects, pulls); without
    this, the next run (often the other side's) would pay for it. Cost: the wait itself.
    """
    gc.collect()
    t0 = time.monotonic()
    pids = leftover_processes(lc.marker)
    before = _cpu_seconds(pids)
    while time.monotonic() - t0 < limit:
        time.sleep(window)
        now = _cpu_seconds(pids)
        if now - before < idle * window:
            break
        before = now
    return time.monotonic() - t0


def _ray_resources(available: bool) -> dict[str, float]:
    fn: Any = ray.available_resources if available else ray.cluster_resources
    return dict(fn())


def _agent_clients(lc: LocalCluster) -> list[Any]:
    if not lc.with_agents:
        return []
    import gismo

    return [gismo.connect(socket_path=a.socket_path) for a in lc.agents]


def _gismo_used(stats: dict[str, Any]) -> int:
    """Bytes of a region held: sealed objects (`bytes_used`) plus open reservations (`bytes_reserved`:
    in-flight puts and clients' small-object stashes)."""
    return int(stats["bytes_used"]) + int(stats.get("bytes_reserved", 0))


# ---------------------------------------------------------------------------- (a) remote get


def bench_remote_get(lc: LocalCluster, nbytes: int, runs: int) -> dict[str, Any]:
    """Array made on node 0 (A), read on node 1 (B); Ray local read on node 0 as reference, and the
    floor: a plain read of already-mapped memory on node B (a tmpfs file of the same size)."""
    res: dict[str, dict[str, list[float]]] = {
        k: {"get": [], "get_read": []} for k in ("ray_remote", "gismo_remote", "ray_local")
    }
    put_s: list[float] = []
    floor_s: list[float] = []
    floor_fill = 7
    floor_path = make_mapped_file(nbytes, floor_fill)
    try:
        fallbacks = _remote_get_runs(lc, nbytes, runs, res, put_s, floor_s, floor_path, floor_fill)
    finally:
        Path(floor_path).unlink(missing_ok=True)
    out: dict[str, Any] = {"bytes": nbytes, "runs": runs, "gismo_put_s": split_runs(put_s)}
    out["gismo_fallbacks"] = fallbacks
    for key, d in res.items():
        out[key] = {m: split_runs(v) for m, v in d.items()}
    out["floor_read"] = {"get_read": split_runs(floor_s)}
    return out


def _remote_get_runs(
    lc: LocalCluster,
    nbytes: int,
    runs: int,
    res: dict[str, dict[str, list[float]]],
    put_s: list[float],
    floor_s: list[float],
    floor_path: str,
    floor_fill: int,
) -> int:
    """The repeats of `bench_remote_get`, appending to its lists; returns Gismo's fallback count."""
    a_node, b_node = lc.on_node(0), lc.on_node(1)
    pages = -(-nbytes // PAGE)
    fallbacks = 0
    for rep in range(runs):
        fill = rep % 200 + 1
        # Ray: the array is the task's return value, stored in node A's object store.
        quiesce(lc)
        rref = ray_make.options(scheduling_strategy=a_node).remote(nbytes, fill)
        ray.wait([rref], fetch_local=False)
        for key, where in (("ray_remote", b_node), ("ray_local", a_node)):
            g, gr, s, _ = ray.get(read_remote.options(scheduling_strategy=where).remote([rref]))
            _check(s, fill * pages, key)
            res[key]["get"].append(g)
            res[key]["get_read"].append(gr)
        del rref
        # Gismo: the array is put into node A's region; node B reads it in place.
        quiesce(lc)
        gref, p = ray.get(gismo_make.options(scheduling_strategy=a_node).remote(nbytes, fill))
        put_s.append(p)
        fallbacks += not gref.in_gismo
        g, gr, s, _ = ray.get(read_remote.options(scheduling_strategy=b_node).remote([gref]))
        _check(s, fill * pages, "gismo_remote")
        res["gismo_remote"]["get"].append(g)
        res["gismo_remote"]["get_read"].append(gr)
        gray.free([gref])
        # Floor: the same read over memory already mapped on node B, no store in the way.
        quiesce(lc)
        fr, s = ray.get(floor_read.options(scheduling_strategy=b_node).remote(floor_path, nbytes))
        _check(s, floor_fill * pages, "floor_read")
        floor_s.append(fr)
    return fallbacks


def _check(got: int, want: int, what: str) -> None:
    if got != want:
        raise AssertionError(f"{what}: page checksum {got} != {want} (wrong bytes read)")


# ---------------------------------------------------------------------------- (b)+(c) shuffle


GISMO_MAP = {"mode": "in-place"}  # set from --gismo-map
MAP_NOTE = {
    "in-place": "Gismo map writes its blocks in place (shuffle map_into=True / gismo.ray.create_array: "
    "no private array, no copy into the store; an API advantage); Ray map = np.full + return blocks "
    "(idiomatic Ray, Ray copies them into its store)",
    "put": "both maps make the array with np.full; Gismo puts the blocks (one copy into the region), "
    "Ray returns them (Ray copies them into its store)",
}


def run_shuffle(
    total: int, backend: str, nodes: int, lc: LocalCluster, sample: bool = False
) -> dict[str, Any]:
    """One 16x16 shuffle of `total` bytes; maps on node i % nodes, reducers on node (j + 1) % nodes.

    The Gismo map writes its blocks in place (`map_into`) unless `--gismo-map put`; Ray's map
    makes the array and returns its blocks (see the module docstring).

    With `sample`, memory is sampled during the run (a thread in this driver: it competes for
    the GIL and the 2 cores, so sampled runs are kept out of the timing medians).
    """
    maps = reducers = 16
    per_map = total // maps
    specs = [(i, per_map, reducers) for i in range(maps)]
    placement: dict[str, Any] = {}
    if nodes > 1:
        placement = {
            "map_strategy": lambda i: lc.on_node(i % nodes),
            "reduce_strategy": lambda j: lc.on_node((j + 1) % nodes),
        }
    # Gismo runs also sample Ray's stores: the refs travel through Ray, their bytes count too.
    gismo = backend == "gismo"
    with MemorySampler(lc, gismo=gismo and sample, ray_stores=sample, active=sample) as mem:
        t0 = time.perf_counter()
        if gismo and GISMO_MAP["mode"] == "in-place":
            r = shuffle(
                shuffle_map_into, specs, reducers, shuffle_reduce, backend="gismo", map_into=True, **placement
            )
        else:
            r = shuffle(shuffle_map, specs, reducers, shuffle_reduce, backend=backend, **placement)  # type: ignore[arg-type]
        dt = time.perf_counter() - t0
    seen = sum(x[0] for x in r.results)
    want = sum((i % 251 + 1) * (per_map // PAGE) for i in range(maps))
    if seen != per_map * maps or sum(x[1] for x in r.results) != want:
        raise AssertionError(f"shuffle {backend} {total}: wrong result")
    return {
        "seconds": dt,
        "gismo_held_bytes": mem.peak_gismo - mem.base_gismo,
        "ray_primary_held_bytes": mem.peak_ray_primary - mem.base_ray_primary,
        "ray_plasma_allocated_bytes": mem.peak_ray_plasma,
        "ray_plasma_allocated_before": mem.base_ray_plasma,
        "fallbacks": r.fallbacks,
        "freed": r.freed,
    }


def bench_shuffle(
    lc: LocalCluster, sizes: list[int], runs: int, backends: list[str], nodes: int, label: str
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for total in sizes:
        raw: dict[str, list[dict[str, Any]]] = {b: [] for b in backends}
        for _ in range(runs):
            for b in backends:
                waited = quiesce(lc)
                raw[b].append(run_shuffle(total, b, nodes, lc))
                raw[b][-1]["settle_s"] = waited
                took = raw[b][-1]["seconds"]
                print(
                    f"  shuffle {label} {b} {total / GiB:.2f} GiB: {took:.2f} s (settled {waited:.1f} s)",
                    flush=True,
                )
        sampled: dict[str, dict[str, Any]] = {}
        if "gismo" in backends:
            quiesce(lc)
            sampled["gismo"] = run_shuffle(total, "gismo", nodes, lc, sample=True)
            print(f"  shuffle {label} gismo {total / GiB:.2f} GiB, memory-sampled run (untimed)", flush=True)
        for b, rs in raw.items():
            out[f"{b}_{label}_{total}"] = {
                "backend": b,
                "nodes": nodes,
                "bytes": total,
                "seconds": split_runs([x["seconds"] for x in rs]),
                "gismo_held_bytes": sampled.get(b, {}).get("gismo_held_bytes", 0),
                "ray_primary_held_bytes": sampled.get(b, {}).get("ray_primary_held_bytes", 0),
                "memory_run": sampled.get(b),
                "fallbacks": sum(x["fallbacks"] for x in rs),
                "runs": rs,
            }
    return out


def bench_floor_shuffle(sizes: list[int], runs: int, procs: int) -> dict[str, Any]:
    """(d) The shuffle's floor: its bytes written then read by `procs` bare numpy processes."""
    out: dict[str, Any] = {}
    for total in sizes:
        with ShuffleFloor(total, maps=16, reducers=16, procs=procs) as fl:
            xs = []
            for _ in range(runs):
                xs.append(fl.run())
                print(f"  floor {procs} processes {total / GiB:.2f} GiB: {xs[-1]:.2f} s", flush=True)
        out[f"floor_{procs}proc_{total}"] = {
            "backend": "floor", "processes": procs, "bytes": total, "seconds": split_runs(xs),
            "what": "16 maps fill their 16 blocks in one tmpfs file, then 16 reducers touch one byte "
            "per 4 KiB page of their block of every map (the benchmark's own map and reduce work)",
        }  # fmt: skip
    return out


def bench_ray_memory(total: int, store: int) -> dict[str, Any]:
    """(c) Ray side: one shuffle on a fresh 4-node Ray cluster; plasma pages it needed."""
    with LocalCluster(4, cpus_per_node=1, object_store_bytes=store, agents=False) as lc:
        ray.get([ping.options(scheduling_strategy=lc.on_node(i)).remote() for i in range(4)])
        quiesce(lc)
        r = run_shuffle(total, "ray", 4, lc, sample=True)
    held = r["ray_plasma_allocated_bytes"] - r["ray_plasma_allocated_before"]
    print(f"  fresh-cluster Ray shuffle {total / GiB:.2f} GiB: {r['seconds']:.2f} s, stores needed "
          f"{held / GiB:.2f} GiB", flush=True)  # fmt: skip
    return {
        "bytes": total,
        "ray_store_bytes": held,
        "ray_primary_held_bytes": r["ray_primary_held_bytes"],
        **r,
    }


# ---------------------------------------------------------------------------- report


def ratio(num: float, den: float) -> float:
    return num / den if den else float("nan")


def floor_ratios(rg: dict[str, Any], sh: dict[str, Any], fl: dict[str, Any], big: int) -> dict[str, Any]:
    """Each side's warm median over the floor's warm median (1.0 = no cost beyond the floor)."""
    floor_read = rg["floor_read"]["get_read"]["warm_median"]
    floor_shuffle = fl[f"floor_4proc_{big}"]["seconds"]["warm_median"]
    out: dict[str, Any] = {
        "floor_read_s": floor_read,
        "floor_shuffle_s": floor_shuffle,
        "bytes_read": rg["bytes"],
        "bytes_shuffled": big,
    }
    for key in ("gismo_remote", "ray_local", "ray_remote"):
        out[f"{key}_get_read_vs_floor"] = ratio(rg[key]["get_read"]["warm_median"], floor_read)
    for key in ("gismo_4node", "ray_4node", "ray_1node"):
        out[f"shuffle_{key}_vs_floor"] = ratio(sh[f"{key}_{big}"]["seconds"]["warm_median"], floor_shuffle)
    return out


def summarize(
    rg: dict[str, Any], sh: dict[str, Any], mem: dict[str, Any], fl: dict[str, Any], big: int
) -> dict[str, Any]:
    rr = rg["ray_remote"]["get_read"]["warm_median"]
    gr = rg["gismo_remote"]["get_read"]["warm_median"]
    rl = rg["ray_local"]["get_read"]["warm_median"]
    ray4 = sh[f"ray_4node_{big}"]["seconds"]["warm_median"]
    gis4 = sh[f"gismo_4node_{big}"]["seconds"]["warm_median"]
    ray1 = sh[f"ray_1node_{big}"]["seconds"]["warm_median"]
    gmem = mem["gismo_bytes"]
    rmem = mem["ray_store_bytes"]
    s: dict[str, Any] = {
        "remote_get_read_speedup": {
            "value": ratio(rr, gr), "target": ">= 15",
            "ray_remote_get_read_s": rr, "gismo_remote_get_read_s": gr,
        },
        "remote_vs_ray_local": {
            "value": ratio(gr, rl), "target": "<= 1.25",
            "gismo_remote_get_read_s": gr, "ray_local_get_read_s": rl,
        },
        "shuffle_4gib_speedup": {
            "value": ratio(ray4, gis4), "target": ">= 2.8",
            "ray_4node_s": ray4, "gismo_4node_s": gis4, "bytes": big,
        },
        "shuffle_vs_ray_1node": {
            "value": ratio(gis4, ray1), "target": "<= 1.0",
            "gismo_4node_s": gis4, "ray_1node_s": ray1, "bytes": big,
        },
        "shuffle_memory_ratio": {
            "value": ratio(gmem, big), "target": "<= 1.1",
            "gismo_held_bytes": gmem, "ray_store_bytes": rmem,
            "ray_memory_ratio": ratio(rmem, big), "bytes": big,
        },
        "shuffle_4gib_vs_floor": {
            "value": ratio(gis4, fl[f"floor_4proc_{big}"]["seconds"]["warm_median"]), "target": "<= 1.5",
            "gismo_4node_s": gis4, "floor_4proc_s": fl[f"floor_4proc_{big}"]["seconds"]["warm_median"],
            "bytes": big,
        },
    }  # fmt: skip
    checks: dict[str, Callable[[float], bool]] = {
        "remote_get_read_speedup": lambda v: v >= 15,
        "remote_vs_ray_local": lambda v: v <= 1.25,
        "shuffle_4gib_speedup": lambda v: v >= 2.8,
        "shuffle_vs_ray_1node": lambda v: v <= 1.0,
        "shuffle_memory_ratio": lambda v: v <= 1.1,
        "shuffle_4gib_vs_floor": lambda v: v <= 1.5,
    }
    for k, ok in checks.items():
        s[k]["met"] = bool(ok(s[k]["value"]))
    return s


def fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{x:8.3f}"


def print_table(
    rg: dict[str, Any],
    sh: dict[str, Any],
    mem: dict[str, Any],
    fl: dict[str, Any],
    floor: dict[str, Any],
    summary: dict[str, Any],
) -> None:
    print(f"\n(a) {rg['bytes'] / GiB:.2f} GiB array made on node A           cold (s)   warm median (s)")
    names = {"ray_remote": "Ray remote (B)", "gismo_remote": "Gismo remote (B)", "ray_local": "Ray local (A)"}
    for key, name in names.items():
        for m in ("get", "get_read"):
            d = rg[key][m]
            print(f"    {name:18s} {m:9s}                 {fmt_s(d['cold'])}   {fmt_s(d['warm_median'])}")
    d = rg["floor_read"]["get_read"]
    name = "floor: mapped read (B)"
    print(f"    {name:28s} read                {fmt_s(d['cold'])}   {fmt_s(d['warm_median'])}")
    print("\n(b) shuffle 16 map x 16 reduce, end to end     cold (s)   warm median (s)")
    for line in textwrap.wrap(f"note: {MAP_NOTE[GISMO_MAP['mode']]}", 96):
        print(f"    {line}")
    for d in sh.values():
        name = f"{d['backend']} {d['nodes']} node(s) {d['bytes'] / GiB:.2f} GiB"
        sec = d["seconds"]
        print(f"    {name:40s}   {fmt_s(sec['cold'])}   {fmt_s(sec['warm_median'])}")
    for d in fl.values():
        name = f"floor: numpy, {d['processes']} processes {d['bytes'] / GiB:.2f} GiB"
        sec = d["seconds"]
        print(f"    {name:40s}   {fmt_s(sec['cold'])}   {fmt_s(sec['warm_median'])}")
    big = mem["bytes"]
    print(f"\n(c) memory held for a {big / GiB:.2f} GiB shuffle on 4 nodes")
    print(f"    Ray object stores (fresh cluster, plasma pages)  {mem['ray_store_bytes'] / GiB:6.2f} GiB")
    print(f"    Gismo slice + Ray for the refs (peak)          {mem['gismo_bytes'] / GiB:6.2f} GiB")
    print("\nratios to the physical floor (warm medians; 1.0 = nothing above bare numpy)")
    for k, v in floor.items():
        if k.endswith("_vs_floor"):
            print(f"    {k:34s} {v:8.2f}")
    print("\nratios (warm medians)")
    for k, v in summary.items():
        mark = "met" if v["met"] else "MISSED"
        print(f"    {k:26s} {v['value']:8.2f}   target {v['target']:7s} {mark}")


def chart(
    rg: dict[str, Any], sh: dict[str, Any], mem: dict[str, Any], fl: dict[str, Any], path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    ax = axes[0]
    names = ["Ray remote", "Gismo remote", "Ray local"]
    keys = ["ray_remote", "gismo_remote", "ray_local"]
    x = np.arange(len(names))
    for off, m in ((-0.2, "get"), (0.2, "get_read")):
        ax.bar(x + off, [rg[k][m]["warm_median"] for k in keys], 0.4, label=m.replace("_", " + "))
    ax.set_xticks(x, names)
    ax.set_yscale("log")
    ax.set_ylabel("seconds (warm median, log)")
    ax.set_title(f"(a) read {rg['bytes'] / GiB:.2g} GiB made on another node")
    ax.legend()
    ax = axes[1]
    sizes = sorted({d["bytes"] for d in sh.values()})
    series = [
        ("ray", "4node", "Ray 4 nodes"),
        ("gismo", "4node", "Gismo 4 nodes"),
        ("ray", "1node", "Ray 1 node"),
    ]
    x = np.arange(len(sizes))
    both = {**sh, **fl}
    series.append(("floor", "4proc", "floor (numpy, 4 procs)"))
    for i, (b, lab, name) in enumerate(series):
        vals = [both.get(f"{b}_{lab}_{s}", {}).get("seconds", {}).get("warm_median", 0) for s in sizes]
        ax.bar(x + (i - 1.5) * 0.2, vals, 0.2, label=name)
    ax.set_xticks(x, [f"{s / GiB:.2g} GiB" for s in sizes])
    ax.set_ylabel("seconds (warm median)")
    ax.set_title("(b) shuffle 16 map x 16 reduce")
    ax.legend()
    ax = axes[2]
    big = mem["bytes"]
    vals = [mem["ray_store_bytes"] / GiB, mem["gismo_bytes"] / GiB, big / GiB]
    ax.bar(["Ray stores", "Gismo slice", "data"], vals, color=["C0", "C1", "gray"])
    ax.set_ylabel("GiB held at peak")
    ax.set_title(f"(c) memory for a {big / GiB:.2g} GiB shuffle on 4 nodes")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    ap.add_argument("--repeats", type=int, default=3, help="warm repeats per measurement (>= 3)")
    ap.add_argument("--out", type=Path, default=None, help="results folder")
    ap.add_argument(
        "--gismo-map", choices=sorted(MAP_NOTE), default="in-place",
        help="how the Gismo shuffle map makes its blocks (default: in place)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    GISMO_MAP["mode"] = args.gismo_map
    runs = 1 + max(3, args.repeats)
    if args.quick:
        array, sizes = 64 * MiB, [128 * MiB, 256 * MiB]
        store4, store1, region = 512 * MiB, 768 * MiB, 256 * MiB
        out = args.out or HERE / "results" / "quick"
    else:
        array, sizes = 1 * GiB, [2 * GiB, 4 * GiB]
        store4, store1, region = 3 * GiB, 6 * GiB, 3 * GiB // 2
        out = args.out or HERE / "results"
    big = sizes[-1]
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "ray": ray.__version__, "nodes": 4, "cpus_per_node": 1, "object_store_per_node": store4,
        "region_per_node": region, "one_node_object_store": store1, "one_node_cpus": 4,
        "machine_cpus": os.cpu_count(), "repeats_warm": runs - 1, "quick": args.quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "loadavg_1m_start": os.getloadavg()[0],
        "read": "touch one byte of every 4 KiB page", "placement": "map i on node i%4, reduce j on (j+1)%4",
        "gismo_shuffle_map": args.gismo_map, "shuffle_map_note": MAP_NOTE[args.gismo_map],
    }  # fmt: skip
    print(
        f"Ray {ray.__version__} vs Gismo: 4 local Ray nodes x 1 CPU, store {store4 / GiB:.2g} GiB/node, "
        f"Gismo region {region / GiB:.2g} GiB/node; {runs - 1} warm repeats + 1 cold",
        flush=True,
    )
    with LocalCluster(4, cpus_per_node=1, object_store_bytes=store4, region_bytes=region) as lc:
        ray.get([ping.options(scheduling_strategy=lc.on_node(i)).remote() for i in range(4)])
        print("(a) remote get ...", flush=True)
        rg = bench_remote_get(lc, array, runs)
        print("(b) shuffle on 4 nodes, Ray and Gismo interleaved ...", flush=True)
        sh = bench_shuffle(lc, sizes, runs, ["ray", "gismo"], 4, "4node")
    print("(d) floor: the shuffle's bytes written, then read, by 4 numpy processes ...", flush=True)
    fl = bench_floor_shuffle(sizes, runs, procs=4)
    print("(b) shuffle, Ray on 1 node with 4 CPUs ...", flush=True)
    with LocalCluster(1, cpus_per_node=4, object_store_bytes=store1, agents=False) as lc1:
        ray.get(ping.remote())
        sh.update(bench_shuffle(lc1, sizes, runs, ["ray"], 1, "1node"))
    print("(c) memory: Ray's stores on a fresh 4-node cluster ...", flush=True)
    mem = bench_ray_memory(big, store4)
    g = sh[f"gismo_4node_{big}"]
    mem["gismo_bytes"] = g["gismo_held_bytes"] + g["ray_primary_held_bytes"]
    mem["gismo_slice_bytes"] = g["gismo_held_bytes"]
    mem["gismo_ray_store_bytes"] = g["ray_primary_held_bytes"]
    meta["loadavg_1m_end"] = os.getloadavg()[0]  # other users of the 2 cores show up here
    summary = summarize(rg, sh, mem, fl, big)
    floor = floor_ratios(rg, sh, fl, big)
    print_table(rg, sh, mem, fl, floor, summary)
    (out / "remote_get.json").write_text(json.dumps({"meta": meta, **rg}, indent=2))
    (out / "shuffle.json").write_text(json.dumps({"meta": meta, **sh, **fl}, indent=2))
    (out / "memory.json").write_text(json.dumps({"meta": meta, **mem}, indent=2))
    doc = {"meta": meta, "targets": summary, "floor": floor}
    (out / "summary.json").write_text(json.dumps(doc, indent=2))
    chart(rg, sh, mem, fl, out / "ray_vs_gismo.png")
    print(f"\nwrote {out}/{{remote_get,shuffle,memory,summary}}.json and ray_vs_gismo.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
