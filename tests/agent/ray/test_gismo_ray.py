"""gismo.ray on a 3-node local Ray cluster with one agent per node (correctness, not timing)."""

from __future__ import annotations

import hashlib
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
MiB = 1 << 20


def digest(obj: Any) -> str:
    if isinstance(obj, np.ndarray):
        return (
            hashlib.sha256(np.ascontiguousarray(obj).tobytes()).hexdigest() + str(obj.dtype) + str(obj.shape)
        )
    return hashlib.sha256(repr(obj).encode()).hexdigest()


def payload(seed: int, nbytes: int = 3 * MiB + 123) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8)


@ray.remote(num_cpus=0)
def put_here(seed: int) -> tuple[gray.ObjRef, str, str]:
    a = payload(seed)
    return gray.put(a), digest(a), str(ray.get_runtime_context().get_node_id())


def in_shared_mapping(value: Any) -> bool:
    """Whether ``value`` (an array, or a dict holding one) is a read-only view of this node's Gismo
    mapping of the slice: its buffer lies inside the mapped range, it shares memory with the
    mapping, and it cannot be written. A copy (from Ray's store, a pickle) fails all three."""
    import numpy as np

    client = gray._client()
    assert client is not None, "no Gismo agent on this node"
    arrays = (
        [value] if isinstance(value, np.ndarray) else [v for v in value.values() if isinstance(v, np.ndarray)]
    )
    lo, hi = client.map.address, client.map.address + client.map.slice_size
    mapping = np.frombuffer(client.map.ro, np.uint8)
    return bool(arrays) and all(
        lo <= a.ctypes.data and a.ctypes.data + a.nbytes <= hi
        and np.may_share_memory(a, mapping) and not a.flags.writeable
        for a in arrays
    )  # fmt: skip


@ray.remote(num_cpus=0)
def read_here(box: list[gray.ObjRef]) -> tuple[str, str, dict[str, Any]]:
    """Read in place on this node: the digest, the node, and this process's Gismo stats; fails
    unless the value is a view of the shared mapping and nothing was fetched through Ray."""
    value = gray.get(box[0])
    assert box[0].gismo_ref is None or in_shared_mapping(value), "not a view of the shared mapping"
    st = gray.stats()
    assert st.get("remote_fetches", 0) == 0, st  # never shipped through Ray by an owner-node task
    return digest(value), str(ray.get_runtime_context().get_node_id()), st


def plasma_created_bytes() -> dict[str, int]:
    """Bytes every raylet's plasma store has created so far (Ray's own counter, per node). An object
    that one raylet pulls from another is created in the puller's store, so a read that went
    through Ray raises it by the object's size; a Gismo read creates nothing there."""
    from ray._private import internal_api

    out = {}
    for node in ray.nodes():
        if node["Alive"]:
            reply = internal_api.node_stats(
                node["NodeManagerAddress"], node["NodeManagerPort"], include_memory_info=False
            )
            out[node["NodeID"]] = int(reply.store_stats.cumulative_created_bytes)
    return out


@ray.remote(num_cpus=0)
def ray_put_here(seed: int) -> list[Any]:
    a = payload(seed)
    return [ray.put(a), digest(a)]


@ray.remote(num_cpus=0)
def ray_read_here(box: list[Any]) -> str:
    return digest(ray.get(box[0]))


@ray.remote(num_cpus=0)
def read_many(refs: list[gray.ObjRef]) -> list[str]:
    return [digest(x) for x in gray.get(refs)]


def agents_used(lc: LocalCluster) -> list[int]:
    return [used_bytes(s) for s in lc.agent_stats()]


def used_bytes(stats: dict[str, Any]) -> int:
    for key in ("bytes_used", "used_bytes"):
        if key in stats:
            return int(stats[key])
    raise KeyError(sorted(stats))


