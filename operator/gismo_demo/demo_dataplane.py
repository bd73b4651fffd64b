"""The demo's data plane: the store on a local multi-node Ray cluster, laid out as the operator said.

Each admitted Ray pod carries the ``GISMO_*`` environment the webhook wrote (pool, slice offset and
size, region index/offset/size). Here every pod becomes one local Ray node (a raylet) with its
own Gismo agent serving exactly that region, all mapping one emulation file that stands in for the
pool (``GISMO_DEVICE`` and ``GISMO_SOCKET`` are the only values rewritten: a private file under
/dev/shm and a socket in the cluster's temporary folder). So the control plane's answer drives
the data plane, byte for byte.

Then a few measurements, Ray's object store against Gismo on the same cluster, in this run:
an array made on node 0 and read (get + touch every page) on node 1, and a small all-to-all
shuffle across the nodes. Each figure is the median of ``repeats`` runs (the first one included:
few repeats, short demo). Cost: ~5-10 s to start the cluster, a few seconds per measurement.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import ray

import gismo.ray as gray
from gismo.shuffle import shuffle
from gismo.testing import LocalCluster
from gismo.testing.workloads import PAGE, make_array, touch_pages

MiB = 1 << 20


# ------------------------------------------------------------------------------------------------
# The cluster


def operator_layout_cluster(regions: Sequence[Mapping[str, str]], **kwargs: Any) -> LocalCluster:
    """A :class:`~gismo.testing.LocalCluster` whose node ``i`` runs the agent of ``regions[i]``: the
    ``GISMO_*`` environment the operator's webhook gave one Ray pod (so the operator's slice
    geometry, not LocalCluster's default layout, decides where each agent writes)."""
    return LocalCluster(layout=regions, **kwargs)


# ------------------------------------------------------------------------------------------------
# Task bodies (module level: Ray pickles them by reference)


@ray.remote(num_cpus=1)
def ray_make(nbytes: int, fill: int) -> np.ndarray:
    """The array as a task's return value: it lives in this node's Ray object store."""
    return make_array(nbytes, fill)


@ray.remote(num_cpus=1)
def gismo_make(nbytes: int, fill: int) -> Any:
    """The array put into this node's Gismo region; returns the small ref."""
    return gray.put(make_array(nbytes, fill))


@ray.remote(num_cpus=1)
def read(box: list[Any]) -> tuple[float, float, int]:
    """(get seconds, get + touch-every-page seconds, page sum) for ``box[0]``, a Ray ObjectRef or a
    Gismo ObjRef (boxed so Ray does not resolve it before the task runs)."""
    ref = box[0]
    t0 = time.perf_counter()
    a = gray.get(ref) if isinstance(ref, gray.ObjRef) else ray.get(ref)
    t1 = time.perf_counter()
    s = touch_pages(a)
    return t1 - t0, time.perf_counter() - t0, s


def shuffle_map(spec: tuple[int, int, int]) -> list[np.ndarray]:
    """Map ``i``: ``bytes_per_map`` bytes (fill i+1) cut into R equal blocks."""
    index, bytes_per_map, reducers = spec
    return np.split(make_array(bytes_per_map, index % 251 + 1), reducers)


def shuffle_reduce(blocks: list[np.ndarray]) -> tuple[int, int]:
    """Touch every page of every block: (bytes seen, page sum)."""
    return sum(b.nbytes for b in blocks), sum(touch_pages(b) for b in blocks)


# ------------------------------------------------------------------------------------------------
# Measurements


@dataclasses.dataclass
class Row:
    """One line of the Ray-vs-Gismo table (seconds, medians of the runs)."""

    workload: str
    ray_s: float
    gismo_s: float
    note: str = ""

    @property
    def speedup(self) -> float:
        """How many times faster Gismo was (Ray time / Gismo time)."""
        return self.ray_s / self.gismo_s if self.gismo_s > 0 else float("inf")


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def _check(got: int, want: int, what: str) -> None:
    if got != want:
        raise AssertionError(f"{what}: page sum {got} != {want} (wrong bytes read)")


def remote_get(lc: LocalCluster, nbytes: int, repeats: int, src: int = 0, dst: int = 1) -> list[Row]:
    """An array made on node ``src``, read on node ``dst``: Ray (object store → transfer) vs Gismo
    (read in place from ``src``'s region). Verified by a page checksum; Gismo objects freed."""
    a_node, b_node = lc.on_node(src), lc.on_node(dst)
    want_pages = -(-nbytes // PAGE)
    ray_get, ray_read, g_get, g_read = [], [], [], []
    fallbacks = 0
    for rep in range(repeats):
        fill = rep % 200 + 1
        rref = ray_make.options(scheduling_strategy=a_node).remote(nbytes, fill)
        ray.wait([rref], fetch_local=False)
        g, gr, s = ray.get(read.options(scheduling_strategy=b_node).remote([rref]))
        _check(s, fill * want_pages, "ray")
        ray_get.append(g)
        ray_read.append(gr)
        del rref
        gref = ray.get(gismo_make.options(scheduling_strategy=a_node).remote(nbytes, fill))
        fallbacks += not gref.in_gismo
        g, gr, s = ray.get(read.options(scheduling_strategy=b_node).remote([gref]))
        _check(s, fill * want_pages, "gismo")
        g_get.append(g)
        g_read.append(gr)
        gray.free([gref])
    note = f"{fallbacks} fell back to Ray" if fallbacks else ""
    size = f"{nbytes / MiB:g} MiB array made on node {src}"
    return [
        Row(f"{size}, get+read on node {dst}", _median(ray_read), _median(g_read), note),
        Row(f"{size}, get only on node {dst}", _median(ray_get), _median(g_get), note),
    ]


def all_to_all(lc: LocalCluster, total: int, tasks: int, repeats: int) -> Row:
    """A ``tasks`` x ``tasks`` shuffle of ``total`` bytes: map i on node i % n, reducer j on node
    (j + 1) % n, so most blocks cross nodes. End-to-end seconds, Ray vs Gismo, interleaved."""
    n = lc.nodes
    per_map = total // tasks
    specs = [(i, per_map, tasks) for i in range(tasks)]
    want = sum((i % 251 + 1) * (per_map // PAGE) for i in range(tasks))
    place: dict[str, Callable[[int], Any]] = {
        "map_strategy": lambda i: lc.on_node(i % n),
        "reduce_strategy": lambda j: lc.on_node((j + 1) % n),
    }
    times: dict[str, list[float]] = {"ray": [], "gismo": []}
    fallbacks = 0
    for _ in range(repeats):
        for backend in ("ray", "gismo"):
            t0 = time.perf_counter()
            result = shuffle(shuffle_map, specs, tasks, shuffle_reduce, backend=backend, **place)  # type: ignore[arg-type]
            times[backend].append(time.perf_counter() - t0)
            if sum(r[1] for r in result.results) != want:
                raise AssertionError(f"shuffle on {backend}: wrong result")
            fallbacks += result.fallbacks
    note = f"{fallbacks} blocks fell back to Ray" if fallbacks else ""
    label = f"shuffle {tasks} map x {tasks} reduce, {total / MiB:g} MiB, {n} nodes"
    return Row(label, _median(times["ray"]), _median(times["gismo"]), note)


def warm_up(lc: LocalCluster) -> None:
    """A small array through both paths once (worker start-up, agent connections, first mappings),
    so none of that is billed to the measurements."""
    remote_get(lc, MiB, 1)
