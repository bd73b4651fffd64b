"""Preparing shm pool files: created only where nothing exists, with the Gismo pool-file marker;
a Gismo pool file of the pool is kept; anything else is refused, named, and left untouched."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from gismo.memory.poolfile import MARKER_SIZE, PoolFileError, PoolFileMarker, read_marker
from gismo.node.config import NodeConfig, PoolSpec, parse_config
from gismo.node.poolfiles import prepare, prepare_all

MiB = 1 << 20


def config(root: Path, *pools: tuple[str, str], mode: int = 0o660) -> NodeConfig:
    return parse_config(
        {
            "pools": [
                {"name": name, "capacity": "1Mi", "backend": {"type": "shm", "path": str(root / rel)}}
                for name, rel in pools
            ],
            "fileRoots": [str(root)],
            "pluginDir": str(root / "dp"),
            "fileOwner": "keep",
            "fileMode": mode,
        }
    )


def test_creates_a_sparse_marked_file_with_the_agents_mode(tmp_path: Path) -> None:
    cfg = config(tmp_path, ("pool0", "shm/gismo/pool0"))
    pool = cfg.pools[0]
    assert prepare(pool, cfg) == "created"
    st = os.stat(pool.path)
    assert st.st_size == MiB + MARKER_SIZE
    assert st.st_mode & 0o777 == 0o660
    assert st.st_blocks * 512 < MiB  # sparse: pool memory is used as objects are written
    assert read_marker(pool.path) == PoolFileMarker("pool0", MiB)
    assert not [p for p in os.listdir(os.path.dirname(pool.path)) if p != "pool0"]  # no temp file left
    # The pool data is zero, the marker only in the last page.
    with open(pool.path, "rb") as fh:
        assert fh.read(MiB) == bytes(MiB)


def test_a_gismo_pool_file_is_kept_as_it_is(tmp_path: Path) -> None:
    cfg = config(tmp_path, ("pool0", "pool0"))
    pool = cfg.pools[0]
    prepare(pool, cfg)
    with open(pool.path, "r+b") as fh:
        fh.write(b"objects of a running pool")
    assert prepare(pool, cfg) == "present"
    with open(pool.path, "rb") as fh:
        assert fh.read(25) == b"objects of a running pool"


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"a 49-byte text file that someone else wrote here\n", "not a Gismo pool file"),
        (bytes(MiB + MARKER_SIZE), "not a Gismo pool file"),
        (bytes(MiB) + PoolFileMarker("pool9", MiB).pack(), "of pool 'pool9', not of 'pool0'"),
        (bytes(2 * MiB) + PoolFileMarker("pool0", 2 * MiB).pack(), "2097152 bytes, but pool 'pool0' has"),
        # A marker that is not at the end does not count (a truncated or appended-to file).
        (bytes(MiB) + PoolFileMarker("pool0", MiB).pack() + bytes(4096), "not a Gismo pool file"),
    ],
)
def test_anything_else_is_refused_by_path_and_untouched(tmp_path: Path, content: bytes, why: str) -> None:
    cfg = config(tmp_path, ("pool0", "pool0"))
    pool = cfg.pools[0]
    Path(pool.path).write_bytes(content)
    os.chmod(pool.path, 0o644)
    with pytest.raises(PoolFileError, match=why) as info:
        prepare(pool, cfg)
    assert pool.path in str(info.value)
    assert Path(pool.path).read_bytes() == content
    assert os.stat(pool.path).st_mode & 0o777 == 0o644


def test_symlinks_and_folders_are_refused(tmp_path: Path) -> None:
    cfg = config(tmp_path, ("pool0", "pool0"), ("pool1", "pool1"))
    target = tmp_path / "elsewhere"
    target.write_bytes(b"precious")
    os.symlink(target, cfg.pools[0].path)
    os.mkdir(cfg.pools[1].path)
    result = prepare_all(cfg)
    assert result["pool0"].startswith(f"refused: {cfg.pools[0].path}: cannot read it")
    assert result["pool1"].startswith(f"refused: {cfg.pools[1].path}")
    assert target.read_bytes() == b"precious"
    assert os.path.islink(cfg.pools[0].path)


def test_one_bad_pool_does_not_stop_the_others(tmp_path: Path) -> None:
    cfg = config(tmp_path, ("pool0", "pool0"), ("pool1", "pool1"))
    Path(cfg.pools[0].path).write_bytes(b"foreign")
    result = prepare_all(cfg)
    assert result["pool0"].startswith("refused: ")
    assert result["pool1"] == "created"


def test_never_creates_a_device_or_famfs_file(tmp_path: Path) -> None:
    cfg = config(tmp_path, ("pool0", "pool0"))
    for backend in ("devdax", "famfs"):
        pool = PoolSpec("cxl0", backend, str(tmp_path / "dax0.0"), MiB, 1)
        with pytest.raises(ValueError, match="only shm pool files are prepared"):
            prepare(pool, cfg)
        assert not os.path.lexists(pool.path)
    dax = parse_config(
        {
            "pools": [{"name": "cxl0", "backend": {"type": "devdax", "path": str(tmp_path / "dax0.0")}}],
            "deviceRoots": [str(tmp_path)],
            "pluginDir": str(tmp_path),
        }
    )
    assert prepare_all(dax) == {}
    assert not os.path.lexists(tmp_path / "dax0.0")


def test_concurrent_creators_make_one_file(tmp_path: Path) -> None:
    """Node components of several nodes sharing one folder: one creates, the others find it."""
    cfg = config(tmp_path, ("pool0", "pool0"))
    results: list[str] = []
    barrier = threading.Barrier(8)

    def run() -> None:
        barrier.wait()
        results.append(prepare(cfg.pools[0], cfg))

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["created"] + ["present"] * 7
    assert os.listdir(tmp_path) == ["pool0"]
    assert read_marker(cfg.pools[0].path) == PoolFileMarker("pool0", MiB)


def test_owner_is_the_agents_when_running_as_root(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test checks chown to the agent's uid/gid and needs root (as CI and the chart run)")
    cfg = parse_config(
        {
            "pools": [
                {"name": "pool0", "capacity": "1Mi", "backend": {"type": "shm", "path": str(tmp_path / "p")}}
            ],
            "fileRoots": [str(tmp_path)],
            "pluginDir": str(tmp_path),
        }
    )
    prepare(cfg.pools[0], cfg)
    st = os.stat(cfg.pools[0].path)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (1000, 100, 0o660)
