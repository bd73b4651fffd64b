"""Pure helpers of bench/peers.py: summaries of repeated timings and the targets object.

No I/O and no timing here, so tests/bench can check them quickly.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


def human(n: int) -> str:
    """4096 -> '4KiB', 64 MiB -> '64MiB', 1 GiB -> '1GiB' (used in keys, so no spaces)."""
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n}B"


def percentile(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): with fewer than 100 samples p99 is the maximum."""
    if not xs:
        return math.nan
    ordered = sorted(xs)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summarize(xs: list[float]) -> dict[str, Any]:
    """Run 0 is the first-touch run, reported apart; median and p99 are over the rest."""
    rest = xs[1:]
    return {
        "first_touch": xs[0] if xs else None,
        "n": len(rest),
        "median": float(statistics.median(rest)) if rest else math.nan,
        "p99": percentile(rest, 99),
        "min": min(rest) if rest else math.nan,
        "max": max(rest) if rest else math.nan,
    }


def throughput(nbytes: int, seconds: dict[str, Any]) -> dict[str, Any]:
    """Bytes per second at the median, the p99 (slowest) and the first-touch run of a put summary."""

    def rate(s: float | None) -> float:
        return nbytes / s if s and s > 0 and not math.isnan(s) else math.nan

    return {
        "median_Bps": rate(seconds["median"]),
        "p99_Bps": rate(seconds["p99"]),
        "first_touch_Bps": rate(seconds["first_touch"]),
    }


def ratio(num: float | None, den: float | None) -> float:
    if num is None or den is None or den == 0 or math.isnan(num) or math.isnan(den):
        return math.nan
    return num / den


def target(value: float, op: str, bound: float, **extra: Any) -> dict[str, Any]:
    """{value, target, met, ...}: `op` is '<=' or '>='; a NaN value (not measured) is not met."""
    if op not in ("<=", ">="):
        raise ValueError(f"op={op!r}: must be '<=' or '>='")
    ok = not math.isnan(value) and (value <= bound if op == "<=" else value >= bound)
    return {"value": value, "target": f"{op} {bound:g}", "met": bool(ok), **extra}


def fastest_migration(cross: dict[str, Any]) -> tuple[str | None, float]:
    """The Vineyard migration setting with the lowest median get (the migration); (None, nan) if none ran."""
    best: tuple[str | None, float] = (None, math.nan)
    for key, d in cross.items():
        if not key.startswith("vineyard") or "get" not in d:
            continue
        m = d["get"]["median"]
        if not math.isnan(m) and (best[0] is None or m < best[1]):
            best = (key, m)
    return best


def build_targets(
    same_node: dict[str, dict[str, Any]],
    cross: dict[str, Any],
    cross_bytes: int,
    shuffle: dict[str, Any] | None,
) -> dict[str, Any]:
    """The issue's targets on this machine.

    - Gismo's same-node get <= 1/10 of Vineyard's, at every size (median "get", no read);
    - Gismo's cross-node get+read >= 20x faster than Vineyard's fastest migration (median);
    - the 4 GiB shuffle on 4 nodes within 1.5x of the write+read floor (from `make bench`'s
      summary.json, passed in as `shuffle`: {value, source, ...}, or None when it was not run).
    """
    out: dict[str, Any] = {}
    gismo, vineyard = same_node.get("gismo", {}), same_node.get("vineyard", {})
    for size in sorted(set(gismo) | set(vineyard), key=int):
        g = gismo.get(size, {}).get("get", {}).get("median", math.nan)
        v = vineyard.get(size, {}).get("get", {}).get("median", math.nan)
        out[f"same_node_get_{human(int(size))}_vs_vineyard"] = target(
            ratio(g, v), "<=", 0.1, gismo_get_s=g, vineyard_get_s=v
        )
    setting, mig = fastest_migration(cross)
    gr = cross.get("gismo", {}).get("get_read", {}).get("median", math.nan)
    out[f"cross_node_get_read_{human(cross_bytes)}_vs_vineyard_migration"] = target(
        ratio(mig, gr), ">=", 20, gismo_get_read_s=gr, vineyard_migration_s=mig, vineyard_setting=setting
    )
    if shuffle is None:
        out["shuffle_4GiB_4nodes_vs_floor"] = target(
            math.nan, "<=", 1.5, note="not measured: run `make bench` (bench/results/summary.json)"
        )
    else:
        value = shuffle.get("value")
        out["shuffle_4GiB_4nodes_vs_floor"] = target(
            math.nan if value is None else float(value), "<=", 1.5,
            **{k: v for k, v in shuffle.items() if k not in ("value", "target", "met")},
        )  # fmt: skip
    return out
