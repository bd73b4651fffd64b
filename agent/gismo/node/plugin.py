"""The kubelet's ``v1beta1.DevicePlugin`` service for one pool: resource ``gismo.io/<pool>``.

A pool is advertised as ``shares`` interchangeable devices (``<pool>-0`` ...): each is a scheduling
token, one per container that asks for ``gismo.io/<pool>: 1``; every share grants the same whole
pool (the region inside it is the operator's business, not the kubelet's). What ``Allocate`` hands
the container:
- ``devdax``: a DeviceSpec (host path = container path, permissions ``rw``), so the runtime creates
  the device node in the container and the device cgroup lets an unprivileged process open it;
- ``shm``/``famfs``: a Mount of the pool file at the same path, read-write.
Same paths inside and out, so the ``GISMO_DEVICE`` the webhook writes is valid in the container.

Health: all shares are Healthy while the pool is present on the node (``discovery.probe``) and all
Unhealthy when it is not; each change is streamed to every open ListAndWatch, so the kubelet stops
scheduling new pods that need the pool onto this node.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import grpc

from .config import PoolSpec
from .discovery import Presence
from .proto import api_pb2 as pb
from .proto import api_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"
#: How often an idle ListAndWatch stream checks that its client is still there.
STREAM_CHECK_SECONDS = 1.0


class PoolHealth:
    """The pool's current presence, with a version that wakes ListAndWatch streams on change."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._presence = Presence(False, "not probed yet")
        self._version = 0
        self._closed = False

    def set(self, presence: Presence) -> bool:
        """Record a probe; True (and wake the streams) when health changed."""
        with self._cond:
            if presence.healthy == self._presence.healthy:
                self._presence = presence
                return False
            self._presence = presence
            self._version += 1
            self._cond.notify_all()
            return True

    def get(self) -> tuple[int, Presence]:
        with self._cond:
            return self._version, self._presence

    def wait_change(self, seen: int, timeout: float) -> tuple[int, Presence] | None:
        """The new (version, presence) once it differs from ``seen``; None on timeout or close."""
        with self._cond:
            self._cond.wait_for(lambda: self._version != seen or self._closed, timeout)
            if self._closed or self._version == seen:
                return None
            return self._version, self._presence

    def close(self) -> None:
        """End every stream (the plugin is stopping)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed


class PoolDevicePlugin(pb_grpc.DevicePluginServicer):
    """``DevicePlugin`` for one pool."""

    def __init__(self, pool: PoolSpec, health: PoolHealth) -> None:
        self.pool = pool
        self.health = health
        self._ids = pool.device_ids()
        self._known = frozenset(self._ids)

    @staticmethod
    def options() -> pb.DevicePluginOptions:
        """No PreStartContainer needed; GetPreferredAllocation is served (it keeps shares in order)."""
        return pb.DevicePluginOptions(pre_start_required=False, get_preferred_allocation_available=True)

    def GetDevicePluginOptions(
        self, request: pb.Empty, context: grpc.ServicerContext
    ) -> pb.DevicePluginOptions:
        return self.options()

    def _devices(self, presence: Presence) -> pb.ListAndWatchResponse:
        state = HEALTHY if presence.healthy else UNHEALTHY
        return pb.ListAndWatchResponse(devices=[pb.Device(ID=i, health=state) for i in self._ids])

    def ListAndWatch(
        self, request: pb.Empty, context: grpc.ServicerContext
    ) -> Iterator[pb.ListAndWatchResponse]:
        version, presence = self.health.get()
        yield self._devices(presence)
        while context.is_active() and not self.health.closed:
            change = self.health.wait_change(version, STREAM_CHECK_SECONDS)
            if change is None:
                continue
            version, presence = change
            state = HEALTHY if presence.healthy else UNHEALTHY
            log.info("pool %s: shares now %s (%s)", self.pool.name, state, presence.reason or "present")
            yield self._devices(presence)

    def GetPreferredAllocation(
        self, request: pb.PreferredAllocationRequest, context: grpc.ServicerContext
    ) -> pb.PreferredAllocationResponse:
        # Shares are interchangeable: the must-include ones, then the lowest available, as many as asked.
        answers = []
        for req in request.container_requests:
            chosen = list(dict.fromkeys(req.must_include_deviceIDs))
            for device_id in req.available_deviceIDs:
                if len(chosen) >= req.allocation_size:
                    break
                if device_id not in chosen:
                    chosen.append(device_id)
            answers.append(
                pb.ContainerPreferredAllocationResponse(deviceIDs=chosen[: max(req.allocation_size, 0)])
            )
        return pb.PreferredAllocationResponse(container_responses=answers)

    def Allocate(self, request: pb.AllocateRequest, context: grpc.ServicerContext) -> pb.AllocateResponse:
        answers = []
        for i, req in enumerate(request.container_requests):
            unknown = [d for d in req.devices_ids if d not in self._known]
            if unknown or not req.devices_ids:
                what = f"unknown share {unknown[0]!r}" if unknown else "no share"
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"container_requests[{i}]: {what} of {self.pool.resource}",
                )
            answers.append(self.container_response())
        _, presence = self.health.get()
        if not presence.healthy:
            # The kubelet allocates only healthy shares, but the pool may have vanished since: the
            # container would fail to start on a missing path, so say why here instead.
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{self.pool.resource}: {presence.reason}")
        return pb.AllocateResponse(container_responses=answers)

    def container_response(self) -> pb.ContainerAllocateResponse:
        """What one container gets: the device, or a mount of the pool file, at the same path."""
        path = self.pool.path
        if self.pool.is_device:
            return pb.ContainerAllocateResponse(
                devices=[pb.DeviceSpec(container_path=path, host_path=path, permissions="rw")]
            )
        return pb.ContainerAllocateResponse(
            mounts=[pb.Mount(container_path=path, host_path=path, read_only=False)]
        )

    def PreStartContainer(
        self, request: pb.PreStartContainerRequest, context: grpc.ServicerContext
    ) -> pb.PreStartContainerResponse:
        # Not required (options say so); answered anyway, as the API asks of every plugin.
        return pb.PreStartContainerResponse()
