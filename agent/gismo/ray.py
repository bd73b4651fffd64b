"""Ray integration: `put` objects into Gismo shared memory once, `get` them in place on any node.

Why: Ray copies an object into every node's store that reads it (raylet transfer, several
copies). With Gismo the object is written once into this node's region of the shared slice and
any node reads it in place through its own mapping; only a small `ObjRef` travels through Ray
(task arguments and return values, actors, nested tasks).

Which agent: a process talks to the agent of the Ray node it runs on, found from its environment
(`GISMO_SOCKET` and the other `GISMO_*` variables). On Kubernetes the operator's webhook puts those
in the Ray container, which Ray workers inherit; the local harness (`gismo.testing.LocalCluster`)
starts each raylet with its node's variables, so it works the same way.

Fallback: with no agent in reach (no `GISMO_SOCKET`, agent down, pod started without Gismo), or
when the store is full, `put` uses `ray.put` and the `ObjRef` carries the Ray ref and the reason
(as with any `ray.put` in a task, such an object is owned by the worker that put it and lives
while that worker does: Ray's own rule). `get` of such a ref is `ray.get`. Each fallback is
counted in `stats()` of the process (`fallback_puts`, `fallback_puts_<reason>`), visible on the
ref (`ref.fallback`), and a store-full one also in the agent's own `store_full`/`fallbacks`.
A Gismo ref read where there is no agent is read by a zero-CPU task on the owner node and shipped
through Ray (counted as `remote_fetches`).

Freeing: Gismo objects live until deleted. Only the owner node's agent may delete (one writer
per region), so `free(refs)` deletes locally what this node owns and runs a zero-CPU task on each
other owner node for the rest. `Group` collects refs and frees them together (context manager);
`gismo.shuffle.shuffle` frees every map block when it ends, so a shuffle leaves nothing behind.

Create in place: `create_array(shape, dtype)` hands out a writable numpy array inside this node's
region; fill it, and leaving the `with` block seals it (an exception aborts it) and gives an
`ObjRef` (`c.ref`), with no copy at all. Without an agent, or when the store is full, the array is a
plain private numpy array and the seal is a `ray.put` of it (a fallback, counted as for `put`):

    with gismo.ray.create_array((n,), np.float32) as c:
        c.array[:] = compute()
    return c.ref

The GISMO tensor transport: importing this module also registers Ray Direct Transport "GISMO"
(see gismo.rdt): actor methods declared `@ray.method(tensor_transport="GISMO")` return arrays marked
with `shared(arr)` through Gismo with Ray's own lifetimes (deleted when the last ObjectRef goes).
Use it between actors; `put`/`get` for tasks and arbitrary objects, freed explicitly.

Cost: `put` = one copy of the object's buffers into shared memory plus one agent round-trip;
`get` = no agent message (validation and a pin in shared memory), page faults on first touch,
no copy of the data.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

from .client import connect
from .contract import ENV_DEVICE, ENV_SOCKET, SOCKET_PATH
from .errors import AgentUnavailable, GismoError, ObjectNotFound, StaleRef, StoreFull

T = TypeVar("T")
_log = logging.getLogger(__name__)

__all__ = [
    "TRANSPORT",
    "Creation",
    "GismoArray",
    "Group",
    "ObjRef",
    "cluster_stats",
    "create_array",
    "free",
    "get",
    "group",
    "put",
    "reset",
    "shared",
    "stats",
]

# After a failed connect, don't retry for this long (each retry costs a socket round-trip).
RECONNECT_BACKOFF_S = 5.0


@dataclass(frozen=True, slots=True)
class ObjRef:
    """A small picklable handle to an object in Gismo, or in Ray's store after a fallback.

    Attributes:
        gismo_ref: the store's `gismo.Ref` (region, slot, generation, offset, size), or None.
        ray_ref: the `ray.ObjectRef` when the object fell back to Ray's store, else None.
        node_id: the Ray node whose agent owns the object (deletes are routed there).
        nbytes: payload size in bytes when known (numpy/bytes-like), else 0.
        fallback: why the object is in Ray's store, or None: "no-agent" (no GISMO_SOCKET here),
            "agent-unavailable" (configured but not reachable), "store-full", "agent-error".
    """

    gismo_ref: Any | None
    ray_ref: Any | None
    node_id: str
    nbytes: int = 0
    fallback: str | None = None

    @property
    def in_gismo(self) -> bool:
        return self.gismo_ref is not None


@dataclass
class _State:
    pid: int = -1
    client: Any | None = None
    socket: str | None = None
    retry_at: float = 0.0
    counters: Counter[str] = field(default_factory=Counter)
    node_id: str = ""  # this process's Ray node, once known (a worker never changes node)
    #: Why the last connection attempt failed (e.g. "agent degraded: <why>"), logged once per change.
    agent_error: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    # create_array objects sealed here, by data address: (nbytes, Ref). The GISMO transport then
    # references such an array where it lies instead of copying it (see gismo.rdt).
    in_place: dict[int, tuple[int, Any]] = field(default_factory=dict)


_state = _State()


def _st() -> _State:
    global _state
    if _state.pid != os.getpid():  # forked: never share a client connection with the parent
        _state = _State(pid=os.getpid())
    return _state


def reset() -> None:
    """Drop this process's cached agent connection and counters (tests, harness teardown)."""
    global _state
    old = _state
    _state = _State(pid=os.getpid())
    if old.client is not None and old.pid == os.getpid():
        with contextlib.suppress(Exception):
            old.client.close()


