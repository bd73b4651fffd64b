"""The GISMO tensor transport (Ray Direct Transport) on a 3-node local Ray cluster, one agent per node.

What is proven: actor->actor, actor->driver and driver->actor deliver read-only views of the slice
mapping (the array's buffer address lies inside the receiver's mapping of the slice; not a copy);
the objects are deleted when the last Ray ref goes (agent stats back to where they started); the
Ray 2.60 traps (a)-(e) of issue 12; a create_array object is referenced in place.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import ray

import gismo.ray as gray
from gismo.contract import ENV_SOCKET
from gismo.rdt import ReceiverNotEnabled
from gismo.testing import LocalCluster, wait_until

pytestmark = pytest.mark.ray
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
MiB = 1 << 20


def in_mapping(arr: np.ndarray) -> bool:
    """Whether ``arr``'s bytes lie inside this process's mapping of the Gismo slice."""
    client = gray._client()
    assert client is not None
    start, size = client.map.address, client.map.slice_size
    return start <= arr.ctypes.data and arr.ctypes.data + arr.nbytes <= start + size


def describe(arr: Any) -> dict[str, Any]:
    return {
        "type": type(arr).__name__,
        "sum": int(np.asarray(arr, dtype=np.int64).sum()),
        "in_mapping": in_mapping(arr) if gray._client() is not None else None,
        "writeable": bool(arr.flags.writeable),
    }


@ray.remote(enable_tensor_transport=True, num_cpus=0)
class Producer:
    def __init__(self) -> None:
        self.keep: list[Any] = []

    @ray.method(tensor_transport="GISMO")
    def make(self, n: int, seed: int) -> Any:
        return gray.shared(np.full(n, seed % 251, dtype=np.uint8))

    @ray.method(tensor_transport="GISMO")
    def make_dict(self, n: int, parts: int) -> Any:
        return {f"w{i}": gray.shared(np.full(n, i, dtype=np.int32)) for i in range(parts)}

    @ray.method(tensor_transport="GISMO")
    def make_in_place(self, n: int) -> Any:
        with gray.create_array((n,), np.uint8) as c:
            c.array[:] = 7
        self.keep.append(c.ref)
        return gray.shared(c.array)

    def flush(self) -> None:
        """Send queued seal notices now (the agent counts an object once it hears of its seal)."""
        client = gray._client()
        assert client is not None
        client._flush_notices()

    def free_kept(self) -> int:
        n = gray.free(self.keep)
        self.keep = []
        return n

    def plain(self, n: int) -> np.ndarray:
        return np.ones(n, dtype=np.uint8)

    def serializer_for_ndarray(self) -> bool:
        return np.ndarray in ray.cloudpickle.CloudPickler.dispatch

    def stats(self) -> dict[str, Any]:
        return gray.stats()

    def without_agent(self) -> None:
        """From now on this process has no agent (as in a pod started without Gismo)."""
        os.environ[ENV_SOCKET] = ""
        gray.reset()

    def pid(self) -> int:
        return os.getpid()


@ray.remote(enable_tensor_transport=True, num_cpus=0)
class Consumer:
    def without_agent(self) -> None:
        os.environ[ENV_SOCKET] = ""
        gray.reset()

    def read(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: describe(v) for k, v in value.items()}
        return describe(value)

    def stats(self) -> dict[str, Any]:
        return gray.stats()


@ray.remote(num_cpus=0)
class PlainConsumer:
    def read(self, value: Any) -> Any:
        return describe(value)


@ray.remote(num_cpus=0)
def task_read(value: Any) -> Any:
    return describe(value)


@ray.remote(num_cpus=0)
def task_read_nested(box: list[Any]) -> Any:
    return describe(ray.get(box[0]))


def objects(lc: LocalCluster) -> list[int]:
    return [int(s["objects"]) for s in lc.agent_stats()]


@pytest.fixture(scope="module")
def lc() -> Iterator[LocalCluster]:
    with LocalCluster(3, cpus_per_node=1, object_store_bytes=256 * MiB, region_bytes=64 * MiB) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def actors(lc: LocalCluster) -> tuple[Any, Any]:
    producer = Producer.options(scheduling_strategy=lc.on_node(1)).remote()
    consumer = Consumer.options(scheduling_strategy=lc.on_node(2)).remote()
    ray.get([producer.pid.remote(), consumer.stats.remote()])
    return producer, consumer


def test_actor_to_actor_and_driver_are_views_and_freed(lc: LocalCluster, actors: tuple[Any, Any]) -> None:
    producer, consumer = actors
    before = objects(lc)
    ref = producer.make.remote(3 * MiB, 5)
    seen = ray.get(consumer.read.remote(ref))
    assert seen == {"type": "ndarray", "sum": 5 * 3 * MiB, "in_mapping": True, "writeable": False}
    here = ray.get(ref)  # actor -> driver
    assert type(here) is np.ndarray and in_mapping(here) and not here.flags.writeable
    assert int(here[:16].sum()) == 5 * 16
    assert objects(lc)[1] == before[1] + 1
    del ref
    del here
    wait_until(lambda: objects(lc) == before, "the object's deletion")
    assert ray.get(producer.stats.remote())["transport_freed"] >= 1


def test_dict_of_arrays(lc: LocalCluster, actors: tuple[Any, Any]) -> None:
    producer, consumer = actors
    before = objects(lc)
    ref = producer.make_dict.remote(1024, 8)
    seen = ray.get(consumer.read.remote(ref))
    assert sorted(seen) == [f"w{i}" for i in range(8)]
    assert all(
        v["in_mapping"] and not v["writeable"] and v["sum"] == i * 1024 for i, v in enumerate(seen.values())
    )
    del ref
    wait_until(lambda: objects(lc) == before, "the dict's deletion")


def test_driver_to_actor(lc: LocalCluster, actors: tuple[Any, Any]) -> None:
    _producer, consumer = actors
    before = objects(lc)
    ref = ray.put(gray.shared(np.arange(MiB, dtype=np.uint8)), _tensor_transport="GISMO")
    assert objects(lc)[0] == before[0] + 1  # placed in the driver's node (node 0) region
    seen = ray.get(consumer.read.remote(ref))
    assert seen["in_mapping"] and not seen["writeable"]
    assert seen["sum"] == int(np.arange(MiB, dtype=np.uint8).astype(np.int64).sum())
    del ref
    wait_until(lambda: objects(lc) == before, "the driver object's deletion")


def test_create_array_is_referenced_in_place(lc: LocalCluster, actors: tuple[Any, Any]) -> None:
    producer, consumer = actors
    before = objects(lc)
    ref = producer.make_in_place.remote(MiB)
    assert ray.get(consumer.read.remote(ref)) == {
        "type": "ndarray", "sum": 7 * MiB, "in_mapping": True, "writeable": False,
    }  # fmt: skip
    st = ray.get(producer.stats.remote())
    assert st["transport_in_place"] >= 1
    ray.get(producer.flush.remote())
    assert objects(lc)[1] == before[1] + 1  # the creation only: no copy was placed
    collected = st.get("transport_collected", 0)
    del ref
    wait_until(
        lambda: ray.get(producer.stats.remote()).get("transport_collected", 0) > collected,
        "Ray to hand the object's last ref to the transport",
    )
    assert objects(lc)[1] == before[1] + 1  # the transport did not delete an object it did not make
    assert ray.get(producer.free_kept.remote()) == 1
    wait_until(lambda: objects(lc) == before, "the creation's free")


def test_trap_a_receiver_without_tensor_transport_is_refused(
    lc: LocalCluster, actors: tuple[Any, Any]
) -> None:
    producer, _consumer = actors
    plain = PlainConsumer.options(scheduling_strategy=lc.on_node(2)).remote()
    ref = producer.make.remote(1024, 1)
    with pytest.raises(ReceiverNotEnabled, match="enable_tensor_transport=True"):
        plain.read.remote(ref)
    ray.kill(plain)


def test_trap_b_plain_task(lc: LocalCluster, actors: tuple[Any, Any]) -> None:
    producer, _consumer = actors
    ref = producer.make.remote(1024, 3)
    with pytest.raises(Exception, match="rdt_tensors"):  # Ray 2.60's own failure: documented
        ray.get(task_read.remote(ref))
    seen = ray.get(task_read_nested.options(scheduling_strategy=lc.on_node(2)).remote([ref]))
    assert seen["in_mapping"] and not seen["writeable"] and seen["sum"] == 3 * 1024


def test_trap_c_other_arrays_keep_rays_serializer(actors: tuple[Any, Any]) -> None:
    producer, _consumer = actors
    ray.get(producer.make.remote(1024, 1))
    assert ray.get(producer.serializer_for_ndarray.remote()) is False
    plain = ray.get(producer.plain.remote(MiB))
    # Ray's zero-copy path hands out read-only arrays over its store; a pickled copy is writable.
    assert type(plain) is np.ndarray and not plain.flags.writeable


def hold_until(path: str) -> None:
    """Keep the calling thread busy until ``path`` exists (the test says when it has seen enough)."""
    wait_until(lambda: os.path.exists(path), f"{path} to be created", limit=120)


def test_trap_d_abort_without_torch_keeps_the_monitor_alive(
    lc: LocalCluster, actors: tuple[Any, Any], tmp_path: Any
) -> None:
    import ray._private.ray_constants as rc
    from ray.experimental.rdt.rdt_manager import TransferMetadata

    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("torch is installed: Ray's abort path works without the guard")
    with pytest.raises(ImportError):  # what Ray's abort path imports first, and what killed the monitor
        importlib.import_module("ray.experimental.collective")
    producer, consumer = actors
    manager = ray._private.worker.global_worker.rdt_manager
    ref = producer.make.remote(1024, 2)
    ray.get(consumer.read.remote(ref))  # starts the monitor thread
    recv_ref = consumer.stats.remote()
    info = TransferMetadata(producer, consumer, None, recv_ref, None, "GISMO", ref.hex(), 0.0)
    refs = {recv_ref.hex(): info}
    manager._abort_transport(recv_ref, refs, TimeoutError("test"))  # Ray's own would raise ImportError
    assert refs == {}
    # A real timed-out transfer, in the monitor thread: the receiver's system thread is kept busy.
    aborted: list[Exception] = []
    guarded = manager._abort_transport

    def recording_abort(failed_ref: Any, ref_info_map: dict[str, Any], exception: Exception) -> Any:
        out = guarded(failed_ref, ref_info_map, exception)
        aborted.append(exception)
        return out

    manager._abort_transport = recording_abort  # the monitor thread calls it through the instance
    saved = rc.RDT_FETCH_FAIL_TIMEOUT_SECONDS
    rc.RDT_FETCH_FAIL_TIMEOUT_SECONDS = 1.0
    release = str(tmp_path / "release")
    try:
        busy = consumer.__ray_call__.options(concurrency_group="_ray_system").remote(
            lambda self: hold_until(release)
        )
        late = consumer.read.remote(producer.make.remote(1024, 4))
        wait_until(lambda: aborted, "the monitor thread to time the late transfer out")
        assert isinstance(aborted[0], TimeoutError)
        assert manager._monitor_failures_thread.is_alive()
    finally:
        open(release, "w").close()  # the receiver's system thread is free again
        rc.RDT_FETCH_FAIL_TIMEOUT_SECONDS = saved
        del manager._abort_transport
    ray.get(busy)
    assert ray.get(late)["sum"] == 4 * 1024  # the receive ran once the system thread was free
    ref2 = producer.make.remote(1024, 6)
    assert ray.get(consumer.read.remote(ref2))["sum"] == 6 * 1024  # later transfers still work
    assert manager._monitor_failures_thread.is_alive()


def test_trap_e_objects_of_a_dead_source_are_reclaimed(lc: LocalCluster) -> None:
    before = objects(lc)
    victim = Producer.options(scheduling_strategy=lc.on_node(1)).remote()
    refs = [victim.make.remote(MiB, i) for i in range(3)]
    ray.get(refs[0])  # driver read: the objects exist
    wait_until(lambda: objects(lc)[1] == before[1] + 3, "three objects")
    ray.kill(victim)
    wait_until(lambda: objects(lc) == before, "the agent's reclaim")
    assert lc.agent_stats()[1]["tied_reclaimed"] >= 3


def test_fallback_when_the_region_is_full(lc: LocalCluster, actors: tuple[Any, Any]) -> None:
    producer, consumer = actors
    before = objects(lc)
    ref = producer.make.remote(80 * MiB, 9)  # larger than the 64 MiB region: store-full
    seen = ray.get(consumer.read.remote(ref))
    assert seen["sum"] == 9 * 80 * MiB and seen["in_mapping"] is False and not seen["writeable"]
    st = ray.get(producer.stats.remote())
    assert st["transport_fallbacks_store-full"] >= 1
    assert objects(lc) == before
    del ref


def test_fallback_without_an_agent_on_either_side(lc: LocalCluster) -> None:
    before = objects(lc)
    producer = Producer.options(scheduling_strategy=lc.on_node(1)).remote()
    consumer = Consumer.options(scheduling_strategy=lc.on_node(2)).remote()
    ray.get(producer.without_agent.remote())
    ref = producer.make.remote(MiB, 11)
    seen = ray.get(consumer.read.remote(ref))
    assert seen["sum"] == 11 * MiB and seen["in_mapping"] is False
    assert ray.get(producer.stats.remote())["transport_fallbacks_no-agent"] == 1
    assert objects(lc) == before
    # A source with an agent and a receiver without one: read through a task on the source's node.
    gismo_producer = Producer.options(scheduling_strategy=lc.on_node(1)).remote()
    ray.get(consumer.without_agent.remote())
    ref2 = gismo_producer.make.remote(MiB, 12)
    seen2 = ray.get(consumer.read.remote(ref2))
    assert seen2["sum"] == 12 * MiB and seen2["in_mapping"] is None
    assert ray.get(consumer.stats.remote())["remote_fetches"] == 1
    del ref, ref2
    for actor in (producer, consumer, gismo_producer):
        ray.kill(actor)
    wait_until(lambda: objects(lc) == before, "every object's deletion")


@ray.remote(num_cpus=0)
def where_is_gismo() -> dict[str, Any]:
    import importlib.util

    import gismo

    others = [p for p in sys.path if p and not p.startswith(os.path.dirname(os.path.dirname(gismo.__file__)))]
    spec = importlib.machinery.PathFinder.find_spec("gismo", others)
    return {
        "file": gismo.__file__,
        "elsewhere": None if spec is None else spec.origin,
        "no_site": bool(sys.flags.no_site),
        "editable_finder": any(m.startswith("__editable__") for m in sys.modules),
        "pythonpath": os.environ.get("PYTHONPATH", ""),
    }


@ray.remote(num_cpus=0)
def read_gismo_ref(box: list[Any]) -> dict[str, Any]:
    import gismo

    arr = gray.get(box[0])
    return {"file": gismo.__file__, **describe(arr)}


def test_workers_import_the_delivered_client(lc: LocalCluster) -> None:
    info = ray.get(where_is_gismo.options(scheduling_strategy=lc.on_node(1)).remote())
    assert info["file"] == os.path.join(lc.agents[1].client_dir, "gismo", "__init__.py")
    assert info["pythonpath"].endswith(lc.agents[1].client_dir)
    assert info["editable_finder"]  # this checkout is importable there too: PYTHONPATH wins over it


def test_a_worker_without_gismo_installed_reads_through_the_delivered_folder(lc: LocalCluster) -> None:
    """The worker's Python runs with -S (no site-packages .pth: the editable gismo is invisible); its
    PYTHONPATH is the delivered folder plus site-packages as a plain folder (for ray and numpy)."""
    import sysconfig

    site = sysconfig.get_paths()["purelib"]
    delivered = lc.agents[2].client_dir
    env = {
        "py_executable": f"{sys.executable} -S",
        "env_vars": {"PYTHONPATH": f"{delivered}{os.pathsep}{site}"},
    }
    isolated = where_is_gismo.options(scheduling_strategy=lc.on_node(2), runtime_env=env)
    info = ray.get(isolated.remote())
    assert info["no_site"] is True
    assert info["file"] == os.path.join(delivered, "gismo", "__init__.py")
    assert info["elsewhere"] is None  # nowhere else on that worker's sys.path
    assert not info["editable_finder"]  # and no editable install of this checkout
    ref = gray.put(np.full(MiB, 3, dtype=np.uint8))
    seen = ray.get(read_gismo_ref.options(scheduling_strategy=lc.on_node(2), runtime_env=env).remote([ref]))
    assert seen["file"].startswith(delivered) and seen["sum"] == 3 * MiB and seen["in_mapping"]
    gray.free([ref])
