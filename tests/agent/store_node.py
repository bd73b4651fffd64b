"""A "node" for the store tests: a separate OS process with its own client, driven over a pipe.

Each test node is spawned (not forked), imports gismo fresh, connects to its own agent, and runs
the named functions below with a per-process ``state`` dict, so views it holds stay alive (and
pinned) between calls exactly as a Ray worker's would.
"""

from __future__ import annotations

import traceback
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

import gismo


def pattern(n: int, seed: int) -> np.ndarray:
    """Deterministic content: the object's identity is recoverable from its bytes."""
    a = (np.arange(n, dtype=np.uint64) * 2654435761 + seed) % 251
    return a.astype(np.uint8)


def tagged(n: int, seed: int) -> np.ndarray:
    """pattern() with the seed in its first 8 bytes (what store_writer.py puts)."""
    a = pattern(n, seed)
    a[:8] = np.frombuffer(np.uint64(seed).tobytes(), np.uint8)
    return a


def connect(st: dict[str, Any], sock: str) -> int:
    st["c"] = gismo.connect(sock)
    st["held"] = {}
    return int(st["c"].region)


def put(st: dict[str, Any], obj: Any) -> gismo.Ref:
    return st["c"].put(obj)


def put_pattern(st: dict[str, Any], n: int, seed: int) -> gismo.Ref:
    return st["c"].put(pattern(n, seed))


def create_fill_seal(st: dict[str, Any], shape: tuple[int, ...], dtype: str, seed: int) -> gismo.Ref:
    """create_array in place, fill it with pattern(seed) (as bytes), seal it (context manager form)."""
    with st["c"].create_array(shape, dtype) as p:
        raw = p.array.reshape(-1).view(np.uint8)
        raw[:] = pattern(raw.size, seed)
    assert not p.array.flags.writeable and p.ref is not None
    ref: gismo.Ref = p.ref
    return ref


def create_open(st: dict[str, Any], name: str, n: int, seed: int) -> gismo.Ref:
    """create an array, fill it, keep it unsealed (held under ``name``); returns the would-be ref."""
    p = st["c"].create_array((n,), np.uint8)
    p.array[:] = pattern(n, seed)
    st.setdefault("pending", {})[name] = p
    ref: gismo.Ref = p.would_be_ref()
    return ref


def seal_open(st: dict[str, Any], name: str) -> gismo.Ref:
    ref: gismo.Ref = st["pending"].pop(name).seal()
    return ref


def abort_open(st: dict[str, Any], name: str) -> None:
    st["pending"].pop(name).abort()


def create_then_raise(st: dict[str, Any], n: int) -> tuple[str, gismo.Ref]:
    """An exception inside the context manager: (exception name, the ref it would have had)."""
    ref = None
    try:
        with st["c"].create_array((n,), np.uint8) as p:
            ref = p.would_be_ref()
            p.array[:] = 1
            raise KeyError("boom")
    except KeyError as exc:
        assert p.state == "aborted" and not p.array.flags.writeable
        return type(exc).__name__, ref
    raise AssertionError("no exception")


def get_raw(st: dict[str, Any], ref: gismo.Ref) -> tuple[str, tuple[int, ...], bytes]:
    """(dtype string, shape, bytes) of an array as get returns it (pickling an array through the
    pipe would turn a big-endian dtype into a native one)."""
    v = st["c"].get(ref)
    return v.dtype.str, v.shape, v.tobytes()


def get(st: dict[str, Any], ref: gismo.Ref) -> Any:
    """A copy of the value, for comparisons in the test process."""
    v = st["c"].get(ref)
    if isinstance(v, np.ndarray):
        return np.array(v)
    if isinstance(v, memoryview):
        return bytes(v)
    return v


def view_report(st: dict[str, Any], ref: gismo.Ref) -> dict[str, Any]:
    """Is get's result a view of the shared mapping? (address range and numpy memory sharing)"""
    c = st["c"]
    v = c.get(ref)
    mapping = np.frombuffer(c.map.ro, dtype=np.uint8)
    addr = v.ctypes.data
    return {
        "shares_memory": bool(np.shares_memory(v, mapping)),
        "in_mapping": c.map.address <= addr and addr + v.nbytes <= c.map.address + c.map.slice_size,
        "writeable": bool(v.flags.writeable),
        "owndata": bool(v.flags.owndata),
        "slice_offset": addr - c.map.address,
    }


def hold(st: dict[str, Any], name: str, ref: gismo.Ref) -> None:
    st["held"][name] = st["c"].get(ref)


def held_bytes(st: dict[str, Any], name: str, start: int = 0, stop: int | None = None) -> bytes:
    v = st["held"][name]
    return bytes(np.asarray(v).reshape(-1).view(np.uint8)[start:stop])


def drop(st: dict[str, Any], name: str) -> None:
    del st["held"][name]


def pins(st: dict[str, Any]) -> int:
    return int(st["c"].pins)


def get_error(st: dict[str, Any], ref: Any) -> str | None:
    """Name of the error get raises (None if it returns)."""
    try:
        st["c"].get(ref)
    except gismo.GismoError as exc:
        return type(exc).__name__
    return None


def delete(st: dict[str, Any], ref: gismo.Ref) -> None:
    st["c"].delete(ref)


def contains(st: dict[str, Any], ref: gismo.Ref) -> bool:
    return bool(st["c"].contains(ref))


def stats(st: dict[str, Any]) -> dict[str, Any]:
    return dict(st["c"].stats())


def check_pattern(st: dict[str, Any], ref: gismo.Ref, n: int, seed: int) -> bool:
    v = st["c"].get(ref)
    return bool(v.shape == (n,) and np.array_equal(v, pattern(n, seed)))


def serve(conn: Connection) -> None:
    """Run commands until told to stop; exceptions travel back as (False, text)."""
    st: dict[str, Any] = {}
    g = globals()
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            break
        if msg is None:
            break
        name, args = msg
        try:
            conn.send((True, g[name](st, *args)))
        except BaseException as exc:
            conn.send((False, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
    c = st.get("c")
    st.clear()
    if c is not None:
        c.close()


def verify_tagged(st: dict[str, Any], expected: list[Any]) -> list[str]:
    """Each ``[ref, seed, size]`` must resolve to exactly the object put under that ref: an array of
    ``size`` bytes equal to tagged(size, seed). Returns what differs (empty: all as recorded).

    Comparing with the writer's record, not with the seed the bytes claim, is what catches a ref
    that resolves to another complete object (a reused slot, a wrong offset)."""
    bad = []
    for r, seed, n in expected:
        try:
            v = st["c"].get(gismo.Ref(*r))
        except gismo.GismoError as exc:
            bad.append(f"{r}: {type(exc).__name__} {exc}")
            continue
        if not isinstance(v, np.ndarray) or v.shape != (n,) or v.dtype != np.uint8:
            bad.append(
                f"{r}: not the {n}-byte array put under it ({type(v).__name__} {getattr(v, 'shape', '')})"
            )
        elif not np.array_equal(v, tagged(n, seed)):
            claimed = int(np.frombuffer(v[:8].tobytes(), np.uint64)[0])
            bad.append(f"{r}: bytes are not tagged({n}, {seed}) (the object claims seed {claimed})")
    return bad


def errors_of(st: dict[str, Any], refs: list[Any]) -> list[str | None]:
    """get_error for each ref (None where get returns)."""
    return [get_error(st, gismo.Ref(*r)) for r in refs]