def _socket_path() -> str | None:
    """GISMO_SOCKET; the contract's default socket if only the device is configured; else None.

    An empty GISMO_SOCKET means "no agent here" (how a pod/task opts out).
    """
    sock = os.environ.get(ENV_SOCKET)
    if sock is None and os.environ.get(ENV_DEVICE):
        return SOCKET_PATH
    return sock or None


def _client() -> Any | None:
    """This node's agent client, connecting lazily; None when no agent is reachable."""
    st = _st()
    sock = _socket_path()
    if not sock:
        return None
    with st.lock:
        if st.client is not None and st.socket == sock:
            return st.client
        if st.socket == sock and time.monotonic() < st.retry_at:
            return None
        if st.client is not None:
            with contextlib.suppress(Exception):
                st.client.close()
            st.client = None
        st.socket = sock
        try:
            st.client = connect(socket_path=sock)
            st.counters["connects"] += 1
            return st.client
        except Exception as exc:
            st.counters["connect_failures"] += 1
            st.retry_at = time.monotonic() + RECONNECT_BACKOFF_S
            if str(exc) != st.agent_error:  # say why once (a degraded agent names its problem)
                st.agent_error = str(exc)
                _log.warning("Gismo agent unavailable, using Ray's object store: %s", exc)
            return None


def _drop_client() -> None:
    st = _st()
    with st.lock:
        if st.client is not None:
            with contextlib.suppress(Exception):
                st.client.close()
        st.client = None
        st.retry_at = time.monotonic() + RECONNECT_BACKOFF_S


def _node_id() -> str:
    """This process's Ray node id, asked of Ray once per process (it is on every put's path).

    Cached in the per-process state, so a fork asks again; dropped while Ray is not initialised
    and by ``reset()`` (call it after ``ray.shutdown()``/``ray.init()`` in one driver, as
    gismo.testing.LocalCluster does).
    """
    import ray

    st = _st()
    if not ray.is_initialized():
        st.node_id = ""
        return ""
    if not st.node_id:
        st.node_id = str(ray.get_runtime_context().get_node_id())
    return st.node_id


def _nbytes(obj: Any) -> int:
    n = getattr(obj, "nbytes", None)
    if isinstance(n, int):
        return n
    if isinstance(obj, bytes | bytearray | memoryview):
        return len(obj)
    return 0


def _on_agent(op: Callable[[Any], T]) -> tuple[T | None, str]:
    """``op(client)`` on this node's agent: ``(result, "")``, or ``(None, reason)`` to fall back to Ray.

    One place decides what a failure means: ``no-agent`` (no GISMO_SOCKET), ``agent-unavailable``
    (cannot connect), ``store-full``, ``agent-error`` (the agent went away mid-call: the client is
    dropped so the next call reconnects, or the agent refused).
    """
    client = _client()
    if client is None:
        return None, "no-agent" if _socket_path() is None else "agent-unavailable"
    try:
        return op(client), ""
    except StoreFull:
        return None, "store-full"
    except (AgentUnavailable, OSError):
        _drop_client()
        return None, "agent-error"
    except GismoError:
        return None, "agent-error"


