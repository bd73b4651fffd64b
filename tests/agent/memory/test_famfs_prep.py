"""famfs node prep: ``gismo mark-pool-file`` makes an existing fixed-size file the pool file of a pool.

famfs files are made by famfs's own tools with a fixed size; an agent formats only Gismo pool files,
and the node component advertises only those. So node prep writes the Gismo marker into the file's
last page and nothing else: never a create, truncate or resize. A regular file made with
``truncate`` stands in for the famfs file (no famfs mount here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from storefix import AgentProc, Pool

from gismo.memory.poolfile import MARKER_SIZE, PoolFileError, check_pool_file, mark_fixed_file
from gismo.node.config import PoolSpec
from gismo.node.discovery import probe
from gismo.testing import wait_until

MiB = 1 << 20
CAP = 8 * MiB


def _famfs_file(path: Path | str, size: int = CAP + MARKER_SIZE) -> str:
    """What `famfs creat -s SIZE PATH` leaves: a file of exactly SIZE bytes, all zero."""
    with open(path, "wb") as f:
        f.truncate(size)
    return str(path)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gismo.cli", "mark-pool-file", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_marking_writes_only_the_last_page_and_is_idempotent(tmp_path: Path) -> None:
    path = _famfs_file(tmp_path / "gismo-pool0")
    with open(path, "r+b") as f:
        f.write(b"data of region 0")  # the marker never touches pool data
    assert mark_fixed_file(path, "pool0", CAP) == "marked"
    assert os.path.getsize(path) == CAP + MARKER_SIZE
    assert check_pool_file(path, "pool0", CAP).capacity == CAP
    with open(path, "rb") as f:
        assert f.read(16) == b"data of region 0"
    assert mark_fixed_file(path, "pool0") == "present"  # capacity taken from the size


@pytest.mark.parametrize(
    ("size", "capacity", "rule"),
    [
        (CAP, CAP, "needs a file of exactly 8392704 \\(capacity \\+ 4096\\); Gismo never resizes it"),
        (CAP + 100, None, "a pool file is its capacity \\(a positive multiple of 4096\\) plus 4096"),
        (MARKER_SIZE, None, "a pool file is its capacity"),
    ],
)
def test_a_file_of_the_wrong_size_is_refused_and_left_alone(
    tmp_path: Path, size: int, capacity: int | None, rule: str
) -> None:
    path = _famfs_file(tmp_path / "f", size)
    with pytest.raises(PoolFileError, match=rule):
        mark_fixed_file(path, "pool0", capacity)
    assert os.path.getsize(path) == size
    assert Path(path).read_bytes().count(0) == size


def test_foreign_data_another_pool_or_no_file_is_refused(tmp_path: Path) -> None:
    path = _famfs_file(tmp_path / "f")
    with open(path, "r+b") as f:
        f.seek(CAP + 10)
        f.write(b"x")
    with pytest.raises(PoolFileError, match="last 4096 bytes hold data, refusing to write there"):
        mark_fixed_file(path, "pool0")
    other = _famfs_file(tmp_path / "g")
    mark_fixed_file(other, "pool1")
    with pytest.raises(PoolFileError, match="already the Gismo pool file of pool 'pool1'"):
        mark_fixed_file(other, "pool0")
    with pytest.raises(PoolFileError, match="it must exist \\(famfs creat\\)"):
        mark_fixed_file(str(tmp_path / "missing"), "pool0")
    assert not (tmp_path / "missing").exists()
    os.symlink(other, tmp_path / "link")
    with pytest.raises(PoolFileError, match="cannot open it"):
        mark_fixed_file(str(tmp_path / "link"), "pool1")


def test_the_cli_marks_and_refuses(tmp_path: Path) -> None:
    path = _famfs_file(tmp_path / "gismo-pool0")
    out = _cli(path, "--pool", "pool0", "--capacity", "8Mi")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"event": "pool-file-marked", "path": path, "pool": "pool0"}
    assert json.loads(_cli(path, "--pool", "pool0").stdout)["event"] == "pool-file-present"
    bad = _cli(path, "--pool", "pool0", "--capacity", "16Mi")
    assert bad.returncode == 2 and "needs a file of exactly 16781312" in bad.stderr


def test_the_node_advertises_a_famfs_pool_only_once_marked(tmp_path: Path) -> None:
    path = _famfs_file(tmp_path / "gismo-pool0")
    spec = PoolSpec("pool0", "famfs", path, CAP, 1)
    unmarked = probe(spec)
    assert not unmarked.healthy and "not a Gismo pool file" in unmarked.reason
    mark_fixed_file(path, "pool0")
    assert probe(spec).healthy
    assert probe(PoolSpec("pool0", "famfs", path, 0, 1)).healthy  # no capacity configured: the marker's
    assert not probe(PoolSpec("pool0", "famfs", path, 2 * CAP, 1)).healthy


@pytest.fixture
def stand_in() -> Iterator[str]:
    """A famfs stand-in under /dev/shm (the default allowed folder of file backends)."""
    path = f"/dev/shm/gismo-test-famfs-{uuid.uuid4().hex[:12]}"
    try:
        yield _famfs_file(path)
    finally:
        if os.path.exists(path):
            os.unlink(path)


def test_an_agent_refuses_an_unmarked_famfs_file_and_serves_it_once_marked(stand_in: str) -> None:
    pool = Pool(regions=2, region_size=4 * MiB)
    try:
        env = pool.env(0, pool="pool0", device=stand_in, backend="famfs")
        refusing = AgentProc(pool, 0, env)
        pool.agents[0] = refusing
        refusing.launch()
        wait_until(lambda: "not a Gismo pool file" in refusing.log_text(), "the agent to refuse the file")
        refusing.stop()
        assert Path(stand_in).read_bytes().count(0) == CAP + MARKER_SIZE  # nothing written
        assert _cli(stand_in, "--pool", "pool0", "--capacity", "8Mi").returncode == 0
        agent = pool.agent(0, pool="pool0", device=stand_in, backend="famfs")
        assert agent.stats()["coherence"].startswith("flush:")  # famfs defaults to flush
        assert os.path.getsize(stand_in) == CAP + MARKER_SIZE  # never resized
    finally:
        pool.close()