def test_put_on_one_node_read_bit_exact_on_the_others(cluster3: LocalCluster) -> None:
    """Every node reads every node's object in place: a view of its own mapping of the slice, with
    no remote fetch and no byte created in any raylet's plasma store (a transfer through Ray,
    shown first as a control, creates the object's bytes in the reader's store)."""
    size = payload(0).nbytes
    before = plasma_created_bytes()
    box, want = ray.get(ray_put_here.options(scheduling_strategy=cluster3.on_node(1)).remote(9))
    assert ray.get(ray_read_here.options(scheduling_strategy=cluster3.on_node(2)).remote([box])) == want
    grew = plasma_created_bytes()
    assert grew[cluster3.node_ids[2]] - before[cluster3.node_ids[2]] >= size  # the control: a pull
    del box

    made = ray.get([put_here.options(scheduling_strategy=cluster3.on_node(i)).remote(i) for i in range(3)])
    for i, (ref, want, node) in enumerate(made):
        assert ref.in_gismo and ref.fallback is None
        assert node == cluster3.node_ids[i] == ref.node_id
        for j in range(3):
            got, where, st = ray.get(read_here.options(scheduling_strategy=cluster3.on_node(j)).remote([ref]))
            assert where == cluster3.node_ids[j]
            assert got == want, f"object from node {i} read on node {j} differs"
            assert st["socket"] == cluster3.agents[j].socket_path  # read through that node's own agent
    # list form, read in one call on node 2
    refs = [m[0] for m in made]
    assert ray.get(read_many.options(scheduling_strategy=cluster3.on_node(2)).remote(refs)) == [
        m[1] for m in made
    ]
    after = plasma_created_bytes()
    # 3 objects x 3 readers of 3 MiB each went through no raylet: at most small task results did.
    assert all(after[n] - grew[n] < size for n in cluster3.node_ids), (grew, after)
    assert gray.free(refs) == 3


def test_driver_put_and_plain_objects(cluster3: LocalCluster) -> None:
    obj = {"k": [1, 2, 3], "blob": b"x" * 100_000, "arr": np.arange(1000, dtype=np.float64)}
    ref = gray.put(obj)
    assert ref.in_gismo and ref.node_id == cluster3.node_ids[0]
    got, _, _ = ray.get(read_here.options(scheduling_strategy=cluster3.on_node(1)).remote([ref]))
    assert got == digest(gray.get(ref))
    back = gray.get(ref)
    assert back["k"] == [1, 2, 3] and back["blob"] == obj["blob"]
    np.testing.assert_array_equal(back["arr"], obj["arr"])
    del back
    assert gray.free([ref]) == 1


@ray.remote(num_cpus=0)
def nested_read(ref: gray.ObjRef, node: Any) -> tuple[str, str]:
    """A task that reads the ref itself and passes it on to a nested task on another node."""
    inner = read_here.options(scheduling_strategy=node).remote([ref])
    mine = digest(gray.get(ref))
    return mine, ray.get(inner)[0]


@ray.remote(num_cpus=0)
class Holder:
    """An actor that keeps refs, reads them later and hands them to tasks."""

    def __init__(self) -> None:
        self.refs: list[gray.ObjRef] = []

    def keep(self, refs: list[gray.ObjRef]) -> int:
        self.refs.extend(refs)
        return len(self.refs)

    def digests(self) -> list[str]:
        return [digest(x) for x in gray.get(self.refs)]

    def make(self, seed: int) -> gray.ObjRef:
        return gray.put(payload(seed, 1 * MiB))

    def node(self) -> str:
        return str(ray.get_runtime_context().get_node_id())


def test_refs_through_nested_tasks_and_actors(cluster3: LocalCluster) -> None:
    ref, want, _ = ray.get(put_here.options(scheduling_strategy=cluster3.on_node(1)).remote(7))
    # ref as a direct argument (Ray passes the small ObjRef by value), nested task on node 0
    mine, inner = ray.get(
        nested_read.options(scheduling_strategy=cluster3.on_node(2)).remote(ref, cluster3.on_node(0))
    )
    assert mine == inner == want
    # an actor on node 2 keeps it, reads it, and makes an object of its own
    actor = Holder.options(scheduling_strategy=cluster3.on_node(2)).remote()  # type: ignore[attr-defined]
    assert ray.get(actor.keep.remote([ref])) == 1
    assert ray.get(actor.digests.remote()) == [want]
    made = ray.get(actor.make.remote(11))
    assert made.in_gismo and made.node_id == cluster3.node_ids[2] == ray.get(actor.node.remote())
    got, _, _ = ray.get(read_here.options(scheduling_strategy=cluster3.on_node(0)).remote([made]))
    assert got == digest(payload(11, 1 * MiB))
    # refs inside a container returned from a task and passed back in
    assert ray.get(actor.keep.remote([made])) == 2
    assert ray.get(actor.digests.remote()) == [want, got]
    ray.kill(actor)
    # free from the driver: the objects live on nodes 1 and 2, deletes are routed to their agents
    assert gray.free([ref, made]) == 2