def put(obj: Any) -> ObjRef:
    """Store `obj` in this node's Gismo region; fall back to `ray.put` if that is not possible.

    Cost: one copy of the object's (pickle-5 out-of-band) buffers into shared memory; on fallback,
    whatever `ray.put` costs.
    """
    import ray

    st = _st()
    node = _node_id()
    gref, reason = _on_agent(lambda client: client.put(obj))
    if gref is not None:
        st.counters["puts"] += 1
        size = getattr(gref, "size", None)
        return ObjRef(gref, None, node, size if isinstance(size, int) else _nbytes(obj))
    st.counters["fallback_puts"] += 1
    st.counters[f"fallback_puts_{reason}"] += 1
    return ObjRef(None, ray.put(obj), node, _nbytes(obj), reason)


class Creation:
    """An array being written in place for an `ObjRef` (see `create_array`).

    Attributes:
        array: the writable numpy array to fill (in this node's Gismo region, or private memory
            on a fallback). Read-only once sealed or aborted; do not keep writing through views
            taken from it after that.
        ref: the `ObjRef`, set by `seal()` (a clean exit from the `with` block); None before.
        fallback: why the array is private memory (see `ObjRef.fallback`), or None when in Gismo.
    """

    __slots__ = ("_pending", "array", "fallback", "node_id", "ref", "state")

    def __init__(self, array: Any, pending: Any | None, node_id: str, fallback: str | None) -> None:
        self.array = array
        self._pending = pending
        self.node_id = node_id
        self.fallback = fallback
        self.ref: ObjRef | None = None
        self.state = "open"

    @property
    def in_gismo(self) -> bool:
        return self._pending is not None

    def seal(self) -> ObjRef:
        """Publish the array: a Gismo seal (no copy, no round trip) or, on a fallback, `ray.put`.
        Idempotent: a second call returns the same ref."""
        import ray

        if self.ref is not None:
            return self.ref
        if self.state != "open":
            raise RuntimeError(f"cannot seal a creation that was {self.state}")
        st = _st()
        p = self._pending
        if p is not None:
            try:
                gref = p.seal()
            except (AgentUnavailable, OSError, GismoError):
                # The region's bytes are still mapped: copy them out and let Ray carry the object.
                _drop_client()
                self.fallback = "agent-error"
                self._pending = None
                self.array = self.array.copy()
            else:
                st.counters["puts"] += 1
                st.counters["creates"] += 1
                self.state = "sealed"
                self.ref = ObjRef(gref, None, self.node_id, int(gref.size))
                _remember_in_place(st, self.array, gref)
                return self.ref
        reason = self.fallback or "agent-error"
        st.counters["fallback_puts"] += 1
        st.counters[f"fallback_puts_{reason}"] += 1
        self.state = "sealed"
        self.ref = ObjRef(None, ray.put(self.array), self.node_id, int(self.array.nbytes), reason)
        with contextlib.suppress(ValueError):
            self.array.flags.writeable = False
        return self.ref

    def abort(self) -> None:
        """Drop the array: its Gismo space is freed (nothing was put on a fallback)."""
        if self.state != "open":
            return
        self.state = "aborted"
        if self._pending is not None:
            with contextlib.suppress(Exception):
                self._pending.abort()

    def __enter__(self) -> Creation:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.seal()
        else:
            self.abort()


#: How many sealed create_array objects are remembered for the transport before stale ones are pruned.
IN_PLACE_MAX = 4096


def _remember_in_place(st: _State, array: Any, gref: Any) -> None:
    with st.lock:
        if len(st.in_place) >= IN_PLACE_MAX:
            client = st.client
            for addr, (_n, old) in list(st.in_place.items()):
                if client is None or not client.contains(old):
                    del st.in_place[addr]
            while len(st.in_place) >= IN_PLACE_MAX:  # all still alive: forget the oldest (a copy later)
                del st.in_place[next(iter(st.in_place))]
        st.in_place[int(array.ctypes.data)] = (int(array.nbytes), gref)


def _in_place_ref(client: Any, array: Any) -> Any | None:
    """The Ref of a sealed create_array object that is exactly ``array``'s bytes, else None."""
    st = _st()
    entry = st.in_place.get(int(array.ctypes.data))
    if entry is None or entry[0] != array.nbytes or not array.flags.c_contiguous:
        return None
    gref = entry[1]
    if gref.region != client.region or not client.contains(gref):
        st.in_place.pop(int(array.ctypes.data), None)
        return None
    return gref


