"""The reading side of bench/peers.py: one process per "node" that gets objects and reads them.

Why a separate process: a get from the writer's own process can hit caches that a task on
another process (or node) never sees, so every get here runs in another OS process than the put,
as a Ray task or a pod would. The same timing code (`timed_read`) runs for every store:

    t0 -> get(handle) -> t1 -> touch_pages(array) -> t2     "get" = t1 - t0, "get+read" = t2 - t0

Gismo and Vineyard readers are plain processes (`ReaderProcess`: "spawn", a pipe for commands);
Ray readers are actors pinned to a node (`ray_reader_class`), because a Ray get needs a worker.
A reader can `hold` what it read (for the memory measurement) until `release`.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

PAGE = 4096

Release = Callable[[], None]


def touch_pages(a: np.ndarray) -> int:
    """Read one byte of every 4 KiB page; returns their sum (as gismo.testing.workloads does)."""
    return int(a.reshape(-1).view(np.uint8)[::PAGE].sum(dtype=np.int64))


def timed_read(
    get: Callable[[Any], tuple[np.ndarray, Release]], handle: Any, hold: bool, held: list[Any]
) -> tuple[float, float, int]:
    """(get seconds, get+read seconds, page checksum) of one object; keeps it in `held` if `hold`."""
    t0 = time.perf_counter()
    arr, release = get(handle)
    t1 = time.perf_counter()
    checksum = touch_pages(arr)
    t2 = time.perf_counter()
    if hold:
        held.append((arr, release))
    else:
        del arr
        release()
    return t1 - t0, t2 - t0, checksum


def _nothing() -> None:
    return None


class GismoStore:
    """Gets through this node's agent (`socket`): any region's object, read in place."""

    def __init__(self, socket: str) -> None:
        import gismo

        self.client = gismo.connect(socket_path=socket)

    def get(self, ref: Any) -> tuple[np.ndarray, Release]:
        return self.client.get(ref), _nothing  # the pin goes with the view

    def close(self) -> None:
        self.client.close()


class VineyardStore:
    """Gets through this instance's IPC socket. `fetch=True` handles (another instance's object)
    are migrated here first, and the migrated copy (a new object id) is deleted on release."""

    def __init__(self, socket: str) -> None:
        import vineyard

        self.vineyard = vineyard
        self.client = vineyard.connect(socket)

    def get(self, handle: tuple[int, bool]) -> tuple[np.ndarray, Release]:
        oid, fetch = self.vineyard.ObjectID(handle[0]), handle[1]
        if not fetch:
            return self.client.get(oid), _nothing
        obj = self.client.get_object(oid, fetch=True)  # the migration (a copy over TCP)
        local = obj.id
        arr = self.client.get(local)

        def release() -> None:
            if local != oid:
                self.client.delete(local)

        return arr, release

    def close(self) -> None:
        self.client.close()


STORES: dict[str, Callable[[str], Any]] = {"gismo": GismoStore, "vineyard": VineyardStore}


def _serve(conn: Any, kind: str, socket: str) -> None:
    store = STORES[kind](socket)
    held: list[Any] = []
    conn.send(("ready", os.getpid()))
    try:
        while True:
            msg = conn.recv()
            if msg[0] == "read":
                try:
                    conn.send(("ok", timed_read(store.get, msg[1], msg[2], held)))
                except Exception as exc:  # reported to the driver, which fails the run
                    conn.send(("error", repr(exc)))
            elif msg[0] == "release":
                _release(held)
                conn.send(("ok", None))
            else:
                break
    finally:
        _release(held)
        store.close()


def _release(held: list[Any]) -> None:
    while held:
        _arr, release = held.pop()
        del _arr
        release()


class ReaderProcess:
    """A reader in its own process, connected to one store endpoint (`kind`: gismo or vineyard)."""

    def __init__(self, kind: str, socket: str, start_timeout: float = 60.0) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, kind, socket), daemon=True)
        self.proc.start()
        child.close()
        if not self.conn.poll(start_timeout):
            self.close()
            raise RuntimeError(f"{kind} reader on {socket} did not start in {start_timeout:.0f} s")
        self.pid = self._reply()

    def _reply(self) -> Any:
        status, value = self.conn.recv()
        if status == "error":
            raise RuntimeError(f"reader {self.proc.pid}: {value}")
        return value

    def read(self, handle: Any, hold: bool = False) -> tuple[float, float, int]:
        self.conn.send(("read", handle, hold))
        result: tuple[float, float, int] = self._reply()
        return result

    def release(self) -> None:
        self.conn.send(("release",))
        self._reply()

    def close(self) -> None:
        """Stop the process (politely, then by force). Idempotent."""
        if self.proc.is_alive():
            with contextlib.suppress(OSError):
                self.conn.send(("stop",))
            self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.conn.close()


class RayReader:
    """The same reader as a Ray actor body (wrapped by `ray_reader_class`)."""

    def __init__(self) -> None:
        self.held: list[Any] = []

    def read(self, box: list[Any], hold: bool = False) -> tuple[float, float, int]:
        import ray

        # The ref comes inside a list so that Ray does not resolve it before the call starts.
        return timed_read(lambda ref: (ray.get(ref), _nothing), box[0], hold, self.held)

    def release(self) -> None:
        _release(self.held)

    def pid(self) -> int:
        return os.getpid()


def ray_reader_class() -> Any:
    """`RayReader` as a Ray actor class (made on demand: importing this module needs no Ray)."""
    import ray

    return ray.remote(num_cpus=0)(RayReader)
