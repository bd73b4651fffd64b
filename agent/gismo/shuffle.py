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

Blocks written in place (``map_into=True``): the map function is called as
``map_fn(item, make_block)`` where ``make_block(shape, dtype="uint8")`` returns a fresh, writable,
uninitialised numpy array; the map fills the blocks it made and returns them (R of them, block j
for reducer j), exactly as before. With ``backend="gismo"`` each such array lives in this node's
Gismo region already (``gismo.ray.create_array``), so returning it seals it in place: no private
copy is ever made and there is no copy into the store. Any returned object that is not an array
from ``make_block`` (identity is checked, so return the array itself, not a view or reshape of
it) is stored by ``gismo.ray.put`` as usual; blocks made but not returned, and every block of a
map that raises, are aborted. With ``backend="ray"``, ``make_block`` is ``numpy.empty`` and the
blocks are returned to Ray as usual, so one map function runs on both backends::

    def map_fn(i, make_block):
        blocks = [make_block(size, "uint8") for _ in range(R)]
        for b in blocks:
            b[:] = i
        return blocks

    shuffle(map_fn, inputs, R, reduce_fn, map_into=True)

Cost: M*R small refs through Ray (inlined in task returns, ~100 bytes each) plus, per block, one
copy into shared memory at the map side (none with ``map_into``: one agent round trip per block
instead) and zero copies at the reduce side.
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


def _map_gismo_into(map_fn: Callable[..., Sequence[Any]], item: Any, n: int) -> Any:
    made: dict[int, gray.Creation] = {}

    def make_block(shape: int | tuple[int, ...], dtype: Any = "uint8") -> Any:
        c = gray.create_array(shape, dtype)
        made[id(c.array)] = c
        return c.array

    try:
        refs = []
        for b in _as_tuple(map_fn(item, make_block), n):
            c = made.get(id(b))
            refs.append(c.seal() if c is not None and c.array is b else gray.put(b))
    finally:
        for c in made.values():
            c.abort()  # no-op for sealed ones; frees what the map made but did not return
    out = tuple(refs)
    return out if n > 1 else out[0]


def _map_ray_into(map_fn: Callable[..., Sequence[Any]], item: Any, n: int) -> Any:
    import numpy as np

    blocks = _as_tuple(map_fn(item, np.empty), n)
    return blocks if n > 1 else blocks[0]


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
        fns: dict[str, Callable[..., Any]] = {"map_gismo": _map_gismo, "map_ray": _map_ray}
        fns.update(reduce_gismo=_reduce_gismo, reduce_ray=_reduce_ray)
        fns.update(map_gismo_into=_map_gismo_into, map_ray_into=_map_ray_into)
        remote: Any = ray.remote
        _tasks[name] = remote(fns[name])
    return _tasks[name]


def shuffle(
    map_fn: Callable[..., Sequence[Any]],
    inputs: Sequence[Any],
    num_reducers: int,
    reduce_fn: Callable[[list[Any]], Any],
    *,
    backend: Backend = "gismo",
    map_strategy: StrategyFor = None,
    reduce_strategy: StrategyFor = None,
    map_options: dict[str, Any] | None = None,
    reduce_options: dict[str, Any] | None = None,
    map_into: bool = False,
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
        map_into: call `map_fn(item, make_block)` so the map writes its blocks in place (see the
            module docstring); with "gismo" no block is copied into the store.
    Returns:
        ShuffleResult with reducer outputs and block accounting; every Gismo block is freed.
    """
    import ray

    if num_reducers < 1:
        raise ValueError("num_reducers must be >= 1")
    if backend not in ("gismo", "ray"):
        raise ValueError(f"unknown backend {backend!r}")
    mtask = _task(f"map_{backend}" + ("_into" if map_into else ""))
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