def create_array(shape: int | tuple[int, ...], dtype: Any = "uint8") -> Creation:
    """A writable array of `shape`/`dtype` written straight into this node's Gismo region.

    Use as `with create_array(shape, dtype) as c: c.array[...] = ...`, then `c.ref` is the
    `ObjRef` (`get` anywhere returns a read-only view with this dtype and shape); an exception in
    the block aborts it. Or call `c.seal()` / `c.abort()` yourself. The array is uninitialised.
    Fallback (no agent, agent unreachable, store full): a private `numpy.empty` array that
    `seal()` hands to `ray.put` (counted in `stats()` as for `put`).
    Cost: one agent round trip (none up to 64 KiB) and no copy; on fallback, `ray.put`'s copy.
    ValueError for dtypes with Python objects or fields (use `put`).
    """
    import numpy as np

    node = _node_id()
    pending, reason = _on_agent(lambda client: client.create_array(shape, dtype))
    if pending is not None:
        return Creation(pending.array, pending, node, None)
    return Creation(np.empty(shape, dtype), None, node, reason)


def _read_here(gref: Any) -> Any:
    client = _client()
    if client is None:
        raise RuntimeError("no Gismo agent on this node")
    return client.get(gref)


def _remote_read(ref: ObjRef) -> Any:
    """Read a Gismo object from a node without an agent: a task on the owner node ships it via Ray."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    _st().counters["remote_fetches"] += 1
    task = _remote_fn("read")
    strategy = NodeAffinitySchedulingStrategy(node_id=ref.node_id, soft=False)
    return ray.get(task.options(scheduling_strategy=strategy).remote(ref.gismo_ref))


def get(ref: ObjRef | Sequence[ObjRef] | Any) -> Any:
    """The object behind `ref` (or a list of objects for a list/tuple of refs).

    Gismo objects are read in place: numpy arrays and buffers come back as read-only views over
    the shared mapping (no copy). A plain `ray.ObjectRef` is accepted and passed to `ray.get`.
    """
    import ray

    if isinstance(ref, list | tuple):
        return _get_many(ref)
    st = _st()
    ray_get: Any = ray.get
    if not isinstance(ref, ObjRef):
        st.counters["ray_gets"] += 1
        return ray_get(ref)
    if ref.gismo_ref is None:
        st.counters["ray_gets"] += 1
        return ray_get(ref.ray_ref)
    client = _client()
    if client is None:
        return _remote_read(ref)
    try:
        value = client.get(ref.gismo_ref)
    except (AgentUnavailable, OSError):
        _drop_client()
        return _remote_read(ref)
    st.counters["gets"] += 1
    return value


def _get_many(refs: Sequence[Any]) -> list[Any]:
    """Batch form: Ray fallbacks are fetched with one `ray.get` (parallel pulls)."""
    import ray

    out: list[Any] = [None] * len(refs)
    ray_idx: list[int] = []
    ray_refs: list[Any] = []
    for i, r in enumerate(refs):
        if isinstance(r, ObjRef) and r.gismo_ref is not None:
            out[i] = get(r)
        else:
            ray_idx.append(i)
            ray_refs.append(r.ray_ref if isinstance(r, ObjRef) else r)
    if ray_refs:
        _st().counters["ray_gets"] += len(ray_refs)
        for i, value in zip(ray_idx, ray.get(ray_refs), strict=True):
            out[i] = value
    return out


def _delete_here(grefs: Iterable[Any]) -> int:
    """Delete refs owned by this node's agent; already-gone objects are not an error."""
    client = _client()
    if client is None:
        raise RuntimeError("no Gismo agent on this node")
    gone = (ObjectNotFound, StaleRef)
    n = 0
    for g in grefs:
        try:
            client.delete(g)
            n += 1
        except gone:
            pass
    return n


_remote_fns: dict[str, Any] = {}


def _remote_fn(kind: str) -> Any:
    """Zero-CPU helper tasks (so they never wait behind busy CPU slots), created lazily."""
    import ray

    if kind not in _remote_fns:
        fns = {"read": _read_here, "delete": _delete_here, "stats": _node_report}
        remote: Any = ray.remote
        _remote_fns[kind] = remote(num_cpus=0, max_retries=0)(fns[kind])
    return _remote_fns[kind]


