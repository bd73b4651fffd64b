"""All-to-all shuffle in one call: map tasks write blocks, every reducer reads one block per map.

Why: this is the pattern where Ray's per-node copies hurt most (every reducer pulls a block from
every map's node). With `backend="gismo"` each map writes its blocks once into its node's Gismo
region and returns only small refs; each reducer reads its blocks in place, whatever node they
were written on. `backend="ray"` runs the identical task graph on Ray's object store (the
baseline the benchmark compares against). Map blocks are freed when the shuffle ends, also on
error, so a shuffle leaves nothing behind in the slice.

Recipe without this helper (what it does)::

    @ray.remote
    def mapper(x, R):                      # num_returns=R
        return tuple(gismo.ray.put(b) for b in split(x, R))

    @ray.remote
    def reducer(*refs):                    # Ray resolves each ObjectRef to a small ObjRef
        return combine(gismo.ray.get(list(refs)))

    outs = [mapper.options(num_returns=R).remote(x, R) for x in inputs]
    results = ray.get([reducer.remote(*[o[j] for o in outs]) for j in range(R)])
    gismo.ray.free(ray.get([r for o in outs for r in o]))

Cost: M*R small refs through Ray (inlined in task returns, ~100 bytes each) plus, per block, one
copy into shared memory at the map side and zero copies at the reduce side.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from gismo import ray as gray

__all__ = ["ShuffleResult", "shuffle"]

Backend = Literal["gismo", "ray"]
StrategyFor = Callable[[int], Any] | None


@dataclass
class ShuffleResult:
    """Reducer outputs in reducer order, plus what happened to the map blocks."""

    results: list[Any]
    blocks: int = 0
    in_gismo: int = 0
    fallbacks: int = 0
    freed: int = 0
    block_bytes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _as_tuple(value: Any, n: int) -> tuple[Any, ...]:
    out = tuple(value)
    if len(out) != n:
        raise ValueError(f"map function returned {len(out)} blocks, expected {n}")
    return out


def _map_gismo(map_fn: Callable[[Any], Sequence[Any]], item: Any, n: int) -> Any:
    refs = tuple(gray.put(b) for b in _as_tuple(map_fn(item), n))
    return refs if n > 1 else refs[0]


def _reduce_gismo(reduce_fn: Callable[[list[Any]], Any], *refs: gray.ObjRef) -> Any:
    return reduce_fn(gray.get(list(refs)))


def _map_ray(map_fn: Callable[[Any], Sequence[Any]], item: Any, n: int) -> Any:
    blocks = _as_tuple(map_fn(item), n)
    return blocks if n > 1 else blocks[0]


def _reduce_ray(reduce_fn: Callable[[list[Any]], Any], *blocks: Any) -> Any:
    return reduce_fn(list(blocks))


_tasks: dict[str, Any] = {}


def _task(name: str) -> Any:
    import ray

    if name not in _tasks:
        fns = {"map_gismo": _map_gismo, "reduce_gismo": _reduce_gismo, "map_ray": _map_ray}
        fns["reduce_ray"] = _reduce_ray
        remote: Any = ray.remote
        _tasks[name] = remote(fns[name])
    return _tasks[name]


def shuffle(
    map_fn: Callable[[Any], Sequence[Any]],
    inputs: Sequence[Any],
    num_reducers: int,
    reduce_fn: Callable[[list[Any]], Any],
    *,
    backend: Backend = "gismo",
    map_strategy: StrategyFor = None,
    reduce_strategy: StrategyFor = None,
    map_options: dict[str, Any] | None = None,
    reduce_options: dict[str, Any] | None = None,
) -> ShuffleResult:
    """Run `map_fn` on each input (as Ray tasks), then `reduce_fn` once per reducer.

    Args:
        map_fn: input -> sequence of exactly `num_reducers` blocks (block j goes to reducer j).
        inputs: one item per map task (passed as the task argument).
        num_reducers: R.
        reduce_fn: list of M blocks (one per map, in map order) -> reducer result.
        backend: "gismo" (blocks in shared memory, refs through Ray) or "ray" (blocks in Ray's stores).
        map_strategy / reduce_strategy: task index -> Ray scheduling strategy (e.g. node affinity).
        map_options / reduce_options: extra `.options()` for the tasks (e.g. num_cpus).
    Returns:
        ShuffleResult with reducer outputs and block accounting; every Gismo block is freed.
    """
    import ray

    if num_reducers < 1:
        raise ValueError("num_reducers must be >= 1")
    mtask = _task(f"map_{backend}")
    rtask = _task(f"reduce_{backend}")
    outs: list[list[Any]] = []
    result = ShuffleResult(results=[])
    try:
        for i, item in enumerate(inputs):
            opts: dict[str, Any] = dict(map_options or {}, num_returns=num_reducers)
            if map_strategy is not None:
                opts["scheduling_strategy"] = map_strategy(i)
            out = mtask.options(**opts).remote(map_fn, item, num_reducers)
            outs.append(list(out) if num_reducers > 1 else [out])
        reducers = []
        for j in range(num_reducers):
            opts = dict(reduce_options or {})
            if reduce_strategy is not None:
                opts["scheduling_strategy"] = reduce_strategy(j)
            reducers.append(rtask.options(**opts).remote(reduce_fn, *[o[j] for o in outs]))
        result.results = list(ray.get(reducers))
    finally:
        flat = [r for o in outs for r in o]
        result.blocks = len(flat)
        if backend == "gismo" and flat:
            refs = _settled(flat)
            result.in_gismo = sum(r.in_gismo for r in refs)
            result.fallbacks = sum(not r.in_gismo for r in refs)
            result.block_bytes = sum(r.nbytes for r in refs)
            result.freed = gray.free(refs)
    return result


def _settled(flat: list[Any]) -> list[gray.ObjRef]:
    """The map outputs that exist (a failed map has none to free)."""
    import ray

    try:
        return list(ray.get(flat))
    except Exception:
        got = []
        for r in flat:
            try:
                got.append(ray.get(r))
            except Exception:
                continue
        return got
