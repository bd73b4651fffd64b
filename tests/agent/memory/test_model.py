"""The non-coherent memory model itself, and the choice of coherence strategy per mapping."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest

from gismo.contract import ENV_TEST_MEMORY
from gismo.memory import coherence, model
from gismo.memory.mapping import MappingError, SliceMapping

RS = 1 << 20  # region size


@pytest.fixture
def pool_file(tmp_path: os.PathLike[str]) -> Iterator[str]:
    path = os.path.join(str(tmp_path), "pool")
    with open(path, "wb") as f:
        f.truncate(3 * RS)
    yield path


def _node(path: str, region: int) -> SliceMapping:
    return SliceMapping(path, 0, 3 * RS, RS, region)


def test_stores_reach_other_nodes_only_at_flush_and_reads_refresh_only_at_invalidate(
    pool_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_TEST_MEMORY, "noncoherent")
    a, b = _node(pool_file, 0), _node(pool_file, 1)
    assert a.coherence == b.coherence == "noncoherent-model"
    assert a.rw is not None
    a.rw[100:104] = b"abcd"
    b.invalidate(0, RS)
    assert b.ro[100:104] == bytes(4)  # A has not flushed: the pool does not have it
    a.flush(100, 4)
    assert b.ro[100:104] == bytes(4)  # B has not invalidated: its copy is stale
    b.invalidate(101, 1)
    assert b.ro[100:104] == b"abcd"  # whole 64-byte lines move
    a.rw[200:204] = b"wxyz"
    a.flush(130, 1)  # the line 128..191 only
    b.invalidate(0, RS)
    assert b.ro[200:204] == bytes(4)
    with open(pool_file, "rb") as f:
        f.seek(100)
        assert f.read(4) == b"abcd"


def test_own_region_is_never_stale_and_foreign_lines_are_never_written_back(
    pool_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_TEST_MEMORY, "noncoherent")
    a = _node(pool_file, 0)
    assert a.rw is not None
    a.rw[0:4] = b"mine"
    a.invalidate(0, 3 * RS)  # no reload over unflushed own stores
    assert a.ro[0:4] == b"mine"
    with open(pool_file, "r+b") as f:
        f.seek(RS)
        f.write(b"them")
    a.invalidate(RS, 4)
    assert a.ro[RS : RS + 4] == b"them"
    a.flush(-10, 3 * RS)  # clipped to the own region
    with open(pool_file, "rb") as f:
        f.seek(RS)
        assert f.read(4) == b"them"
        f.seek(0)
        assert f.read(4) == b"mine"


def test_processes_of_one_node_share_its_cache_and_a_new_cache_starts_from_the_pool(
    pool_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open(pool_file, "r+b") as f:
        f.write(b"old!")
    monkeypatch.setenv(ENV_TEST_MEMORY, "noncoherent")
    agent, client = _node(pool_file, 0), _node(pool_file, 0)
    assert agent.ro[0:4] == b"old!"  # the own region is loaded from the pool when the cache is made
    assert client.rw is not None
    client.rw[8:12] = b"same"
    assert agent.ro[8:12] == b"same"  # one host: coherent among its processes, no flush needed
    assert model.cache_files(pool_file) == [model.cache_path(pool_file, 0)]


def test_views_point_into_the_nodes_copy(pool_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_TEST_MEMORY, "noncoherent")
    b = _node(pool_file, 1)
    view = np.frombuffer(b.ro, np.uint8)
    assert view.ctypes.data == b.address
    with open(pool_file, "r+b") as f:
        f.write(b"\x07")
    assert view[0] == 0
    b.invalidate(0, 1)
    assert view[0] == 7


def test_bad_model_name_is_refused(pool_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_TEST_MEMORY, "sometimes")
    with pytest.raises(MappingError, match=ENV_TEST_MEMORY):
        _node(pool_file, 0)


def test_strategy_follows_the_pools_coherence(pool_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_TEST_MEMORY, raising=False)
    assert SliceMapping(pool_file, 0, 3 * RS, RS, 0).coherence == "hardware"  # shm's default
    flushing = SliceMapping(pool_file, 0, 3 * RS, RS, 0, coherence="flush")
    assert flushing.coherence == f"flush:{coherence.extension_method()}"  # built here (test below)
    assert flushing.rw is not None
    flushing.rw[0:4] = b"data"
    flushing.flush(0, 4)  # real CLWB/CLFLUSHOPT on this machine when built: must not crash
    flushing.invalidate(0, 3 * RS)
    assert flushing.ro[0:4] == b"data"
    with pytest.raises(MappingError, match="coherence must be one of"):
        SliceMapping(pool_file, 0, 3 * RS, RS, 0, coherence="magic")


def test_the_extension_is_built_here() -> None:
    """The development install builds gismo.memory._cacheflush (gcc is present): a refused `flush`
    mapping in the other tests would otherwise hide that the real path never ran."""
    method = coherence.extension_method()
    assert method in ("clwb", "clflushopt", "clflush", "dc-cvac"), method