def free(refs: Iterable[ObjRef]) -> int:
    """Free a set of objects now; returns how many Gismo objects were deleted.

    Gismo objects are deleted by their owner node's agent (locally, or by a zero-CPU task pinned
    to that node). Ray fallbacks are left to Ray's reference counting (Ray has no explicit free):
    they go when the last ObjRef naming them is dropped. Objects whose owner node is gone are
    skipped (their region is released with the node). Cost: one agent round-trip per object plus
    one small task per other owner node.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = _node_id()
    by_node: dict[str, list[Any]] = {}
    for r in refs:
        if r.gismo_ref is not None:
            by_node.setdefault(r.node_id, []).append(r.gismo_ref)
    deleted = 0
    pending = []
    st = _st()
    for node, grefs in by_node.items():
        if node == here and _client() is not None:
            deleted += _delete_here(grefs)
        else:
            strategy = NodeAffinitySchedulingStrategy(node_id=node, soft=False)
            pending.append(_remote_fn("delete").options(scheduling_strategy=strategy).remote(grefs))
    for p in pending:
        try:
            deleted += int(ray.get(p))
        except Exception:
            st.counters["free_failures"] += 1
    # Ray fallbacks: Ray 2.60 has no explicit free; the object goes when its last ObjectRef does,
    # i.e. when the caller drops these ObjRefs (Group.free drops its own list).
    st.counters["freed"] += deleted
    return deleted


class Group:
    """Refs made for one job, freed together (explicitly or at the end of a `with` block).

    Refs made in remote tasks are added with `add()` once they reach the driver.
    """

    def __init__(self) -> None:
        self.refs: list[ObjRef] = []
        self._lock = threading.Lock()

    def put(self, obj: Any) -> ObjRef:
        ref = put(obj)
        self.add(ref)
        return ref

    def add(self, refs: ObjRef | Iterable[ObjRef]) -> None:
        with self._lock:
            if isinstance(refs, ObjRef):
                self.refs.append(refs)
            else:
                self.refs.extend(refs)

    def summary(self) -> dict[str, int]:
        """How many refs are in Gismo vs fell back to Ray, and their known bytes."""
        with self._lock:
            refs = list(self.refs)
        return {
            "refs": len(refs),
            "in_gismo": sum(r.in_gismo for r in refs),
            "fallbacks": sum(not r.in_gismo for r in refs),
            "bytes": sum(r.nbytes for r in refs),
        }

    def free(self) -> int:
        with self._lock:
            refs, self.refs = self.refs, []
        return free(refs)

    def __enter__(self) -> Group:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.free()


@contextlib.contextmanager
def group() -> Iterator[Group]:
    """`with gismo.ray.group() as g: ref = g.put(x) ...` -- everything in `g` is freed on exit."""
    g = Group()
    try:
        yield g
    finally:
        g.free()


def stats() -> dict[str, Any]:
    """This process's counters (puts, gets, fallback_puts[_<reason>], remote_fetches, ...)."""
    st = _st()
    out: dict[str, Any] = dict(st.counters)
    out["fallbacks"] = st.counters["fallback_puts"]
    out["socket"] = _socket_path()
    out["connected"] = st.client is not None
    out["agent_error"] = st.agent_error
    return out


def _node_report() -> dict[str, Any]:
    report: dict[str, Any] = {"node_id": _node_id(), "socket": os.environ.get(ENV_SOCKET)}
    client = _client()
    report["agent"] = dict(client.stats()) if client is not None else None
    return report


def cluster_stats() -> list[dict[str, Any]]:
    """Every alive Ray node's agent stats (`None` where there is no agent), via zero-CPU tasks."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    tasks = []
    nodes: Any = ray.nodes
    for node in nodes():
        if node.get("Alive"):
            strategy = NodeAffinitySchedulingStrategy(node_id=node["NodeID"], soft=False)
            tasks.append(_remote_fn("stats").options(scheduling_strategy=strategy).remote())
    return list(ray.get(tasks))


# The GISMO tensor transport (Ray Direct Transport): importing gismo.ray registers it with Ray.
from .rdt import TRANSPORT, GismoArray, shared  # noqa: E402
