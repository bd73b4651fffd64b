"""bench/store.py's targets object: metric -> {value, target, met} from the measured rows (no timing)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import store

MiB = 1 << 20


def _row(size: int, put_vs_memcpy: float, get_s: float) -> dict[str, float]:
    return {"size": size, "put_vs_memcpy": put_vs_memcpy, "get_remote_median_s": get_s}


def test_each_target_takes_the_worst_case_and_says_whether_it_is_met() -> None:
    rows = [_row(MiB, 0.1, 9e-6), _row(64 * MiB, 0.9, 12e-6), _row(256 * MiB, 0.45, 60e-6)]
    small = {"a": {"median": {"pairs_per_s": 25_000.0}}, "b": {"median": {"pairs_per_s": 19_000.0}}}
    fc = {
        "hardware": {"sizes": [{"size": MiB, "put_Bps": 1.0, "get_read_Bps": 1.0},
                               {"size": 16 * MiB, "put_Bps": 4.0, "get_read_Bps": 2.0},
                               {"size": 64 * MiB, "put_Bps": 4.0, "get_read_Bps": 2.0}]},
        "flush": {"sizes": [{"size": MiB, "put_Bps": 0.1, "get_read_Bps": 0.1},
                            {"size": 16 * MiB, "put_Bps": 3.0, "get_read_Bps": 2.0},
                            {"size": 64 * MiB, "put_Bps": 1.6, "get_read_Bps": 1.8}]},
    }  # fmt: skip
    t = store.targets(rows, small, fc)
    assert t["put_ge_64MiB_vs_memcpy"] == {"value": 0.45, "target": ">= 0.5", "met": False}
    assert t["get_remote_median_us_every_size"] == {"value": 60.0, "target": "<= 50", "met": False}
    assert t["small_put_get_pairs_per_s"] == {"value": 19_000.0, "target": ">= 20000", "met": False}
    # 1 MiB (below 16 MiB) does not count; the worst of 16 and 64 MiB does.
    assert t["flush_put_ge_16MiB_vs_hardware"] == {"value": 0.4, "target": ">= 0.5", "met": False}
    assert t["flush_get_read_ge_16MiB_vs_hardware"] == {"value": 0.9, "target": ">= 0.5", "met": True}
    assert all(set(v) == {"value", "target", "met"} for v in t.values())