@ray.remote(num_cpus=0)
def put_big(nbytes: int) -> tuple[gray.ObjRef, str, dict[str, Any]]:
    a = payload(5, nbytes)
    return gray.put(a), digest(a), gray.stats()


def test_full_store_falls_back_to_ray_and_result_is_right(cluster3: LocalCluster) -> None:
    before = agents_used(cluster3)
    ref, want, st = ray.get(put_big.options(scheduling_strategy=cluster3.on_node(1)).remote(80 * MiB))
    assert not ref.in_gismo and ref.fallback == "store-full" and ref.ray_ref is not None
    assert st["fallback_puts_store-full"] >= 1 and st["fallbacks"] >= 1
    for j in (0, 2):
        got, _, _ = ray.get(read_here.options(scheduling_strategy=cluster3.on_node(j)).remote([ref]))
        assert got == want
    # the failed put left nothing reserved in the region
    assert agents_used(cluster3) == before
    gray.free([ref])


@ray.remote(num_cpus=0)
def create_here(seed: int, shape: tuple[int, ...], fail: bool = False) -> tuple[Any, str, dict[str, Any]]:
    """Fill an array made in place with payload(seed); with `fail`, raise inside the block."""
    want = payload(seed, int(np.prod(shape)) * 4).view(np.float32).reshape(shape)
    try:
        with gray.create_array(shape, np.float32) as c:
            assert c.array.flags.writeable and c.ref is None
            c.array[...] = want
            if fail:
                raise KeyError("boom")
    except KeyError:
        return c.state, digest(want), gray.stats()
    assert not c.array.flags.writeable and c.ref is not None
    return c.ref, digest(want), gray.stats()


def test_create_array_in_place_read_on_every_node(cluster3: LocalCluster) -> None:
    ref, want, st = ray.get(
        create_here.options(scheduling_strategy=cluster3.on_node(1)).remote(4, (300, 1000))
    )
    assert ref.in_gismo and ref.fallback is None and ref.node_id == cluster3.node_ids[1]
    assert st["creates"] >= 1  # (the worker may have fallen back in earlier tests)
    for j in range(3):
        got, _, _ = ray.get(read_here.options(scheduling_strategy=cluster3.on_node(j)).remote([ref]))
        assert got == want  # digest covers bytes, dtype and shape
    view = gray.get(ref)
    assert view.dtype == np.float32 and view.shape == (300, 1000) and not view.flags.writeable
    del view
    assert gray.free([ref]) == 1


def test_create_array_aborts_on_error_and_falls_back_when_full(cluster3: LocalCluster) -> None:
    before = agents_used(cluster3)
    state, _, _ = ray.get(
        create_here.options(scheduling_strategy=cluster3.on_node(2)).remote(1, (1000,), True)
    )
    assert state == "aborted" and agents_used(cluster3) == before
    # 80 MiB does not fit a 64 MiB region: a private array, ray.put at the end of the block
    ref, want, st = ray.get(
        create_here.options(scheduling_strategy=cluster3.on_node(2)).remote(2, (20 * MiB,))
    )
    assert not ref.in_gismo and ref.fallback == "store-full" and ref.ray_ref is not None
    assert st["fallback_puts_store-full"] >= 1
    got, _, _ = ray.get(read_here.options(scheduling_strategy=cluster3.on_node(0)).remote([ref]))
    assert got == want and agents_used(cluster3) == before
    gray.free([ref])


