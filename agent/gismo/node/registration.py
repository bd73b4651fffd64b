"""Registering a plugin with the kubelet (``v1beta1.Registration/Register`` on ``kubelet.sock``).

The kubelet answers once; it then dials the plugin's own socket (``endpoint``, a file name in its
plugin folder) and opens ListAndWatch. It forgets every plugin when it restarts and deletes the
sockets in its folder, so the service re-serves and registers again (see ``service.py``).
"""

from __future__ import annotations

from typing import Final

import grpc

from .proto import api_pb2 as pb
from .proto import api_pb2_grpc as pb_grpc

#: The device-plugin API version this plugin speaks (``v1beta1.Version``).
API_VERSION: Final = "v1beta1"
REGISTER_TIMEOUT_SECONDS: Final = 5.0


class RegistrationError(Exception):
    """The kubelet could not be reached or refused the registration (the message says which)."""


def register(
    kubelet_socket: str,
    endpoint: str,
    resource_name: str,
    options: pb.DevicePluginOptions,
    timeout: float = REGISTER_TIMEOUT_SECONDS,
) -> None:
    """Register ``resource_name`` served at ``endpoint`` with the kubelet at ``kubelet_socket``."""
    request = pb.RegisterRequest(
        version=API_VERSION, endpoint=endpoint, resource_name=resource_name, options=options
    )
    with grpc.insecure_channel(f"unix://{kubelet_socket}") as channel:
        try:
            pb_grpc.RegistrationStub(channel).Register(request, timeout=timeout, wait_for_ready=False)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            raise RegistrationError(
                f"Register {resource_name} with {kubelet_socket}: {code.name if code else 'error'}: {detail}"
            ) from exc
