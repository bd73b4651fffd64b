"""``gismo node``: prepare the shm pool files, serve one device plugin per pool, keep them registered.

One poll loop (``pollSeconds``) does everything that changes: probe each pool (health changes are
streamed to the kubelet), notice a kubelet restart and register again. A kubelet that restarts
deletes every socket in its plugin folder and recreates ``kubelet.sock``; either sign makes the
plugin serve on a fresh socket and register anew, so no restart of the node component is needed.

Bounded: one gRPC server per pool with a fixed thread pool and a cap on concurrent calls (the
kubelet holds one ListAndWatch stream per plugin and calls Allocate once per container start).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Final

import grpc

from .config import NodeConfig, PoolSpec
from .discovery import Presence, probe
from .plugin import PoolDevicePlugin, PoolHealth
from .poolfiles import prepare_all
from .proto import api_pb2_grpc as pb_grpc
from .registration import RegistrationError, register

log = logging.getLogger(__name__)

WORKERS_PER_POOL: Final = 4
MAX_CONCURRENT_RPCS: Final = 8


class SocketPathTaken(Exception):
    """Something that is not a socket sits where the plugin's socket goes; it is left alone."""


@dataclasses.dataclass(frozen=True)
class _FileId:
    ino: int
    ctime_ns: int


def _file_id(path: str) -> _FileId | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return _FileId(st.st_ino, st.st_ctime_ns)


class PoolEndpoint:
    """One pool's plugin: its gRPC server on ``<pluginDir>/gismo-<pool>.sock`` and its registration."""

    def __init__(self, pool: PoolSpec, config: NodeConfig) -> None:
        self.pool = pool
        self.config = config
        self.health = PoolHealth()
        self.servicer = PoolDevicePlugin(pool, self.health)
        self.socket_path = os.path.join(config.plugin_dir, pool.socket_name)
        self._server: grpc.Server | None = None
        self._socket: _FileId | None = None
        #: The kubelet socket we last registered with (None: not registered since the last serve).
        self.registered_with: _FileId | None = None
        self.registrations = 0
        self._last_error = ""

    def serving(self) -> bool:
        """True while our socket is the one we bound (the kubelet deletes it when it restarts)."""
        return (
            self._server is not None
            and self._socket is not None
            and _file_id(self.socket_path) == self._socket
        )

    def serve(self) -> None:
        """(Re)start the gRPC server on a fresh socket."""
        self._stop_server()
        try:
            st = os.lstat(self.socket_path)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise SocketPathTaken(f"{self.socket_path}: exists and is not a socket; not removing it")
            os.unlink(self.socket_path)  # a stale socket of ours (a previous run)
        server = grpc.server(
            ThreadPoolExecutor(
                max_workers=WORKERS_PER_POOL, thread_name_prefix=f"gismo-node-{self.pool.name}"
            ),
            maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS,
        )
        pb_grpc.add_DevicePluginServicer_to_server(self.servicer, server)
        server.add_insecure_port(f"unix://{self.socket_path}")
        server.start()
        self._server = server
        self._socket = _file_id(self.socket_path)
        self.registered_with = None
        log.info("pool %s: serving %s on %s", self.pool.name, self.pool.resource, self.socket_path)

    def register(self, kubelet: _FileId) -> bool:
        """Register with the kubelet whose socket is ``kubelet``; False (logged once) on failure."""
        try:
            register(
                self.config.kubelet_socket, self.pool.socket_name, self.pool.resource, self.servicer.options()
            )
        except RegistrationError as exc:
            if str(exc) != self._last_error:
                log.warning(
                    "pool %s: %s (retrying every %.1fs)", self.pool.name, exc, self.config.poll_seconds
                )
                self._last_error = str(exc)
            return False
        self._last_error = ""
        self.registered_with = kubelet
        self.registrations += 1
        log.info("pool %s: registered %s with the kubelet", self.pool.name, self.pool.resource)
        return True

    def _stop_server(self) -> None:
        if self._server is not None:
            # Cancels open ListAndWatch streams; their handlers notice within STREAM_CHECK_SECONDS.
            self._server.stop(grace=None)
            self._server = None

    def close(self) -> None:
        self.health.close()
        self._stop_server()
        if self._socket is not None and _file_id(self.socket_path) == self._socket:
            os.unlink(self.socket_path)
        self._socket = None


class NodeService:
    """Every configured pool's endpoint, and the loop that keeps them healthy and registered."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.endpoints = [PoolEndpoint(pool, config) for pool in config.pools]
        self.prepared: dict[str, str] = {}
        self._reasons: dict[str, str] = {}
        #: Polls done so far (lets callers wait for "a few more rounds" without guessing at time).
        self.polls = 0

    def start(self) -> None:
        """Prepare the shm pool files, then probe and serve every pool."""
        self.prepared = prepare_all(self.config)
        self.step()

    def probe_all(self) -> None:
        for ep in self.endpoints:
            presence: Presence = probe(ep.pool, self.config.host_root)
            ep.health.set(presence)
            reason = "" if presence.healthy else presence.reason
            if self._reasons.get(ep.pool.name) != reason:
                if presence.healthy:
                    log.info("pool %s: present at %s", ep.pool.name, ep.pool.path)
                else:
                    log.warning("pool %s: not usable on this node: %s", ep.pool.name, reason)
                self._reasons[ep.pool.name] = reason

    def step(self) -> None:
        """One poll: probe, re-serve lost sockets, register where the kubelet does not know us."""
        self.probe_all()
        kubelet = _file_id(self.config.kubelet_socket)
        for ep in self.endpoints:
            if not ep.serving():
                try:
                    ep.serve()
                except (OSError, RuntimeError, SocketPathTaken) as exc:
                    log.error("pool %s: cannot serve on %s: %s", ep.pool.name, ep.socket_path, exc)
                    continue
            if kubelet is not None and ep.registered_with != kubelet:
                ep.register(kubelet)
        self.polls += 1

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set, then close every socket."""
        try:
            self.start()
            while not stop.wait(self.config.poll_seconds):
                self.step()
        finally:
            self.close()

    def close(self) -> None:
        for ep in self.endpoints:
            ep.close()
