"""Without any Gismo agent, gismo.ray behaves as plain Ray (every put falls back, results right)."""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np
import pytest
import ray

import gismo.ray as gray
from gismo.shuffle import shuffle
from gismo.testing import LocalCluster

pytestmark = pytest.mark.ray
# Workers cannot import test modules: ship this module's functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@ray.remote(num_cpus=0)
def make(n: int) -> tuple[gray.ObjRef, dict[str, Any], str | None]:
    return gray.put(np.arange(n, dtype=np.int64)), gray.stats(), os.environ.get("GISMO_SOCKET")


@ray.remote(num_cpus=0)
def total(box: list[gray.ObjRef]) -> int:
    return int(gray.get(box[0]).sum())


def test_put_get_fall_back_to_ray(cluster3_no_agent: LocalCluster) -> None:
    lc = cluster3_no_agent
    ref, st, sock = ray.get(make.options(scheduling_strategy=lc.on_node(1)).remote(1_000_000))
    assert sock is None
    assert not ref.in_gismo and ref.fallback == "no-agent"
    assert isinstance(ref.ray_ref, ray.ObjectRef)
    assert st["fallback_puts_no-agent"] == 1 and st.get("puts", 0) == 0 and not st["connected"]
    for j in range(3):
        assert ray.get(total.options(scheduling_strategy=lc.on_node(j)).remote([ref])) == 499999500000
    # in the driver too, and the list form mixes fallback refs and plain ObjectRefs
    mine = gray.put({"a": 1})
    assert mine.fallback == "no-agent"
    assert gray.get([mine, ray.put(5)]) == [{"a": 1}, 5]
    assert gray.stats()["fallbacks"] == 1
    assert gray.free([ref, mine]) == 0


@ray.remote(num_cpus=0)
def create(n: int) -> tuple[gray.ObjRef, dict[str, Any]]:
    with gray.create_array((n,), np.int64) as c:
        c.array[:] = np.arange(n)
    return c.ref, gray.stats()


def test_create_array_falls_back_to_a_private_array_and_ray_put(cluster3_no_agent: LocalCluster) -> None:
    lc = cluster3_no_agent
    ref, st = ray.get(create.options(scheduling_strategy=lc.on_node(2)).remote(1000))
    assert not ref.in_gismo and ref.fallback == "no-agent" and isinstance(ref.ray_ref, ray.ObjectRef)
    assert st["fallback_puts_no-agent"] == 1 and st.get("creates", 0) == 0
    assert ray.get(total.options(scheduling_strategy=lc.on_node(0)).remote([ref])) == 499500


def _map(i: int) -> list[np.ndarray]:
    return [np.full(1000, i * 10 + j, dtype=np.int32) for j in range(4)]


def _reduce(blocks: list[np.ndarray]) -> int:
    return int(sum(int(b.sum()) for b in blocks))


def test_shuffle_without_agents_is_a_ray_shuffle(cluster3_no_agent: LocalCluster) -> None:
    res = shuffle(_map, list(range(5)), 4, _reduce, map_strategy=lambda i: cluster3_no_agent.on_node(i % 3))
    assert res.results == [sum((i * 10 + j) * 1000 for i in range(5)) for j in range(4)]
    assert res.fallbacks == res.blocks == 20 and res.in_gismo == 0 and res.freed == 0
