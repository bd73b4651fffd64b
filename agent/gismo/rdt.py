"""The ``GISMO`` tensor transport: Ray Direct Transport (Ray 2.60, alpha API) backed by Gismo memory.

Why: an actor method declared ``@ray.method(tensor_transport="GISMO")`` keeps the arrays it returns
out of Ray's object store. Ray hands them to this transport on the source (``extract_...``), which
places each one in the source node's Gismo region; a receiver (another actor, the driver, a task
that ``ray.get``s a nested ref) maps the same bytes: ``recv_multiple_tensors`` returns read-only
numpy views of the shared mapping, no copy, no transfer. Ray's distributed reference counting then
calls ``garbage_collect`` on the source once the last ref is gone, which deletes the objects. So
objects get Ray's lifetimes with Gismo's data path, through Ray's own plug-in point.

Which arrays: only :class:`GismoArray` instances (``gismo.ray.shared(arr)``, a view: no copy) take
the transport. Registering ``numpy.ndarray`` itself would install a process-wide ndarray serializer
in every worker that used the transport once, sending each of its other arrays through plain pickle
(2.7x slower, writable copies); a subclass is matched by exact type and leaves those alone.

In place: an array made with ``gismo.ray.create_array`` and sealed is referenced where it lies (no
copy). The transport did not make it, so it does not delete it: it keeps the lifetime of its
creation (free ``c.ref`` yourself). Everything the transport placed, it deletes.

Fallback: when the source has no agent (pod without Gismo, agent down) or its region is full, the
array travels inline in the transport's metadata through Ray (correct, one extra copy per receiver,
at most ``FALLBACK_INLINE_MAX`` bytes per object: Ray carries that metadata in one gRPC message),
counted in ``gismo.ray.stats()`` as ``transport_fallbacks[_<reason>]``.

A source that dies: Ray never garbage-collects its objects. The transport ties every object it
places to its process's agent connection (protocol.TIE), so the agent deletes them the moment that
process exits or is killed (its socket closes). An agent restart forgets those ties: such objects
then stay until the pod goes (its region is formatted by the next owner).

Guards against Ray 2.60 traps (installed when this module is imported, i.e. by ``import gismo.ray``
and in every process that unpickles this transport's metadata):

- a receiving actor created without ``enable_tensor_transport=True`` would queue the receive behind
  its own blocked call (a hang until Ray's fetch timeout): refused at ``.remote()`` with
  :class:`ReceiverNotEnabled`, naming the actor and the object;
- Ray's abort path imports torch: without torch a timed-out transfer raised ImportError and killed
  Ray's monitor thread (later transfers unmonitored). The guard catches it, drops the transfer's
  bookkeeping as Ray would, and logs; a one-sided GISMO receive holds nothing to abort.

Not guarded (Ray 2.60 cannot): passing such a ref straight into a plain ``@ray.remote`` task fails
in the task's argument deserialization (``'_thread._local' object has no attribute
'rdt_tensors'``). Pass it nested (``f.remote([ref])``) and ``ray.get`` it inside the task, or use
``gismo.ray.put``/``get`` for tasks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ray.experimental.rdt.tensor_transport_manager import (
    CommunicatorMetadata,
    TensorTransportManager,
    TensorTransportMetadata,
)

from .errors import AgentUnavailable, GismoError, StoreFull

log = logging.getLogger("gismo.rdt")

#: The transport's name, as in ``@ray.method(tensor_transport="GISMO")`` (Ray upper-cases it).
TRANSPORT = "GISMO"
#: The largest object (all its arrays) a fallback carries inline in the transport's metadata.
FALLBACK_INLINE_MAX = 256 << 20

__all__ = [
    "FALLBACK_INLINE_MAX",
    "TRANSPORT",
    "GismoArray",
    "GismoTransport",
    "GismoTransportMetadata",
    "ReceiverNotEnabled",
    "register",
    "shared",
]


class ReceiverNotEnabled(GismoError, ValueError):
    """A GISMO object was sent to an actor created without ``enable_tensor_transport=True``."""


class GismoArray(np.ndarray):
    """A numpy array marked to travel by the GISMO transport (make one with :func:`shared`).

    Views and slices stay marked; results of arithmetic on it are plain arrays (a computed array is
    the user's own, and must not take the transport unasked).
    """

    def __array_wrap__(self, obj: Any, context: Any = None, return_scalar: bool = False) -> Any:
        if return_scalar:
            return obj[()]
        return obj.view(np.ndarray) if isinstance(obj, np.ndarray) else obj


def shared(array: Any) -> GismoArray:
    """``array`` marked for the GISMO transport: a view (no copy) with the same flags.

    Return it (or a list/dict holding such arrays) from ``@ray.method(tensor_transport="GISMO")``,
    or ``ray.put(value, _tensor_transport="GISMO")`` it in the driver.
    """
    return np.asarray(array).view(GismoArray)


@dataclass
class GismoTransportMetadata(TensorTransportMetadata):
    """Where each array of one object is: a Gismo ref, or inline bytes on a fallback.

    Attributes:
        refs: per array, the ``gismo.Ref`` in the source node's region, or None (inline).
        inline: per array, the array itself on a fallback, else None.
        owned: per array, whether the transport placed it (and so deletes it).
        node_id: the source's Ray node (a receiver without an agent reads through a task there).
        fallback: why arrays are inline ("no-agent", "agent-unavailable", "store-full",
            "agent-error"), or None.
    """

    refs: list[Any] = field(default_factory=list)
    inline: list[Any] = field(default_factory=list)
    owned: list[bool] = field(default_factory=list)
    node_id: str = ""
    fallback: str | None = None


def _plain(tensor: Any) -> np.ndarray:
    arr = np.asarray(tensor)
    return arr.view(np.ndarray) if type(arr) is not np.ndarray else arr


class GismoTransport(TensorTransportManager):
    """One-sided: the receiver maps the source's bytes; the source never takes part in a transfer."""

    def tensor_transport_backend(self) -> str:
        return TRANSPORT

    @staticmethod
    def is_one_sided() -> bool:
        return True

    @staticmethod
    def can_abort_transport() -> bool:
        # A receive only maps memory: nothing in flight to interrupt, so Ray need not kill actors.
        return True

    def actor_has_tensor_transport(self, actor: Any) -> bool:
        # Any process can be a source: with no agent it falls back (inline), so always available.
        return True

    def get_communicator_metadata(self, src_actor: Any, dst_actor: Any, backend: str | None = None) -> Any:
        return CommunicatorMetadata()

    def extract_tensor_transport_metadata(self, obj_id: str, rdt_object: list[Any]) -> Any:
        """Place each array in this node's region (or reference it where create_array made it)."""
        from . import ray as gray

        st = gray._st()
        arrays = [_plain(t) for t in rdt_object]
        meta = GismoTransportMetadata(
            tensor_meta=[(tuple(a.shape), a.dtype) for a in arrays],
            tensor_device="cpu",
            node_id=gray._node_id(),
        )
        client = gray._client()
        reason: str | None = None
        if client is None:
            reason = "no-agent" if gray._socket_path() is None else "agent-unavailable"
        placed: list[Any] = []
        for arr in arrays:
            gref = None
            if reason is None and client is not None:
                gref = gray._in_place_ref(client, arr)
                if gref is not None:
                    st.counters["transport_in_place"] += 1
                    meta.refs.append(gref)
                    meta.inline.append(None)
                    meta.owned.append(False)
                    continue
                try:
                    gref = client.put(np.ascontiguousarray(arr))
                except StoreFull:
                    reason = "store-full"
                    client.note_fallback()
                except (AgentUnavailable, OSError):
                    gray._drop_client()
                    reason = "agent-error"
                except GismoError:
                    reason = "agent-error"
            if gref is not None:
                placed.append(gref)
                meta.refs.append(gref)
                meta.inline.append(None)
                meta.owned.append(True)
                continue
            meta.refs.append(None)
            meta.inline.append(arr)
            meta.owned.append(False)
            st.counters["transport_fallbacks"] += 1
            st.counters[f"transport_fallbacks_{reason}"] += 1
        meta.fallback = reason
        inline_bytes = sum(int(a.nbytes) for a in meta.inline if a is not None)
        if inline_bytes > FALLBACK_INLINE_MAX:
            self._delete(obj_id, placed)
            raise GismoError(
                f"GISMO transport object {obj_id}: cannot place it in Gismo ({reason}) and its "
                f"{inline_bytes} bytes exceed the {FALLBACK_INLINE_MAX} a fallback carries inline; "
                "return it without tensor_transport (Ray's object store) instead"
            )
        if placed and client is not None:
            try:
                client.tie(placed)
            except GismoError as exc:  # still deleted by garbage_collect; only a crash would leak them
                st.counters["transport_tie_failures"] += 1
                log.warning("GISMO transport object %s: could not tie it to this process: %s", obj_id, exc)
        st.counters["transport_puts"] += len(placed)
        return meta

    def recv_multiple_tensors(
        self,
        obj_id: str,
        tensor_transport_metadata: Any,
        communicator_metadata: Any,
        target_buffers: list[Any] | None = None,
    ) -> list[Any]:
        """Read-only views of the shared mapping (copies only into ``target_buffers`` if Ray gives any)."""
        from . import ray as gray

        meta: GismoTransportMetadata = tensor_transport_metadata
        st = gray._st()
        out: list[Any] = []
        client = gray._client() if any(r is not None for r in meta.refs) else None
        for i, ((shape, dtype), gref, data) in enumerate(
            zip(meta.tensor_meta, meta.refs, meta.inline, strict=True)
        ):
            if gref is None:
                arr = np.asarray(data)
                st.counters["transport_fallback_gets"] += 1
            else:
                arr = self._read(obj_id, i, gref, meta.node_id, client)
                st.counters["transport_gets"] += 1
            if tuple(arr.shape) != tuple(shape) or arr.dtype != dtype:
                raise GismoError(
                    f"GISMO transport object {obj_id}, array {i}: got {arr.dtype}{arr.shape}, "
                    f"expected {dtype}{tuple(shape)}"
                )
            if target_buffers is not None:
                np.copyto(target_buffers[i], arr)
                arr = target_buffers[i]
            out.append(arr)
        return out

    @staticmethod
    def _read(obj_id: str, index: int, gref: Any, node_id: str, client: Any) -> Any:
        from . import ray as gray

        if client is not None:
            try:
                return client.get(gref)
            except (AgentUnavailable, OSError):
                gray._drop_client()
            except GismoError as exc:
                raise GismoError(f"GISMO transport object {obj_id}, array {index} ({gref!r}): {exc}") from exc
        try:
            return gray._remote_read(gray.ObjRef(gref, None, node_id))
        except Exception as exc:
            raise GismoError(
                f"GISMO transport object {obj_id}, array {index} ({gref!r}): no agent here and the "
                f"source node {node_id} could not ship it: {exc}"
            ) from exc

    def send_multiple_tensors(
        self, tensors: list[Any], tensor_transport_metadata: Any, communicator_metadata: Any
    ) -> None:
        raise NotImplementedError("GISMO is one-sided: Ray never calls send on it")

    def garbage_collect(self, obj_id: str, tensor_transport_meta: Any, tensors: list[Any]) -> None:
        """The last ref is gone: delete what this transport placed (not create_array's objects)."""
        from . import ray as gray

        meta: GismoTransportMetadata = tensor_transport_meta
        self._delete(
            obj_id, [r for r, own in zip(meta.refs, meta.owned, strict=True) if own and r is not None]
        )
        # Counted once the deletes are done: a reader of the counter sees their effect too.
        gray._st().counters["transport_collected"] += 1

    @staticmethod
    def _delete(obj_id: str, refs: Sequence[Any]) -> None:
        from . import ray as gray

        if not refs:
            return
        client = gray._client()
        if client is None:
            # Tied to the connection that placed them: the agent deleted them when it closed.
            gray._st().counters["transport_free_failures"] += len(refs)
            log.warning("GISMO transport object %s: no agent to delete its %d arrays", obj_id, len(refs))
            return
        try:
            gray._st().counters["transport_freed"] += client.delete_many(refs)
        except GismoError as exc:
            gray._st().counters["transport_free_failures"] += len(refs)
            log.warning("GISMO transport object %s: delete failed: %s", obj_id, exc)

    def abort_transport(self, obj_id: str, communicator_metadata: Any) -> None:
        # Nothing in flight: a receive is a mapping plus a pin, done before it returns.
        return None


# ---- registration and guards -------------------------------------------------------------------


def register() -> None:
    """Register the GISMO transport in this process (idempotent). Ray sends the registration on to
    every actor created afterwards with ``enable_tensor_transport=True``."""
    from ray.experimental.rdt.util import register_tensor_transport, transport_manager_info

    if TRANSPORT not in transport_manager_info:
        register_tensor_transport(TRANSPORT, ["cpu"], GismoTransport, GismoArray)
    _install_guards()


def check_receiver(rdt_manager: Any, dst_actor: Any, task_args: Sequence[Any]) -> None:
    """Refuse to send a GISMO object to an actor that cannot receive it (it would hang until Ray's
    fetch timeout instead). Runs in ``.remote()``, before Ray queues the transfer."""
    import ray

    if getattr(dst_actor, "_ray_enable_tensor_transport", True):
        return
    for arg in task_args:
        if not isinstance(arg, ray.ObjectRef):
            continue
        meta = rdt_manager.get_rdt_metadata(arg.hex())
        if meta is not None and meta.tensor_transport_backend == TRANSPORT:
            raise ReceiverNotEnabled(
                f"GISMO transport object {arg.hex()} is passed to actor {dst_actor}, which was created "
                "without enable_tensor_transport=True: its receive would queue behind this very call. "
                "Create the actor with @ray.remote(enable_tensor_transport=True)"
            )


def _install_guards() -> None:
    """Wrap two RDTManager methods of Ray 2.60 (see the module docstring); skipped if they moved."""
    try:
        from ray.experimental.rdt.rdt_manager import RDTManager
    except ImportError:
        return
    cls: Any = RDTManager
    if getattr(cls, "_gismo_guarded", False):
        return
    queue = getattr(cls, "queue_or_trigger_out_of_band_tensor_transfer", None)
    abort = getattr(cls, "_abort_transport", None)
    if queue is None or abort is None:
        log.warning("Ray's RDTManager changed: the GISMO transport's guards are not installed")
        return

    def guarded_queue(self: Any, dst_actor: Any, task_args: Any) -> Any:
        check_receiver(self, dst_actor, task_args)
        return queue(self, dst_actor, task_args)

    def guarded_abort(self: Any, failed_ref: Any, ref_info_map: dict[str, Any], exception: Exception) -> Any:
        try:
            return abort(self, failed_ref, ref_info_map, exception)
        except ImportError as exc:
            # Ray imports its collective module (torch) before anything else here. Do the rest of
            # what it would for an abortable one-sided transport: forget the transfer, say why.
            info = ref_info_map.pop(failed_ref.hex(), None)
            if info is None:
                return None
            if info.send_ref is not None:
                ref_info_map.pop(info.send_ref.hex(), None)
            ref_info_map.pop(info.recv_ref.hex(), None)
            log.warning(
                "RDT transfer of object %s (%s) to %s failed: %s. Ray's abort path needs %s; a %s "
                "receive holds nothing to abort, so only the transfer's bookkeeping was dropped",
                info.obj_id, info.backend, info.dst_actor, exception, exc.name or exc, TRANSPORT,
            )  # fmt: skip
            return None

    cls.queue_or_trigger_out_of_band_tensor_transfer = guarded_queue
    cls._abort_transport = guarded_abort
    cls._gismo_guarded = True


register()
