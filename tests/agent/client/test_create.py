"""Create in place: a writer reserves an object, fills it through a writable view, then seals it."""

from __future__ import annotations

import numpy as np
import pytest
from store_node import pattern
from storefix import MiB, Pool, both_memories

import gismo
from gismo.memory.serialize import _HDR, NDARRAY
from gismo.testing import wait_until


@pytest.fixture
def two(pool: Pool) -> tuple[Pool, list]:
    for r in range(2):
        pool.agent(r)
    return pool, [pool.node(r) for r in range(2)]


def expected(shape: tuple[int, ...], dtype: str, seed: int) -> np.ndarray:
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return pattern(n, seed).view(dtype).reshape(shape)


@both_memories
@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((3 * MiB + 5,), "uint8"), ((256, 1024), "<f8"), ((7, 3), ">i4"), ((100,), "M8[s]"), ((0,), "f4")],
)
def test_create_fill_seal_in_a_read_in_b_as_a_view(two: tuple[Pool, list], shape: tuple, dtype: str) -> None:
    _pool, (a, b) = two
    ref = a.call("create_fill_seal", shape, dtype, 11)
    assert isinstance(ref, gismo.Ref) and ref.region == 0
    want = expected(shape, dtype, 11)
    assert b.call("get_raw", ref) == (want.dtype.str, want.shape, want.tobytes())
    if np.prod(shape):
        rep = b.call("view_report", ref)
        assert rep["shares_memory"] and rep["in_mapping"] and not rep["writeable"], rep


def test_create_writes_the_same_object_as_put(pool: Pool) -> None:
    pool.agent(0)
    with gismo.connect(pool.agents[0].socket) as c:
        arr = np.arange(12345, dtype=np.int64).reshape(15, 823)
        r1 = c.put(arr)
        with c.create_array(arr.shape, arr.dtype) as p:
            p.array[:] = arr
        r2 = p.ref
        assert r2 is not None and r1.size == r2.size
        # Same header, table and meta: only the data offset (in the region) differs.
        m = c.map.view
        base = c.map.region_base(0)
        h1 = bytes(m[base + r1.offset : base + r1.offset + 256])
        h2 = bytes(m[base + r2.offset : base + r2.offset + 256])
        assert h1 == h2 and _HDR.unpack_from(h1)[1] == NDARRAY
        assert np.array_equal(c.get(r2), arr)
        # Raw bytes: get returns a memoryview, as for a put of bytes.
        with c.create(1000) as q:
            q.buffer[:] = 9
        assert bytes(c.get(q.ref)) == b"\x09" * 1000
        with pytest.raises(ValueError):
            c.create_array((3,), object)
        # seal is idempotent, abort after seal does nothing, seal after abort is refused
        assert c.seal(p) == r2
        c.abort(p)
        assert c.contains(r2)
        r = c.create_array(4)
        c.abort(r)
        with pytest.raises(gismo.GismoError):
            r.seal()
        del m


def test_abort_leaves_nothing(two: tuple[Pool, list]) -> None:
    pool, (a, b) = two
    before = pool.agents[0].stats()
    ref = a.call("create_open", "x", 2 * MiB, 3)
    assert pool.agents[0].stats()["bytes_reserved"] >= 2 * MiB
    a.call("abort_open", "x")
    after = wait_until(lambda: (s := pool.agents[0].stats())["bytes_reserved"] == 0 and s, "abort")
    assert after["bytes_used"] == before["bytes_used"] and after["objects"] == before["objects"]
    assert b.call("get_error", ref) == "StaleRef"
    assert not b.call("contains", ref)


def test_exception_inside_the_context_manager_aborts(two: tuple[Pool, list]) -> None:
    pool, (a, b) = two
    name, ref = a.call("create_then_raise", 1 * MiB)
    assert name == "KeyError"
    assert b.call("get_error", ref) == "StaleRef"
    assert wait_until(lambda: pool.agents[0].stats()["bytes_reserved"] == 0, "abort")
    assert pool.agents[0].stats()["objects"] == 0


@both_memories
def test_unsealed_is_never_readable_by_another_process(two: tuple[Pool, list]) -> None:
    pool, (a, b) = two
    a2 = pool.node(0)  # another worker of the same node
    ref = a.call("create_open", "x", 1 * MiB, 5)
    for reader in (b, a2):
        assert reader.call("get_error", ref) == "StaleRef"
        assert not reader.call("contains", ref)
    assert a.call("seal_open", "x") == ref
    for reader in (b, a2):
        assert reader.call("check_pattern", ref, 1 * MiB, 5)
    a.call("stats")  # a's seal notice leaves with its next message
    # A writer that dies with an unsealed object: the agent frees it, nobody ever reads it.
    ref2 = a2.call("create_open", "y", 1 * MiB, 6)
    a2.close()
    pool.nodes.remove(a2)
    assert wait_until(lambda: pool.agents[0].stats()["bytes_reserved"] == 0, "dead writer's space freed")
    assert b.call("get_error", ref2) == "StaleRef"
    assert b.call("check_pattern", ref, 1 * MiB, 5)
