"""The pure parts of the benchmarks: summaries, targets, and the floor's bytes (no timing asserted).

bench/ is a folder of scripts, not a package: its modules are imported from there.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import floor
import peers_stats as ps

MiB = 1 << 20


def test_human_names_sizes_without_spaces() -> None:
    assert [ps.human(n) for n in (4096, 64 * MiB, 1 << 30, 1000)] == ["4KiB", "64MiB", "1GiB", "1000B"]


def test_percentile_is_nearest_rank() -> None:
    xs = [float(i) for i in range(1, 101)]
    assert ps.percentile(xs, 99) == 99.0
    assert ps.percentile(xs, 50) == 50.0
    assert ps.percentile([3.0, 1.0, 2.0], 99) == 3.0  # fewer than 100 samples: the slowest
    assert math.isnan(ps.percentile([], 99))


def test_summarize_keeps_the_first_touch_run_apart() -> None:
    s = ps.summarize([10.0, 1.0, 3.0, 2.0])
    assert s["first_touch"] == 10.0
    assert (s["n"], s["median"], s["p99"], s["min"], s["max"]) == (3, 2.0, 3.0, 1.0, 3.0)


def test_throughput_from_a_put_summary() -> None:
    t = ps.throughput(100, {"median": 2.0, "p99": 4.0, "first_touch": 10.0})
    assert (t["median_Bps"], t["p99_Bps"], t["first_touch_Bps"]) == (50.0, 25.0, 10.0)
    assert math.isnan(ps.throughput(100, {"median": math.nan, "p99": 0.0, "first_touch": None})["median_Bps"])


def test_target_direction_and_nan() -> None:
    assert ps.target(0.05, "<=", 0.1)["met"] is True
    assert ps.target(0.2, "<=", 0.1)["met"] is False
    assert ps.target(25.0, ">=", 20)["met"] is True
    assert ps.target(19.9, ">=", 20) == {"value": 19.9, "target": ">= 20", "met": False}
    assert ps.target(math.nan, "<=", 1.5)["met"] is False
    with pytest.raises(ValueError, match="op="):
        ps.target(1.0, "<", 2.0)


def _run(get: float, get_read: float) -> dict[str, dict[str, float]]:
    return {"get": {"median": get}, "get_read": {"median": get_read}}


def test_build_targets_covers_every_size_and_the_fastest_migration() -> None:
    same = {
        "gismo": {"4096": _run(20e-6, 30e-6), "1073741824": _run(50e-6, 0.01)},
        "vineyard": {"4096": _run(600e-6, 610e-6), "1073741824": _run(400e-6, 0.02)},
    }
    cross = {
        "gismo": _run(50e-6, 0.02),
        "ray": _run(2.0, 2.1),  # not a Vineyard setting: ignored for the migration
        "vineyard_no_compression": _run(0.45, 0.5),
        "vineyard_compression": _run(1.25, 1.3),
    }
    shuffle = {"value": 1.8, "target": "<= 1.5", "met": False, "source": "bench/results/summary.json"}
    t = ps.build_targets(same, cross, 1 << 30, shuffle)
    assert t["same_node_get_4KiB_vs_vineyard"]["met"] is True
    assert t["same_node_get_4KiB_vs_vineyard"]["value"] == pytest.approx(20 / 600)
    assert t["same_node_get_1GiB_vs_vineyard"]["met"] is False  # 50 us is 1/8 of 400 us
    mig = t["cross_node_get_read_1GiB_vs_vineyard_migration"]
    assert mig["value"] == pytest.approx(0.45 / 0.02)
    assert (mig["met"], mig["vineyard_setting"]) == (True, "vineyard_no_compression")
    assert t["shuffle_4GiB_4nodes_vs_floor"] == {
        "value": 1.8, "target": "<= 1.5", "met": False, "source": "bench/results/summary.json"
    }  # fmt: skip


def test_build_targets_reports_what_was_not_measured_as_missed() -> None:
    same = {"gismo": {"4096": _run(1e-5, 1e-5)}}
    t = ps.build_targets(same, {"vineyard_x": {"skipped": "no netns"}}, 4096, None)
    assert t["same_node_get_4KiB_vs_vineyard"]["met"] is False  # no Vineyard figure
    assert t["cross_node_get_read_4KiB_vs_vineyard_migration"]["met"] is False
    assert t["shuffle_4GiB_4nodes_vs_floor"]["met"] is False
    assert "make bench" in t["shuffle_4GiB_4nodes_vs_floor"]["note"]


def test_floor_shuffle_writes_and_reads_every_block(tmp_path: Path) -> None:
    total = 4 * 4 * 4096 * 2  # 4 maps x 4 reducers x 2 pages per block
    with floor.ShuffleFloor(total, maps=4, reducers=4, procs=2, shm_dir=str(tmp_path)) as fl:
        assert fl.run() > 0  # raises if a reducer saw other bytes than the maps wrote
        path = Path(fl.path)
        assert path.exists()
    assert not path.exists()  # close() removes the file
    assert floor.expected_checksum(4, 4 * 2 * 4096) == sum(floor.fill_value(i) * 8 for i in range(4))


def test_floor_shuffle_refuses_sizes_it_cannot_split(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="total="):
        floor.ShuffleFloor(4096 * 3, maps=2, reducers=2, procs=1, shm_dir=str(tmp_path))


def test_read_mapped_reads_the_file(tmp_path: Path) -> None:
    path = floor.make_mapped_file(3 * 4096, 5, shm_dir=str(tmp_path))
    times, checksum = floor.read_mapped(path, 3 * 4096, 2)
    assert (len(times), checksum) == (2, 15)
