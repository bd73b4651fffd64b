"""The backends' rules at mapping time: devdax (sysfs size, 2 MiB alignment) and famfs (fixed size).

A fake sysfs tree stands in for /sys and a regular file for the device (the ``dax_rdev`` seam of
SliceMapping); neither backend may ever create, truncate or allocate what it maps.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from storefix import Pool

from gismo.memory import devdax
from gismo.memory.mapping import MappingError, SliceMapping
from gismo.testing import wait_until

MiB = 1 << 20
RDEV = os.makedev(252, 3)


def fake_sysfs(root: Path, size: int | str, subsystem: str = "dax", name: str = "dax0.0") -> str:
    dev = root / "devices" / "platform" / "cxl" / name
    dev.mkdir(parents=True)
    (dev / "size").write_text(f"{size}\n")
    (root / "bus" / subsystem).mkdir(parents=True)
    (dev / "subsystem").symlink_to(root / "bus" / subsystem)
    (root / "dev" / "char").mkdir(parents=True)
    (root / "dev" / "char" / "252:3").symlink_to(dev)
    return str(root)


def stand_in(tmp_path: Path, size: int = 8 * MiB) -> str:
    path = tmp_path / "dax0.0"
    path.write_bytes(b"")
    os.truncate(path, size)
    return str(path)


def test_devdax_size_comes_from_sysfs_and_nothing_is_resized(tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path / "sys", 8 * MiB)
    dev = stand_in(tmp_path)
    m = SliceMapping(dev, 2 * MiB, 4 * MiB, 2 * MiB, 1, backend="devdax", sysfs_root=sysfs, dax_rdev=RDEV,
                     allocate=True)  # fmt: skip
    assert m.coherence.startswith("flush")  # devdax defaults to flushing (contract DEFAULT_COHERENCE)
    assert m.rw is not None
    m.rw[0:4] = b"cxl!"
    m.close()
    assert os.path.getsize(dev) == 8 * MiB
    with open(dev, "rb") as f:
        f.seek(4 * MiB)
        assert f.read(4) == b"cxl!"


def test_devdax_slice_past_the_device_end_is_refused(tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path / "sys", 4 * MiB)
    dev = stand_in(tmp_path, 8 * MiB)  # the file is larger: sysfs is what counts
    with pytest.raises(MappingError, match="DAX device has 4194304 bytes, the slice ends at 6291456"):
        SliceMapping(dev, 2 * MiB, 4 * MiB, 2 * MiB, 0, backend="devdax", sysfs_root=sysfs, dax_rdev=RDEV)


@pytest.mark.parametrize(
    ("offset", "size", "region", "what"),
    [(4096, 4 * MiB, 2 * MiB, "slice offset"), (0, 3 * MiB, 3 * MiB // 2, "slice size"),
     (0, 4 * MiB, 1 * MiB, "region size")],
)  # fmt: skip
def test_devdax_mappings_are_2mib_aligned(
    tmp_path: Path, offset: int, size: int, region: int, what: str
) -> None:
    sysfs = fake_sysfs(tmp_path / "sys", 8 * MiB)
    dev = stand_in(tmp_path)
    with pytest.raises(devdax.DaxError, match=f"devdax {what} .* not a multiple of 2 MiB"):
        SliceMapping(dev, offset, size, region, 0, backend="devdax", sysfs_root=sysfs, dax_rdev=RDEV)


def test_devdax_wrong_or_missing_device(tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path / "sys", 8 * MiB)
    dev = stand_in(tmp_path)
    with pytest.raises(devdax.DaxError, match="needs a character device"):
        SliceMapping(dev, 0, 4 * MiB, 2 * MiB, 0, backend="devdax", sysfs_root=sysfs)  # no seam: a file
    with pytest.raises(MappingError, match=r"cannot open .*devdax: the device must exist"):
        SliceMapping(str(tmp_path / "dax9.9"), 0, 4 * MiB, 2 * MiB, 0, backend="devdax", sysfs_root=sysfs)
    assert not (tmp_path / "dax9.9").exists()
    other = fake_sysfs(tmp_path / "sys2", 8 * MiB, subsystem="mem")
    with pytest.raises(devdax.DaxError, match="belongs to 'mem', not dax"):
        SliceMapping(dev, 0, 4 * MiB, 2 * MiB, 0, backend="devdax", sysfs_root=other, dax_rdev=RDEV)
    with pytest.raises(devdax.DaxError, match="no dax size in sysfs"):
        SliceMapping(dev, 0, 4 * MiB, 2 * MiB, 0, backend="devdax", sysfs_root=str(tmp_path / "empty"),
                     dax_rdev=RDEV)  # fmt: skip
    bad = fake_sysfs(tmp_path / "sys3", "lots")
    with pytest.raises(devdax.DaxError, match="not a size"):
        SliceMapping(dev, 0, 4 * MiB, 2 * MiB, 0, backend="devdax", sysfs_root=bad, dax_rdev=RDEV)


def test_devdax_size_via_the_bus_directory(tmp_path: Path) -> None:
    """No /sys/dev/char entry: /sys/bus/dax/devices/<name>/size is the other documented place."""
    root = tmp_path / "sys"
    (root / "bus" / "dax" / "devices" / "dax0.0").mkdir(parents=True)
    (root / "bus" / "dax" / "devices" / "dax0.0" / "size").write_text("16777216\n")

    class St:
        st_mode = stat.S_IFCHR | 0o600
        st_rdev = os.makedev(252, 9)

    assert devdax.device_size("/dev/dax0.0", St(), str(root)) == 16 * MiB  # type: ignore[arg-type]


def test_famfs_file_is_mapped_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "famfs-pool"
    path.write_bytes(b"")
    os.truncate(path, 6 * MiB)
    m = SliceMapping(str(path), 2 * MiB, 4 * MiB, 2 * MiB, 0, backend="famfs", allocate=True)
    assert m.coherence.startswith("flush")
    m.close()
    assert os.path.getsize(path) == 6 * MiB


def test_famfs_missing_or_wrong_size_is_an_error_never_a_resize(tmp_path: Path) -> None:
    path = tmp_path / "famfs-pool"
    with pytest.raises(MappingError, match="famfs: the pool file must exist on every attached node"):
        SliceMapping(str(path), 0, 4 * MiB, 2 * MiB, 0, backend="famfs", allocate=True)
    assert not path.exists()
    path.write_bytes(b"")
    os.truncate(path, 3 * MiB)
    with pytest.raises(MappingError, match="famfs file has 3145728 bytes, the slice ends at 4194304"):
        SliceMapping(str(path), 0, 4 * MiB, 2 * MiB, 0, backend="famfs", allocate=True)
    assert os.path.getsize(path) == 3 * MiB
    (tmp_path / "d").mkdir()
    with pytest.raises(MappingError):
        SliceMapping(str(tmp_path / "d"), 0, 4 * MiB, 2 * MiB, 0, backend="famfs")


def test_agent_on_famfs_never_creates_or_resizes_the_file(tmp_path: Path) -> None:
    pool = Pool(regions=2, region_size=4 * MiB)
    try:
        size = os.path.getsize(pool.path)  # the famfs file as the node prepared it (a Gismo pool file)
        a = pool.agent(0, backend="famfs")
        assert a.stats()["coherence"].startswith("flush")
        a.stop()
        assert os.path.getsize(pool.path) == size
        os.unlink(pool.path)
        a.launch()  # refuses (it may keep serving a refusing socket, see server.py): the log says why
        # The pool rule (gismo.poolrules) refuses the missing path before anything is mapped.
        wait_until(lambda: "no such pool file" in a.log_text(), "the agent to refuse the missing file")
        assert not os.path.exists(pool.path)
    finally:
        pool.close()
