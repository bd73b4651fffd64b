"""Pool status as a pure function of the spec and the slices."""

from __future__ import annotations

import datetime as dt
from typing import Any

from gismo_operator.core.models import GismoPoolSpec, GismoPoolStatus
from gismo_operator.core.status import (
    holders,
    invalid_pool_status,
    pool_status,
    slice_view,
    slices_of_pool,
)

GI = 1 << 30
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(minutes=5)


def spec(capacity: str = "64Gi", region: str = "1Gi") -> GismoPoolSpec:
    return GismoPoolSpec.model_validate(
        {"capacity": capacity, "regionSize": region, "backend": {"type": "shm", "path": "/dev/shm/p"}}
    )


def body(
    name: str, offset: int, size: int, pool: str = "p", ns: str = "ray", regions: int = 0
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "pool": pool,
            "rayCluster": f"rc-{name}",
            "offset": offset,
            "size": size,
            "regionSize": GI,
            "regions": [{"index": i, "state": "Bound"} for i in range(regions)],
        },
    }


def cond(status: GismoPoolStatus, type_: str) -> Any:
    return next(c for c in status.conditions if c.type == type_)


def test_empty_pool() -> None:
    st = pool_status(spec(), [], generation=3, now=T0)
    assert (st.capacity, st.allocated, st.free, st.largest_free_extent) == ("64Gi", "0", "64Gi", "64Gi")
    assert (st.capacity_bytes, st.allocated_bytes, st.free_bytes) == (64 * GI, 0, 64 * GI)
    assert (st.slices, st.regions, st.observed_generation, st.ready) == (0, 0, 3, "True")
    ready = cond(st, "Ready")
    assert (ready.status, ready.reason, ready.observed_generation) == ("True", "Available", 3)
    assert cond(st, "Degraded").status == "False"


def test_figures_from_slices_of_this_pool_only() -> None:
    views = slices_of_pool(
        "p",
        [
            body("a", 0, 4 * GI, regions=3),
            body("b", 10 * GI, 2 * GI, regions=1),
            body("x", 0, 8 * GI, pool="q"),
        ],
    )
    assert [v.name for v in views] == ["a", "b"]
    st = pool_status(spec(), views, generation=1, now=T0)
    assert (st.allocated_bytes, st.free_bytes, st.largest_free_extent_bytes) == (6 * GI, 58 * GI, 52 * GI)
    assert (st.allocated, st.free, st.largest_free_extent) == ("6Gi", "58Gi", "52Gi")
    assert (st.slices, st.regions) == (2, 4)
    assert holders(views) == ["ray/rc-a", "ray/rc-b"]


def test_full_pool_is_ready_but_says_full() -> None:
    views = slices_of_pool("p", [body("a", 0, 4 * GI)])
    st = pool_status(spec("4Gi"), views, generation=1, now=T0)
    ready = cond(st, "Ready")
    assert (ready.status, ready.reason) == ("True", "Full")
    assert "no free extent of one region (1Gi)" in ready.message
    assert st.free_bytes == 0


def test_inconsistent_slices_degrade() -> None:
    views = slices_of_pool(
        "p",
        [body("a", 0, 4 * GI), body("b", 2 * GI, 4 * GI), body("c", 62 * GI, 4 * GI), body("d", GI // 2, GI)],
    )
    st = pool_status(spec(), views, generation=1, now=T0)
    degraded = cond(st, "Degraded")
    assert (degraded.status, degraded.reason) == ("True", "InconsistentSlices")
    assert "overlaps ray/b" in degraded.message
    assert "ray/c" in degraded.message and "runs past the end" in degraded.message
    assert "ray/d starts at" in degraded.message
    # Bytes are counted once, and never beyond the capacity.
    assert st.allocated_bytes is not None and st.allocated_bytes <= 64 * GI


def test_invalid_slice_still_holds_its_bytes() -> None:
    bad = body("bad", 8 * GI, 3)  # size not a multiple of regionSize
    view = slice_view(bad)
    assert view is not None and view.error is not None and "spec.size" in view.error
    st = pool_status(spec(), slices_of_pool("p", [bad]), generation=1, now=T0)
    assert st.allocated_bytes == 3
    assert "ray/bad is invalid: spec.size" in cond(st, "Degraded").message


def test_unreadable_slice_counts_no_bytes_but_is_reported() -> None:
    junk = {"metadata": {"name": "junk", "namespace": "ray"}, "spec": {"pool": "p", "offset": "x"}}
    views = slices_of_pool("p", [junk])
    st = pool_status(spec(), views, generation=1, now=T0)
    assert st.allocated_bytes == 0
    assert "ray/junk is invalid" in cond(st, "Degraded").message


def test_transition_time_moves_only_on_change() -> None:
    first = pool_status(spec(), [], generation=1, now=T0)
    same = pool_status(spec(), [], generation=2, now=T1, previous=first)
    assert cond(same, "Ready").last_transition_time == T0
    assert cond(same, "Ready").observed_generation == 2
    full = pool_status(
        spec("4Gi"), slices_of_pool("p", [body("a", 0, 4 * GI)]), generation=3, now=T1, previous=same
    )
    assert cond(full, "Ready").last_transition_time == T0  # still True, only the reason changed
    broken = invalid_pool_status("spec.capacity: bad", [], generation=4, now=T1, previous=full)
    assert cond(broken, "Ready").last_transition_time == T1
    assert (cond(broken, "Ready").status, cond(broken, "Ready").reason) == ("False", "InvalidSpec")
    assert broken.capacity is None and broken.ready == "False"


def test_status_round_trips_through_the_wire_format() -> None:
    st = pool_status(spec(), slices_of_pool("p", [body("a", 0, 4 * GI)]), generation=1, now=T0)
    wire = st.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert wire["largestFreeExtentBytes"] == 60 * GI
    assert wire["conditions"][0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert GismoPoolStatus.model_validate(wire) == st


def test_deterministic() -> None:
    bodies = [body("b", 10 * GI, 2 * GI), body("a", 0, 4 * GI)]
    one = pool_status(spec(), slices_of_pool("p", bodies), generation=1, now=T0)
    two = pool_status(spec(), slices_of_pool("p", list(reversed(bodies))), generation=1, now=T0)
    assert one == two
