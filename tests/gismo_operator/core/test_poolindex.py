"""The per-pool slice index kept from the slice watch: its figures always equal a full recount."""

from __future__ import annotations

import random
from typing import Any

import pytest

from gismo_operator.core.models import GismoPoolSpec
from gismo_operator.core.poolindex import PoolIndex
from gismo_operator.core.status import layout, slices_of_pool

GI = 1 << 30
POOLS = ("p0", "p1", "p2")


def spec(capacity: str = "64Gi") -> GismoPoolSpec:
    return GismoPoolSpec.model_validate(
        {"capacity": capacity, "regionSize": "1Gi", "backend": {"type": "shm", "path": "/dev/shm/p"}}
    )


def slice_body(name: str, pool: str, offset: int, size: int, in_use: int, rv: int) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ray", "uid": f"uid-{name}", "resourceVersion": str(rv)},
        "spec": {"pool": pool, "rayCluster": name, "offset": offset, "size": size, "regionSize": GI},
        "status": {"regionsInUse": in_use},
    }


def recount(pool: str, alive: dict[str, dict[str, Any]], pool_spec: GismoPoolSpec) -> Any:
    views = slices_of_pool(pool, list(alive.values()))
    return (len(views), sum(v.regions for v in views), layout(pool_spec, views))


def figures(index: PoolIndex, pool: str, pool_spec: GismoPoolSpec) -> Any:
    got = index.figures(pool, pool_spec)
    return (got.slices, got.regions, got.layout)


def random_event(rng: random.Random, alive: dict[str, dict[str, Any]], rv: int) -> tuple[str, dict[str, Any]]:
    """One watch event on ``alive`` (updated): add, a count change, a move, a resize, an invalid
    spec, or a delete."""
    name = f"s{rng.randrange(12)}"
    old = alive.get(name)
    roll = rng.random()
    if old is None:
        body = slice_body(name, rng.choice(POOLS), rng.randrange(70) * GI, rng.choice((1, 2, 4)) * GI, 0, rv)
        alive[name] = body
        return "ADDED", body
    if roll < 0.2:
        del alive[name]
        return "DELETED", old
    body = slice_body(
        name,
        old["spec"]["pool"],
        old["spec"]["offset"],
        old["spec"]["size"],
        old["status"]["regionsInUse"],
        rv,
    )
    if roll < 0.6:  # the common case: an admission or a release changes the count
        body["status"]["regionsInUse"] = rng.randrange(5)
    elif roll < 0.7:
        body["spec"]["pool"] = rng.choice(POOLS)
    elif roll < 0.8:
        body["spec"]["offset"] = rng.randrange(70) * GI  # may overlap or pass the end: a fault
    elif roll < 0.9:
        body["spec"]["regionSize"] = "not a size"  # invalid, still holds its bytes
    else:
        body["spec"]["offset"] = "x"  # not even offset readable: counted nowhere
    alive[name] = body
    return "MODIFIED", body


@pytest.mark.parametrize("seed", range(8))
def test_totals_equal_a_full_recount_after_random_events_and_after_a_restart(seed: int) -> None:
    rng = random.Random(seed)
    pool_spec = spec()
    alive: dict[str, dict[str, Any]] = {}
    index = PoolIndex()
    index.replace([])
    for step in range(400):
        type_, body = random_event(rng, alive, rv=step + 1)
        touched = index.apply(type_, body)
        assert body["spec"]["pool"] in touched or type_ == "DELETED"
        pool = rng.choice(POOLS)
        assert figures(index, pool, pool_spec) == recount(pool, alive, pool_spec), f"step {step}"
    for pool in POOLS:
        assert figures(index, pool, pool_spec) == recount(pool, alive, pool_spec)
        assert index.counts(pool) == recount(pool, alive, pool_spec)[:2]
    # A restart: a new process's index is built by the watch's first listing alone.
    restarted = PoolIndex()
    assert not restarted.synced
    restarted.replace(list(alive.values()))
    assert restarted.synced
    for pool in POOLS:
        assert figures(restarted, pool, pool_spec) == recount(pool, alive, pool_spec)


def test_a_relist_after_missed_events_rebuilds_and_names_every_pool_that_may_have_changed() -> None:
    pool_spec = spec()
    index = PoolIndex()
    index.replace([slice_body("a", "p0", 0, GI, 3, 1), slice_body("b", "p1", 0, GI, 2, 2)])
    assert figures(index, "p0", pool_spec)[:2] == (1, 3)
    # While the watch was down: a was deleted, b moved on, c appeared in p2.
    listed = [slice_body("b", "p1", 0, GI, 5, 7), slice_body("c", "p2", GI, 2 * GI, 1, 8)]
    assert index.replace(listed) == ["p0", "p1", "p2"]
    alive = {b["metadata"]["name"]: b for b in listed}
    for pool in POOLS:
        assert figures(index, pool, pool_spec) == recount(pool, alive, pool_spec)


def test_a_count_change_keeps_the_layout_and_a_move_recomputes_it() -> None:
    pool_spec = spec("4Gi")
    index = PoolIndex()
    index.replace([slice_body("a", "p0", 0, GI, 0, 1)])
    first = index.figures("p0", pool_spec).layout
    index.apply("MODIFIED", slice_body("a", "p0", 0, GI, 4, 2))
    assert index.figures("p0", pool_spec).layout is first  # kept: no recomputation per admission
    index.apply("ADDED", slice_body("b", "p0", GI, 3 * GI, 0, 3))
    full = index.figures("p0", pool_spec)
    assert (full.layout.use.free, full.regions, full.slices) == (0, 4, 2)
    index.apply("MODIFIED", slice_body("b", "p0", 0, 3 * GI, 0, 4))  # moved onto a: a fault
    assert any("overlap" in f for f in index.figures("p0", pool_spec).layout.faults)


def test_events_name_the_pools_they_change() -> None:
    index = PoolIndex()
    index.replace([])
    assert index.apply("ADDED", slice_body("a", "p0", 0, GI, 0, 1)) == ["p0"]
    assert index.apply("MODIFIED", slice_body("a", "p1", 0, GI, 0, 2)) == ["p1", "p0"]
    assert index.counts("p0") == (0, 0)
    assert index.apply("DELETED", slice_body("a", "p1", 0, GI, 0, 3)) == ["p1"]
    assert len(index) == 0 and index.pools() == []
