"""A fake kubelet for the node component's tests: what the real one does with a device plugin.

- serves ``v1beta1.Registration`` on ``<dir>/kubelet.sock`` and records every RegisterRequest;
- like the kubelet after a Register, dials the plugin's endpoint and keeps a ListAndWatch stream open,
  recording every device list it receives;
- ``restart()`` does what a kubelet restart does to the folder: stop serving, delete every socket in
  it (the kubelet clears its plugin folder on start), serve ``kubelet.sock`` anew.

Unix sockets in a short temporary folder only (sun_path holds 107 bytes): no network.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc

from gismo.node.proto import api_pb2 as pb
from gismo.node.proto import api_pb2_grpc as pb_grpc

WAIT_SECONDS = 30.0  # a bound on waiting for the plugin, not a performance claim


class PluginStream:
    """One ListAndWatch stream the fake kubelet holds open to a plugin."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.stub = pb_grpc.DevicePluginStub(channel)
        self.updates: queue.Queue[list[tuple[str, str]]] = queue.Queue()
        self.ended = threading.Event()
        self._call: Iterator[pb.ListAndWatchResponse] | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            call = self.stub.ListAndWatch(pb.Empty())
            self._call = call
            for response in call:
                self.updates.put([(d.ID, d.health) for d in response.devices])
        except grpc.RpcError:
            pass
        finally:
            self.ended.set()

    def next_update(self, timeout: float = WAIT_SECONDS) -> list[tuple[str, str]]:
        try:
            return self.updates.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no ListAndWatch update from the plugin") from None

    def cancel(self) -> None:
        call = self._call
        if isinstance(call, grpc.Future):
            call.cancel()


class _Registration(pb_grpc.RegistrationServicer):
    def __init__(self, kubelet: FakeKubelet) -> None:
        self.kubelet = kubelet

    def Register(self, request: pb.RegisterRequest, context: grpc.ServicerContext) -> pb.Empty:
        self.kubelet.registrations.put(request)
        if self.kubelet.refuse:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, self.kubelet.refuse)
        return pb.Empty()


class FakeKubelet:
    def __init__(self, plugin_dir: str) -> None:
        self.plugin_dir = plugin_dir
        self.socket = os.path.join(plugin_dir, "kubelet.sock")
        self.registrations: queue.Queue[pb.RegisterRequest] = queue.Queue()
        self.refuse = ""  # non-empty: Register fails with this message
        self._server: grpc.Server | None = None
        self._channels: list[grpc.Channel] = []
        self.streams: list[PluginStream] = []

    def start(self) -> None:
        server = grpc.server(ThreadPoolExecutor(max_workers=2))
        pb_grpc.add_RegistrationServicer_to_server(_Registration(self), server)
        server.add_insecure_port(f"unix://{self.socket}")
        server.start()
        self._server = server

    def stop(self) -> None:
        for stream in self.streams:
            stream.cancel()
        for channel in self._channels:
            channel.close()
        self._channels.clear()
        self.streams.clear()
        if self._server is not None:
            self._server.stop(grace=None)
            self._server = None

    def restart(self) -> None:
        """Stop, clear the plugin folder of sockets, serve again (a kubelet restart, as plugins see it)."""
        self.stop()
        for name in os.listdir(self.plugin_dir):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.plugin_dir, name))
        self.start()

    def next_registration(self, timeout: float = WAIT_SECONDS) -> pb.RegisterRequest:
        try:
            return self.registrations.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("the plugin never registered with the fake kubelet") from None

    def plugin(self, endpoint: str) -> pb_grpc.DevicePluginStub:
        """A client of the plugin at ``endpoint`` (a socket name in the plugin folder, as registered)."""
        channel = grpc.insecure_channel(f"unix://{os.path.join(self.plugin_dir, endpoint)}")
        self._channels.append(channel)
        return pb_grpc.DevicePluginStub(channel)

    def watch(self, endpoint: str) -> PluginStream:
        """Open a ListAndWatch stream to the plugin, as the kubelet does after Register."""
        channel = grpc.insecure_channel(f"unix://{os.path.join(self.plugin_dir, endpoint)}")
        self._channels.append(channel)
        stream = PluginStream(channel)
        self.streams.append(stream)
        return stream
