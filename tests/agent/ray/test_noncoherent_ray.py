"""gismo.ray across nodes under the non-coherent memory model (gismo.memory.model).

Every agent, raylet, worker and the driver maps the slice as its node's private write-back cache,
so an object read on another node is only right if the writer flushed and the reader invalidated.
The cases are the ones that cross nodes: puts read elsewhere, frees seen elsewhere, a shuffle.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import ray

import gismo
import gismo.ray as gray
from gismo.shuffle import shuffle
from gismo.testing import LocalCluster

pytestmark = pytest.mark.ray
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
MiB = 1 << 20


@pytest.fixture(scope="module")
def cluster_nc() -> Iterator[LocalCluster]:
    """3 Ray nodes x 1 CPU, one agent each, every node's memory a non-coherent cache."""
    with LocalCluster(
        3, cpus_per_node=1, object_store_bytes=256 * MiB, region_bytes=64 * MiB, memory="noncoherent"
    ) as lc:
        yield lc


def digest(a: Any) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


@ray.remote(num_cpus=0)
def put_here(seed: int) -> tuple[gray.ObjRef, str, str]:
    a = np.random.default_rng(seed).integers(0, 256, 3 * MiB + 123, dtype=np.uint8)
    with gismo.connect() as c:  # this worker's own view of how its node maps the slice
        mode = str(c.stats()["client"]["coherence"])
    return gray.put(a), digest(a), mode


@ray.remote(num_cpus=0)
def read_here(box: list[gray.ObjRef]) -> str:
    return digest(gray.get(box[0]))


@ray.remote(num_cpus=0)
def can_read(box: list[gray.ObjRef]) -> str:
    try:
        gray.get(box[0])
    except Exception as exc:  # the error the reader sees, by name
        return type(exc).__name__
    return "read"


def test_put_on_each_node_read_bit_exact_on_every_other(cluster_nc: LocalCluster) -> None:
    made = ray.get([put_here.options(scheduling_strategy=cluster_nc.on_node(i)).remote(i) for i in range(3)])
    for i, (ref, want, mode) in enumerate(made):
        assert mode == "noncoherent-model" and ref.in_gismo, (i, mode)
        for j in range(3):
            got = ray.get(read_here.options(scheduling_strategy=cluster_nc.on_node(j)).remote([ref]))
            assert got == want, f"object put on node {i} read on node {j} differs"
    assert [s["coherence"] for s in cluster_nc.agent_stats()] == ["noncoherent-model"] * 3
    assert gray.free([m[0] for m in made]) == 3


def test_free_on_the_owner_is_seen_by_other_nodes(cluster_nc: LocalCluster) -> None:
    ref, _want, _mode = ray.get(put_here.options(scheduling_strategy=cluster_nc.on_node(1)).remote(11))
    assert ray.get(can_read.options(scheduling_strategy=cluster_nc.on_node(2)).remote([ref])) == "read"
    assert gray.free([ref]) == 1
    seen = ray.get(can_read.options(scheduling_strategy=cluster_nc.on_node(2)).remote([ref]))
    assert seen != "read", seen


def _map(item: tuple[int, int]) -> list[np.ndarray]:
    i, r = item
    return [np.full(64 * 1024 + j, i * 16 + j, dtype=np.uint8) for j in range(r)]


def _reduce(blocks: list[np.ndarray]) -> list[int]:
    # The first byte names the block; a block whose bytes are not all equal adds 1 and fails the test.
    return [int(b[0]) * 1_000_000 + int(b.size) + int(bool((b != b[0]).any())) for b in blocks]


def test_shuffle_across_nodes(cluster_nc: LocalCluster) -> None:
    maps, reducers = 3, 3
    res = shuffle(
        _map, [(i, reducers) for i in range(maps)], reducers, _reduce,
        map_strategy=lambda i: cluster_nc.on_node(i % 3),
        reduce_strategy=lambda j: cluster_nc.on_node((j + 1) % 3),
    )  # fmt: skip
    assert res.results == [
        [(i * 16 + j) * 1_000_000 + 64 * 1024 + j for i in range(maps)] for j in range(reducers)
    ]
    assert res.in_gismo == maps * reducers == res.freed
