"""The agent never destroys what is not its own: it formats only Gismo pool files (or regions that
already carry a Gismo header), refuses anything else naming the path, and never creates a path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gismo.config import Config
from gismo.daemon import Agent
from gismo.daemon.region import RegionRefused
from gismo.memory.poolfile import file_size
from gismo.testing.poolfile import create_pool_file

MiB = 1 << 20
REGION = 4 * MiB


def config(tmp_path: Path, device: Path, **kw: object) -> Config:
    values: dict[str, object] = dict(
        device=str(device), pool="p0", slice_size=2 * REGION, region=0, region_size=REGION,
        socket=str(tmp_path / "a.sock"), owner="owned-paths", file_prefixes=(str(tmp_path),),
    )  # fmt: skip
    values.update(kw)
    return Config(**values)  # type: ignore[arg-type]


def close(agent: Agent) -> None:
    os.close(agent._lock_fd)
    agent.map.close()


def test_a_text_file_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    f = tmp_path / "notes.txt"
    f.write_bytes(b"x" * 49)
    with pytest.raises(RegionRefused, match=f"{f}: not a Gismo pool file"):
        Agent(config(tmp_path, f, slice_size=REGION))
    assert f.read_bytes() == b"x" * 49  # not grown, not written


def test_a_large_foreign_file_is_not_formatted(tmp_path: Path) -> None:
    f = tmp_path / "data.bin"
    content = os.urandom(1024) * (2 * REGION // 1024)
    f.write_bytes(content)
    with pytest.raises(
        RegionRefused, match=f"{f}: refusing to format region 0: it carries no Gismo region header"
    ):
        Agent(config(tmp_path, f), force_format=True)
    assert f.read_bytes() == content


def test_missing_paths_are_never_created(tmp_path: Path) -> None:
    missing = tmp_path / "nothing"
    with pytest.raises(RegionRefused, match=f"{missing}: no such pool file; the agent never creates one"):
        Agent(config(tmp_path, missing))
    assert not missing.exists()
    dax = "/dev/dax977.3"
    assert not os.path.exists(dax)
    with pytest.raises(
        RegionRefused, match=r"/dev/dax977\.3: no such DAX device; the agent never creates one"
    ):
        Agent(config(tmp_path, Path(dax), backend="devdax", region_size=2 * MiB, slice_size=4 * MiB))
    assert not os.path.exists(dax)


def test_another_pools_file_and_symlinks_are_refused(tmp_path: Path) -> None:
    other = Path(create_pool_file(str(tmp_path / "other"), "p1", 2 * REGION))
    before = other.read_bytes()
    with pytest.raises(RegionRefused, match=f"{other}: the Gismo pool file of pool 'p1', not of 'p0'"):
        Agent(config(tmp_path, other))
    assert other.read_bytes() == before
    mine = create_pool_file(str(tmp_path / "mine"), "p0", 2 * REGION)
    link = tmp_path / "link"
    link.symlink_to(mine)
    with pytest.raises(RegionRefused, match=f"{link}: not a regular file"):
        Agent(config(tmp_path, link))


def test_a_pool_file_too_small_for_the_slice_is_refused(tmp_path: Path) -> None:
    small = create_pool_file(str(tmp_path / "small"), "p0", REGION)
    with pytest.raises(RegionRefused, match="holds 4194304 bytes, the slice ends at 8388608"):
        Agent(config(tmp_path, Path(small)))
    assert os.path.getsize(small) == file_size(REGION)


def test_this_pools_file_is_formatted_and_then_recognised_by_its_headers(tmp_path: Path) -> None:
    path = Path(create_pool_file(str(tmp_path / "pool"), "p0", 2 * REGION))
    agent = Agent(config(tmp_path, path))
    assert agent.recovered == {"formatted": 1}
    close(agent)
    assert os.path.getsize(path) == file_size(2 * REGION)  # the marker page is outside every region
    # A file whose marker is gone but whose region carries our header: the header is the proof.
    with open(path, "r+b") as f:
        f.truncate(2 * REGION)
    agent = Agent(config(tmp_path, path))
    assert "kept" in agent.recovered
    close(agent)