def _map(spec: tuple[int, int]) -> list[np.ndarray]:
    i, r = spec
    return [np.full(64 * 1024 + j, i * 16 + j, dtype=np.uint8) for j in range(r)]


def _reduce(blocks: list[np.ndarray]) -> list[int]:
    return [int(b[0]) * 1_000_000 + b.nbytes for b in blocks]


def _map_into(spec: tuple[int, int], make_block: Any) -> list[Any]:
    """_map's blocks written in place; block 0 is a plain array (stored by put) and one extra
    block is made but not returned (aborted)."""
    i, r = spec
    out: list[Any] = [np.full(64 * 1024, i * 16, dtype=np.uint8)]
    for j in range(1, r):
        b = make_block((64 * 1024 + j,), np.uint8)
        b[:] = i * 16 + j
        out.append(b)
    make_block(1000, "f8")
    return out


@pytest.mark.parametrize(
    ("backend", "into"), [("gismo", False), ("ray", False), ("gismo", True), ("ray", True)]
)
def test_shuffle_results_and_nothing_left_behind(cluster3: LocalCluster, backend: str, into: bool) -> None:
    before = agents_used(cluster3)
    maps, reducers = 6, 5
    res = shuffle(
        _map_into if into else _map,
        [(i, reducers) for i in range(maps)],
        reducers,
        _reduce,
        backend=backend,  # type: ignore[arg-type]
        map_strategy=lambda i: cluster3.on_node(i % 3),
        reduce_strategy=lambda j: cluster3.on_node((j + 1) % 3),
        map_into=into,
    )
    want = [[(i * 16 + j) * 1_000_000 + 64 * 1024 + j for i in range(maps)] for j in range(reducers)]
    assert res.results == want
    if backend == "gismo":
        assert res.blocks == maps * reducers == res.in_gismo == res.freed
        assert res.fallbacks == 0
    assert agents_used(cluster3) == before


def test_group_frees_everything(cluster3: LocalCluster) -> None:
    before = agents_used(cluster3)
    with gray.group() as g:
        refs = [g.put(np.full(MiB, i, dtype=np.uint8)) for i in range(3)]
        made = ray.get(
            [put_here.options(scheduling_strategy=cluster3.on_node(i)).remote(i) for i in range(3)]
        )
        g.add(m[0] for m in made)
        assert g.summary()["in_gismo"] == 6
        assert agents_used(cluster3) != before
        assert [int(x[0]) for x in gray.get(refs)] == [0, 1, 2]
    assert agents_used(cluster3) == before


def test_gismo_ref_read_where_no_agent_is_shipped_by_ray(
    cluster3: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref, want, _ = ray.get(put_here.options(scheduling_strategy=cluster3.on_node(1)).remote(3))
    # The driver without an agent (as a pod that was started without Gismo): the object is read by
    # a small task on its owner node and shipped through Ray.
    monkeypatch.setenv("GISMO_SOCKET", "")
    gray.reset()
    try:
        assert digest(gray.get(ref)) == want
        assert gray.stats()["remote_fetches"] == 1
        assert gray.put(b"abc").fallback == "no-agent"
        # configured but unreachable (a crashed sidecar): still Ray, with its own reason
        monkeypatch.setenv("GISMO_SOCKET", cluster3.tmpdir + "/nobody.sock")
        down = gray.put(np.arange(10))
        assert down.fallback == "agent-unavailable" and int(gray.get(down).sum()) == 45
        assert gray.stats()["connect_failures"] == 1
    finally:
        monkeypatch.undo()
        gray.reset()
    assert gray.free([ref]) == 1


def test_cluster_stats_reaches_every_nodes_agent(cluster3: LocalCluster) -> None:
    reports = gray.cluster_stats()
    assert sorted(r["node_id"] for r in reports) == sorted(cluster3.node_ids)
    by_node = {r["node_id"]: r for r in reports}
    for i, node in enumerate(cluster3.node_ids):
        assert by_node[node]["socket"] == cluster3.agents[i].socket_path
        assert by_node[node]["agent"]["region"] == i
