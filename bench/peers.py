"""Gismo against the peers a user would pick instead, in one run on this machine (`make bench-peers`).

Peers: Vineyard (v6d 0.24.2, the zero-copy object store with its own Kubernetes operator) and
Ray's object store (plasma, Ray 2.60). Each is started and stopped by this script, on loopback or
in a private network namespace, and nothing is left behind (checked at the end, in the JSON).

(1) Same node, at 4 KiB, 64 MiB and 1 GiB: put throughput from this process, then get latency
    from *another* process on the same node: get alone, and get + read every page. Every repeat
    puts a fresh object (the previous one deleted), so no get is served from a cache. Run 0 of
    each size is the first-touch run (fresh store memory), reported apart; median and p99 over
    the rest (nearest rank: with fewer than 100 repeats p99 is the slowest run).
      Gismo: a LocalCluster agent; writer and reader clients of node 0's agent.
      Vineyard: one vineyardd, --meta=local --norpc (IPC socket only).
      Ray: a fresh 1-node cluster; ray.put in the driver, ray.get in an actor on the same node.
(2) Cross node, 1 GiB of random bytes (compression gains nothing), made on node A, read on B:
      Gismo: B's client reads A's region in place.
      Vineyard: two instances sharing an etcd; B gets with fetch=True, i.e. migrates the object
        over TCP (loopback here), with --compression=false and with the default (true).
      Ray: two raylets; B's actor pulls the object.
(3) Memory held for one 1 GiB object read (and held) on 4 nodes, by each store's own count:
      Gismo: bytes used in all 4 regions (agents' stats); Vineyard: memory_usage of 4 instances
      (and their memfd pages); Ray: plasma pages touched on 4 raylets (fresh cluster; Ray has no
      per-node count of pulled copies).

Targets (issue 14; figures, not tests) are in the JSON's "targets"; the shuffle-vs-floor one
comes from `make bench` (bench/results/summary.json), named with its source.

    .venv/bin/python bench/peers.py [--quick] [--out bench/results/peers.json]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import ipaddress
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The Ray nodes of `ray_cluster` are told node_ip_address=127.0.0.1; this, set before Ray is imported,
# also keeps Ray from resolving the driver's own address to the interface (LocalCluster does the same).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # bench/ is not a package
import peers_vineyard as pv  # noqa: E402
from peers_readers import ReaderProcess, ray_reader_class, touch_pages  # noqa: E402
from peers_stats import GiB, MiB, build_targets, human, summarize, throughput  # noqa: E402

KiB = 1 << 10
PAGE = 4096


@dataclass(frozen=True)
class Plan:
    sizes: tuple[int, ...]
    reps: dict[int, int]  # warm repeats per size (plus one first-touch run)
    cross_bytes: int
    cross_reps: int
    region: int  # Gismo region per node
    ray_store: int  # Ray object store per node
    vineyard_size: str  # vineyardd --size


FULL = Plan(
    sizes=(4 * KiB, 64 * MiB, 1 * GiB),
    reps={4 * KiB: 200, 64 * MiB: 30, 1 * GiB: 8},
    cross_bytes=1 * GiB,
    cross_reps=4,
    region=1 * GiB + 256 * MiB,
    ray_store=1 * GiB + 512 * MiB,
    vineyard_size="1536Mi",
)
QUICK = Plan(
    sizes=(4 * KiB, 4 * MiB, 64 * MiB),
    reps={4 * KiB: 30, 4 * MiB: 8, 64 * MiB: 4},
    cross_bytes=64 * MiB,
    cross_reps=2,
    region=128 * MiB,
    ray_store=256 * MiB,
    vineyard_size="256Mi",
)


# ---------------------------------------------------------------------------- guards


def require_memory(nbytes: int, what: str) -> None:
    """Refuse to start `what` unless /dev/shm and RAM have `nbytes` free (others share the machine)."""
    shm = shutil.disk_usage("/dev/shm").free
    avail = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    if shm < nbytes or avail < nbytes:
        raise SystemExit(
            f"{what}: needs {nbytes / GiB:.1f} GiB free; /dev/shm has {shm / GiB:.1f} GiB, "
            f"RAM {avail / GiB:.1f} GiB available. Free some and run again."
        )


def descendants() -> list[Any]:
    import psutil

    return list(psutil.Process().children(recursive=True))


def exposed_listeners() -> list[str]:
    """Listening TCP sockets of our child processes on a non-loopback address in *this* network
    namespace (processes in a private namespace, such as Vineyard's cluster, are skipped)."""
    import psutil

    me = os.readlink("/proc/self/ns/net")
    out = []
    for p in descendants():
        try:
            if os.readlink(f"/proc/{p.pid}/ns/net") != me:
                continue
            for c in p.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN and not _loopback(c.laddr.ip):
                    out.append(f"{p.name()} pid {p.pid} listens on {c.laddr.ip}:{c.laddr.port}")
        except (psutil.Error, OSError):
            continue
    return out


def _ours(p: Any) -> bool:
    """A live child that this run started (multiprocessing's resource tracker exits with us)."""
    try:
        return p.is_running() and "multiprocessing.resource_tracker" not in " ".join(p.cmdline())
    except Exception:
        return False


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    mapped = addr.ipv4_mapped if isinstance(addr, ipaddress.IPv6Address) else None  # ::ffff:127.0.0.1
    return (mapped or addr).is_loopback


class Run:
    """What one benchmark run records besides figures: listeners seen, what was left behind."""

    def __init__(self) -> None:
        self.listeners: list[str] = []
        self.left: list[str] = []

    def check_listeners(self, peer: str) -> None:
        found = exposed_listeners()
        self.listeners += [f"{peer}: {x}" for x in found]
        if found:
            raise SystemExit(f"{peer} listens outside loopback: {found}")


# ---------------------------------------------------------------------------- one measurement loop


Put = Callable[[np.ndarray], Any]
Read = Callable[[Any], tuple[float, float, int]]


def measure(
    arr: np.ndarray, runs: int, put: Put, read: Read, delete: Callable[[Any], None], label: str
) -> dict[str, Any]:
    """`runs` times: put a fresh object (timed), read it in the reader (timed there), delete it."""
    want = touch_pages(arr)
    put_s: list[float] = []
    get_s: list[float] = []
    get_read_s: list[float] = []
    for _ in range(runs):
        t0 = time.perf_counter()
        handle = put(arr)
        put_s.append(time.perf_counter() - t0)
        g, gr, checksum = read(handle)
        if checksum != want:
            raise AssertionError(f"{label}: page checksum {checksum} != {want} (wrong bytes read)")
        get_s.append(g)
        get_read_s.append(gr)
        delete(handle)
    put_summary = summarize(put_s)
    return {
        "bytes": int(arr.nbytes),
        "put": {"seconds": put_summary, **throughput(arr.nbytes, put_summary)},
        "get": summarize(get_s),
        "get_read": summarize(get_read_s),
    }


def same_node(plan: Plan, put: Put, read: Read, delete: Callable[[Any], None], peer: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, size in enumerate(plan.sizes):
        arr = np.full(size, i + 3, dtype=np.uint8)
        out[str(size)] = measure(arr, 1 + plan.reps[size], put, read, delete, f"{peer} {human(size)}")
        d = out[str(size)]
        print(
            f"  {peer:8s} {human(size):>6s}  put {d['put']['median_Bps'] / GiB:7.2f} GiB/s "
            f"(first {d['put']['first_touch_Bps'] / GiB:6.2f})  get {d['get']['median'] * 1e6:9.1f} us "
            f"p99 {d['get']['p99'] * 1e6:9.1f}  get+read {d['get_read']['median'] * 1e3:8.3f} ms",
            flush=True,
        )
        del arr
    return out


# ---------------------------------------------------------------------------- Gismo


def bench_gismo(plan: Plan, random: np.ndarray, tmp: str, run: Run) -> dict[str, Any]:
    import gismo
    from gismo.testing import LocalCluster

    require_memory(4 * plan.region + plan.cross_bytes, "Gismo (4 regions)")
    # Ray is up only because LocalCluster starts agents with it; nothing below goes through Ray.
    with LocalCluster(
        4,
        cpus_per_node=1,
        object_store_bytes=128 * MiB,
        region_bytes=plan.region,
        tmp_root=tmp,
        connect=False,
    ) as lc:
        run.check_listeners("gismo (LocalCluster)")
        socks = [a.socket_path for a in lc.agents]
        writers = [gismo.connect(socket_path=s) for s in socks]
        readers = [ReaderProcess("gismo", s) for s in socks]
        try:
            _wait_prefault(lc.slice_path, 4 * plan.region)  # each client pre-faults its region at connect
            w = writers[0]
            print("(1) same node: Gismo", flush=True)
            same = same_node(plan, w.put, readers[0].read, w.delete, "gismo")
            print("(2) cross node: Gismo", flush=True)
            cross = measure(random, 1 + plan.cross_reps, w.put, readers[1].read, w.delete, "gismo cross")
            print(f"  gismo cross get+read {cross['get_read']['median'] * 1e3:.2f} ms", flush=True)
            print("(3) memory on 4 nodes: Gismo", flush=True)
            mem = _gismo_memory(random, writers, readers)
        finally:
            for r in readers:
                r.close()
            for c in writers:
                c.close()
    run.left += lc.leftovers()
    return {"same_node": same, "cross_node": cross, "memory": mem}


def _wait_prefault(path: str, want: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while os.stat(path).st_blocks * 512 < want and time.monotonic() < deadline:
        time.sleep(0.2)


def _gismo_used(clients: list[Any]) -> int:
    return sum(int(s["bytes_used"]) + int(s.get("bytes_reserved", 0)) for s in (c.stats() for c in clients))


def _gismo_settle(clients: list[Any], timeout: float = 10.0) -> None:
    """Until no deleted object waits for its space (an owner reclaims it once the readers' pins are
    gone, which it notices a little later): else the baseline would count the last run's object."""
    deadline = time.monotonic() + timeout
    while any(int(c.stats()["pending_deletes"]) for c in clients) and time.monotonic() < deadline:
        time.sleep(0.05)


def _gismo_memory(arr: np.ndarray, writers: list[Any], readers: list[ReaderProcess]) -> dict[str, Any]:
    _gismo_settle(writers)
    before = _gismo_used(writers)
    ref = writers[0].put(arr)
    try:
        for r in readers:
            r.read(ref, hold=True)
        held = _gismo_used(writers) - before
    finally:
        for r in readers:
            r.release()
        writers[0].delete(ref)
    return {"bytes": int(arr.nbytes), "held_bytes": held, "how": "bytes used in all 4 regions (agent stats)"}


# ---------------------------------------------------------------------------- Vineyard


def bench_vineyard(plan: Plan, random: np.ndarray, tmp: str, run: Run) -> dict[str, Any]:
    require_memory(2 * max(plan.sizes), "Vineyard (one instance)")
    out: dict[str, Any] = {}
    with pv.VineyardSingle(tmp, plan.vineyard_size) as single:
        run.check_listeners("vineyard (one instance)")
        client = pv.any_client(single.sockets[0])
        reader = ReaderProcess("vineyard", single.sockets[0])
        try:
            print("(1) same node: Vineyard", flush=True)
            out["same_node"] = same_node(
                plan,
                lambda a: (int(client.put(a)), False),
                reader.read,
                lambda h: _v_delete(client, h),
                "vineyard",
            )
        finally:
            reader.close()
            client.close()
    run.left += single.left_behind()
    why_not = pv.netns_available()
    if why_not:
        out["cross_node"] = {"skipped": f"no private network namespace: {why_not}"}
        print(f"  vineyard cross-node skipped: {why_not}", flush=True)
        return out
    out["cross_node"] = {}
    require_memory(4 * plan.cross_bytes + plan.cross_bytes, "Vineyard (4 instances)")
    for compression in (False, True):
        instances = 2 if compression else 4  # the 4-instance one also measures memory
        key = f"vineyard_{'compression' if compression else 'no_compression'}"
        print(f"(2) cross node: Vineyard, {instances} instances, --compression={compression}", flush=True)
        with pv.VineyardCluster(tmp, instances, plan.vineyard_size, compression) as vc:
            clients = [pv.any_client(s) for s in vc.sockets]
            readers = [ReaderProcess("vineyard", s) for s in vc.sockets]
            try:
                if not compression:
                    print("(3) memory on 4 nodes: Vineyard", flush=True)
                    out["memory"] = _vineyard_memory(random, vc, clients, readers)
                d = _vineyard_cross(random, 1 + plan.cross_reps, clients[0], readers[1], key)
                d["compression"] = compression
                out["cross_node"][key] = d
                print(
                    f"  {key}: migration {d['get']['median']:.3f} s (first {d['get']['first_touch']:.3f}), "
                    f"+read {d['get_read']['median']:.3f} s",
                    flush=True,
                )
            finally:
                for r in readers:
                    r.close()
                for c in clients:
                    c.close()
        run.left += vc.left_behind()
    return out


def _vineyard_cross(
    arr: np.ndarray, runs: int, writer: Any, reader: ReaderProcess, label: str
) -> dict[str, Any]:
    """Put on instance A (persisted), get with fetch=True on instance B: the migration."""

    def read(h: tuple[int, bool]) -> tuple[float, float, int]:
        return reader.read((h[0], True))

    return measure(arr, runs, lambda a: _v_put_global(writer, a), read, lambda h: _v_delete(writer, h), label)


def _v_put_global(client: Any, arr: np.ndarray) -> tuple[int, bool]:
    oid = client.put(arr)
    client.persist(oid)  # visible to the other instances (through etcd)
    return int(oid), True


def _v_delete(client: Any, handle: tuple[int, bool]) -> None:
    import vineyard

    client.delete(vineyard.ObjectID(handle[0]))


def _vineyard_memory(
    arr: np.ndarray, vc: pv.VineyardCluster, clients: list[Any], readers: list[ReaderProcess]
) -> dict[str, Any]:
    before, before_pages = pv.status_memory(clients), pv.memfd_bytes(vc.pids())
    handle = _v_put_global(clients[0], arr)
    try:
        readers[0].read((handle[0], False), hold=True)
        for r in readers[1:]:
            r.read((handle[0], True), hold=True)  # migrated here, held until release
        held = pv.status_memory(clients) - before
        pages = pv.memfd_bytes(vc.pids()) - before_pages
    finally:
        for r in readers:
            r.release()  # deletes the migrated copies
        _v_delete(clients[0], handle)
    return {
        "bytes": int(arr.nbytes), "held_bytes": held, "memfd_pages_bytes": pages,
        "how": "memory_usage of 4 instances (one original, three migrated copies)",
    }  # fmt: skip


# ---------------------------------------------------------------------------- Ray


@contextlib.contextmanager
def ray_cluster(nodes: int, store: int, tmp: str) -> Iterator[tuple[Any, list[str], list[int]]]:
    """`nodes` raylets on 127.0.0.1, the driver connected; yields (cluster, node ids, raylet pids)."""
    import ray
    from ray.cluster_utils import Cluster

    ray_tmp = tempfile.mkdtemp(prefix="ray-", dir=tmp)
    saved = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = ray_tmp
    cluster = None
    try:
        head = {
            "node_ip_address": "127.0.0.1", "num_cpus": 1, "object_store_memory": store,
            "include_dashboard": False, "temp_dir": os.path.join(ray_tmp, "ray"),
        }  # fmt: skip
        cluster = Cluster(initialize_head=True, head_node_args=head, shutdown_at_exit=False)
        for _ in range(nodes - 1):
            cluster.add_node(node_ip_address="127.0.0.1", num_cpus=1, object_store_memory=store)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        found = cluster.list_all_nodes()
        ids = [n.node_id for n in found]
        raylets = [n.all_processes["raylet"][0].process.pid for n in found]
        yield cluster, ids, raylets
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.shutdown()
        if saved is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = saved
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _on(node_id: str) -> Any:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)


def _ray_available() -> float:
    import ray

    return float(ray.available_resources().get("object_store_memory", 0))


def _ray_settle(base: float, timeout: float = 5.0) -> None:
    """Until Ray's free object store is back to `base` (Ray frees asynchronously, and a full store
    would spill to disk); at most `timeout` seconds."""
    gc.collect()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _ray_available() >= base - 8 * MiB:
            return
        time.sleep(0.05)


def _plasma_bytes(raylets: list[int]) -> int:
    """tmpfs pages of the plasma files the raylets hold open (what their stores have touched)."""
    seen: dict[tuple[int, int], int] = {}
    for pid in raylets:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                path = f"/proc/{pid}/fd/{fd}"
                with contextlib.suppress(OSError):
                    if "/plasma" in os.readlink(path):
                        st = os.stat(path)
                        seen[(st.st_dev, st.st_ino)] = st.st_blocks * 512
    return sum(seen.values())


class _RayPeer:
    """put from the driver (node 0), reads in an actor; delete = drop the ref and let Ray free it."""

    def __init__(self, settle_from: int) -> None:
        self.settle_from = settle_from  # objects this large are waited for after delete
        self.refs: dict[int, tuple[Any, int]] = {}
        self.base = _ray_available()

    def put(self, arr: np.ndarray) -> int:
        import ray

        ref = ray.put(arr)
        self.refs[id(ref)] = (ref, int(arr.nbytes))
        return id(ref)

    def reader(self, actor: Any) -> Read:
        import ray

        def read(key: int) -> tuple[float, float, int]:
            result: tuple[float, float, int] = ray.get(actor.read.remote([self.refs[key][0]]))
            return result

        return read

    def delete(self, key: int) -> None:
        _ref, nbytes = self.refs.pop(key)
        del _ref
        if nbytes >= self.settle_from:
            _ray_settle(self.base)


def bench_ray(plan: Plan, random: np.ndarray, tmp: str, run: Run) -> dict[str, Any]:
    import ray

    out: dict[str, Any] = {}
    require_memory(plan.ray_store + 2 * max(plan.sizes), "Ray (one node)")
    Reader = ray_reader_class()
    print("(1) same node: Ray", flush=True)
    with ray_cluster(1, 2 * plan.ray_store, tmp) as (_c, ids, _raylets):
        run.check_listeners("ray (1 node)")
        peer = _RayPeer(settle_from=1 * MiB)
        actor = Reader.options(scheduling_strategy=_on(ids[0])).remote()
        ray.get(actor.pid.remote())
        out["same_node"] = same_node(plan, peer.put, peer.reader(actor), peer.delete, "ray")
        del actor
    require_memory(4 * plan.ray_store, "Ray (4 nodes)")
    with ray_cluster(4, plan.ray_store, tmp) as (_c, ids, raylets):
        run.check_listeners("ray (4 nodes)")
        actors = [Reader.options(scheduling_strategy=_on(i)).remote() for i in ids]
        ray.get([a.pid.remote() for a in actors])
        print("(3) memory on 4 nodes: Ray (fresh cluster)", flush=True)
        before, total_free = _plasma_bytes(raylets), _ray_available()
        ref = ray.put(random)
        ray.get([a.read.remote([ref], True) for a in actors])
        held = _plasma_bytes(raylets) - before
        ray.get([a.release.remote() for a in actors])
        del ref
        _ray_settle(total_free)
        out["memory"] = {
            "bytes": int(random.nbytes), "held_bytes": held,
            "how": "plasma pages touched on 4 raylets of a fresh cluster (original + pulled copies)",
        }  # fmt: skip
        print("(2) cross node: Ray", flush=True)
        peer = _RayPeer(settle_from=0)
        d = measure(random, 1 + plan.cross_reps, peer.put, peer.reader(actors[1]), peer.delete, "ray cross")
        out["cross_node"] = d
        print(f"  ray cross get+read {d['get_read']['median']:.3f} s", flush=True)
        del actors
    return out


# ---------------------------------------------------------------------------- report


def shuffle_floor_from(path: Path) -> dict[str, Any] | None:
    """The shuffle-vs-floor target that `make bench` wrote, with where and when it was measured."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    t = doc.get("targets", {}).get("shuffle_4gib_vs_floor")
    if not t:
        return None
    meta = doc.get("meta", {})
    return {
        **t, "source": str(path.relative_to(HERE.parent)) if path.is_relative_to(HERE.parent) else str(path),
        "measured": meta.get("started"), "quick": meta.get("quick"),
    }  # fmt: skip


def _num(v: Any, scale: float, fmt: str) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v * scale, fmt)


def print_table(doc: dict[str, Any]) -> None:
    print("\nsame node (medians over warm repeats; first-touch run apart)")
    cols = ("store", "size", "put GiB/s", "first", "get us", "p99", "get+read ms", "p99")
    print("    {:9s} {:>6s} {:>10s} {:>7s} {:>10s} {:>10s} {:>12s} {:>9s}".format(*cols))
    for peer, sizes in doc["same_node"].items():
        for size, d in sizes.items():
            cells = (
                _num(d["put"]["median_Bps"], 1 / GiB, "10.2f"),
                _num(d["put"]["first_touch_Bps"], 1 / GiB, "7.2f"),
                _num(d["get"]["median"], 1e6, "10.1f"), _num(d["get"]["p99"], 1e6, "10.1f"),
                _num(d["get_read"]["median"], 1e3, "12.3f"), _num(d["get_read"]["p99"], 1e3, "9.3f"),
            )  # fmt: skip
            print(f"    {peer:9s} {human(int(size)):>6s} " + " ".join(cells))
    size = human(doc["meta"]["cross_bytes"])
    print(f"\ncross node, {size} of random bytes       get (s)   get+read (s)   first get (s)")
    for peer, d in doc["cross_node"].items():
        if "get" not in d:
            print(f"    {peer:30s} {d.get('skipped', 'not run')}")
            continue
        cells = (_num(d["get"]["median"], 1, "9.4f"), _num(d["get_read"]["median"], 1, "12.4f"))
        print(f"    {peer:30s} {cells[0]}   {cells[1]}   {_num(d['get']['first_touch'], 1, '13.4f')}")
    print("\nmemory held for one object read on 4 nodes")
    for peer, d in doc["memory_4_nodes"].items():
        held = d["held_bytes"]
        print(f"    {peer:9s} {held / GiB:6.2f} GiB = {held / d['bytes']:.2f}x the object  ({d['how']})")
    print("\ntargets")
    for k, t in doc["targets"].items():
        shown = _num(t["value"], 1, ".3g")
        print(f"    {k:52s} {shown:>9s}   target {t['target']:7s} {'met' if t['met'] else 'MISSED'}")


def _memory(*peers: dict[str, Any]) -> dict[str, Any]:
    return {k: d["memory"] for k, d in zip(("gismo", "vineyard", "ray"), peers, strict=True) if "memory" in d}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes and few repeats (a check, not figures)")
    ap.add_argument("--out", type=Path, default=None, help="JSON path")
    args = ap.parse_args(argv)
    plan = QUICK if args.quick else FULL
    out_path = args.out or HERE / "results" / ("quick/peers.json" if args.quick else "peers.json")
    import ray
    import vineyard

    import gismo

    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "loadavg_start": list(os.getloadavg()),
        "machine_cpus": os.cpu_count(), "quick": args.quick, "ray": ray.__version__,
        "vineyard": vineyard.__version__, "gismo": getattr(gismo, "__version__", "checkout"),
        "sizes": list(plan.sizes), "warm_repeats": {str(k): v for k, v in plan.reps.items()},
        "cross_bytes": plan.cross_bytes, "cross_warm_repeats": plan.cross_reps,
        "read": "touch one byte of every 4 KiB page", "p99": "nearest rank over the warm repeats",
        "network": "Ray nodes on 127.0.0.1; one Vineyard instance with --norpc (IPC socket only); "
        "Vineyard clusters and their etcd in a private network namespace with only loopback",
    }  # fmt: skip
    load = os.getloadavg()[0]
    print(f"peers: Gismo vs Vineyard {vineyard.__version__} vs Ray {ray.__version__}; load {load:.2f}")
    run = Run()
    tmp = tempfile.mkdtemp(prefix="gp-", dir="/tmp")
    t_start = time.monotonic()
    try:
        random = np.random.default_rng(14).integers(0, 256, plan.cross_bytes, dtype=np.uint8)
        v = bench_vineyard(plan, random, tmp, run)
        g = bench_gismo(plan, random, tmp, run)
        r = bench_ray(plan, random, tmp, run)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    run.left += [f"process {p.pid} {p.name()}" for p in descendants() if _ours(p)]
    run.left += [tmp] if os.path.exists(tmp) else []
    meta["loadavg_end"] = list(os.getloadavg())
    meta["seconds"] = time.monotonic() - t_start
    cross = {"gismo": g["cross_node"], "ray": r["cross_node"], **v["cross_node"]}
    doc: dict[str, Any] = {
        "meta": meta,
        "same_node": {"gismo": g["same_node"], "vineyard": v["same_node"], "ray": r["same_node"]},
        "cross_node": cross,
        "memory_4_nodes": {
            k: d["memory"] for k, d in (("gismo", g), ("vineyard", v), ("ray", r)) if "memory" in d
        },
        "exposed_listeners": run.listeners,
        "left_behind": run.left,
    }
    shuffle = shuffle_floor_from(out_path.parent / "summary.json")  # make bench's, same --quick or not
    doc["targets"] = build_targets(doc["same_node"], cross, plan.cross_bytes, shuffle)
    print_table(doc)
    print(f"\nload average {meta['loadavg_start'][0]:.2f} at start, {meta['loadavg_end'][0]:.2f} at end; "
          f"{meta['seconds']:.0f} s; left behind: {run.left or 'nothing'}")  # fmt: skip
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(doc, indent=2))
    print(f"wrote {out_path}")
    return 1 if run.left else 0


if __name__ == "__main__":
    sys.exit(main())
