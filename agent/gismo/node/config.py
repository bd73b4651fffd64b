"""What ``gismo node`` serves on this node: its JSON config file, validated once, here.

The chart renders the file from its values (one entry per pool, the same ``capacity`` / ``backend``
fields as a GismoPool spec) into a ConfigMap; ``GISMO_NODE_CONFIG`` or ``--config`` names it::

    {"pools": [{"name": "pool0", "capacity": "64Gi", "shares": 128,
                "backend": {"type": "shm", "path": "/dev/shm/gismo/pool0"}}],
     "pluginDir": "/var/lib/kubelet/device-plugins", "pollSeconds": 2,
     "fileRoots": ["/dev/shm"], "deviceRoots": ["/dev"], "hostRoot": "/host"}

Paths are the node's (the host's): that is what ``Allocate`` hands the kubelet. ``hostRoot`` says where
this process sees the host's filesystem when it runs in a container (the chart mounts the pool folders
and ``/dev`` under ``/host``); empty means it runs on the host itself.

Every refusal names the field and the rule (``pools[0].backend.path: must be absolute``). Unknown
keys are errors: a typo must not silently turn a setting off.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from ..config import parse_size
from ..contract import AGENT_GID, AGENT_UID, BACKEND_DEVDAX, BACKEND_SHM, PAGE, RESOURCE_PREFIX

#: Where the kubelet looks for device plugins (``v1beta1.DevicePluginPath``).
KUBELET_PLUGIN_DIR: Final = "/var/lib/kubelet/device-plugins"
#: The kubelet's Registration socket, in that folder (``v1beta1.KubeletSocket``).
KUBELET_SOCKET_NAME: Final = "kubelet.sock"
#: A file on the Linux shared-memory file system for CXL (served, never created by Gismo).
BACKEND_FAMFS: Final = "famfs"
FILE_BACKENDS: Final = (BACKEND_SHM, BACKEND_FAMFS)
DEVICE_BACKENDS: Final = (BACKEND_DEVDAX,)
ENV_NODE_CONFIG: Final = "GISMO_NODE_CONFIG"

DEFAULT_SHARES: Final = 128
#: Each share is one entry of every ListAndWatch answer: bounded so an answer stays small.
MAX_SHARES: Final = 4096
DEFAULT_POLL_SECONDS: Final = 2.0
DEFAULT_FILE_ROOTS: Final = ("/dev/shm",)
DEFAULT_DEVICE_ROOTS: Final = ("/dev",)
#: A unix socket path holds at most 107 bytes (sun_path) on Linux.
MAX_SOCKET_PATH: Final = 107

# The part after "gismo.io/" of an extended resource name is a qualified name of at most 63
# characters; pool names are Kubernetes object names (DNS subdomains). Both accept these.
_POOL_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$")
_DAX_NAME = re.compile(r"^dax[0-9]+\.[0-9]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class NodeConfigError(ValueError):
    """The node config is missing or invalid; the message names the field and the rule."""


@dataclasses.dataclass(frozen=True)
class PoolSpec:
    """One pool as this node serves it."""

    name: str
    backend: str
    path: str
    #: Bytes of pool data; required for shm (the file is created with it), optional otherwise (0).
    capacity: int
    shares: int

    @property
    def resource(self) -> str:
        return RESOURCE_PREFIX + self.name

    @property
    def is_device(self) -> bool:
        return self.backend in DEVICE_BACKENDS

    @property
    def socket_name(self) -> str:
        """The plugin's socket, a file name in the kubelet's plugin folder (the Register endpoint)."""
        return f"gismo-{self.name}.sock"

    def device_ids(self) -> list[str]:
        """The share ids advertised to the kubelet: ``<pool>-<i>``."""
        return [f"{self.name}-{i}" for i in range(self.shares)]


@dataclasses.dataclass(frozen=True)
class NodeConfig:
    pools: tuple[PoolSpec, ...]
    plugin_dir: str = KUBELET_PLUGIN_DIR
    poll_seconds: float = DEFAULT_POLL_SECONDS
    #: Owner of the pool files this node creates: the agent's uid/gid (None: leave the creator's).
    file_uid: int | None = AGENT_UID
    file_gid: int | None = AGENT_GID
    file_mode: int = 0o660
    host_root: str = ""

    def local(self, host_path: str) -> str:
        """Where this process finds ``host_path`` of the node."""
        return self.host_root + host_path if self.host_root else host_path

    @property
    def kubelet_socket(self) -> str:
        return os.path.join(self.plugin_dir, KUBELET_SOCKET_NAME)


_POOL_KEYS = {"name", "backend", "capacity", "shares"}
_BACKEND_KEYS = {"type", "path"}
_TOP_KEYS = {
    "pools", "pluginDir", "pollSeconds", "fileRoots", "deviceRoots", "fileOwner", "fileMode", "hostRoot",
}  # fmt: skip


def _unknown(where: str, got: Mapping[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(got) - allowed)
    if extra:
        prefix = f"{where}." if where else ""
        raise NodeConfigError(f"{prefix}{extra[0]}: unknown field (allowed: {', '.join(sorted(allowed))})")


def _object(where: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise NodeConfigError(f"{where}: must be an object")
    return value


def _clean_path(where: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise NodeConfigError(f"{where}: must be a non-empty string")
    if _CONTROL.search(value):
        raise NodeConfigError(f"{where}: must not contain control characters")
    if not value.startswith("/"):
        raise NodeConfigError(f"{where}: must be absolute")
    if os.path.normpath(value) != value or value.startswith("//"):
        raise NodeConfigError(f"{where}: must be normalized (no '..', '.', '//' or trailing '/')")
    return value


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path.startswith(root.rstrip("/") + "/") for root in roots)


def _roots(where: str, value: Any, default: Sequence[str]) -> tuple[str, ...]:
    if value is None:
        return tuple(default)
    if not isinstance(value, list) or not value:
        raise NodeConfigError(f"{where}: must be a non-empty list of absolute folders")
    return tuple(_clean_path(f"{where}[{i}]", v) for i, v in enumerate(value))


def _pool(
    where: str, raw: Any, file_roots: Sequence[str], device_roots: Sequence[str], plugin_dir: str
) -> PoolSpec:
    body = _object(where, raw)
    _unknown(where, body, _POOL_KEYS)
    name = body.get("name")
    if not isinstance(name, str) or not _POOL_NAME.match(name):
        raise NodeConfigError(
            f"{where}.name: {name!r} must be a pool name of at most 63 characters (lower-case letters, "
            "digits, '-' and '.'; it becomes the resource name gismo.io/<name>)"
        )
    backend = _object(f"{where}.backend", body.get("backend"))
    _unknown(f"{where}.backend", backend, _BACKEND_KEYS)
    kind = backend.get("type")
    if kind not in FILE_BACKENDS + DEVICE_BACKENDS:
        allowed = ", ".join(FILE_BACKENDS + DEVICE_BACKENDS)
        raise NodeConfigError(f"{where}.backend.type: {kind!r} is not one of {allowed}")
    path = _clean_path(f"{where}.backend.path", backend.get("path"))
    if kind in DEVICE_BACKENDS:
        # Directly in a device folder (/dev/dax0.0), never deeper: /dev/shm/dax0.0 is a file, not a device.
        in_root = os.path.dirname(path) in {r.rstrip("/") or "/" for r in device_roots}
        if not in_root or not _DAX_NAME.match(os.path.basename(path)):
            raise NodeConfigError(
                f"{where}.backend.path: {path} must be a DAX device daxN.M in {', '.join(device_roots)}"
            )
    elif not _under(path, file_roots):
        raise NodeConfigError(f"{where}.backend.path: {path} must be under {', '.join(file_roots)}")
    capacity = _capacity(f"{where}.capacity", body.get("capacity"), required=kind == BACKEND_SHM)
    shares = body.get("shares", DEFAULT_SHARES)
    if isinstance(shares, bool) or not isinstance(shares, int) or not 1 <= shares <= MAX_SHARES:
        raise NodeConfigError(f"{where}.shares: {shares!r} must be an integer from 1 to {MAX_SHARES}")
    spec = PoolSpec(name=name, backend=str(kind), path=path, capacity=capacity, shares=shares)
    sock = os.path.join(plugin_dir, spec.socket_name)
    if len(sock.encode()) > MAX_SOCKET_PATH:
        raise NodeConfigError(f"{where}.name: the socket path {sock} is longer than {MAX_SOCKET_PATH} bytes")
    return spec


def _capacity(where: str, value: Any, required: bool) -> int:
    if value is None:
        if required:
            raise NodeConfigError(f"{where}: required for shm pools (the pool file is created with it)")
        return 0
    try:
        if isinstance(value, bool):
            raise ValueError
        capacity = value if isinstance(value, int) else parse_size(str(value))
    except ValueError:
        raise NodeConfigError(f"{where}: {value!r} is not a byte count or quantity (64Gi)") from None
    if capacity <= 0 or capacity % PAGE:
        raise NodeConfigError(f"{where}: {capacity} must be a positive multiple of {PAGE}")
    return capacity


def parse_config(raw: Any) -> NodeConfig:
    """Validate a decoded config document."""
    body = _object("config", raw)
    _unknown("", body, _TOP_KEYS)
    plugin_dir = _clean_path("pluginDir", body.get("pluginDir", KUBELET_PLUGIN_DIR))
    poll = body.get("pollSeconds", DEFAULT_POLL_SECONDS)
    if isinstance(poll, bool) or not isinstance(poll, int | float) or not 0.01 <= poll <= 60:
        raise NodeConfigError(f"pollSeconds: {poll!r} must be a number from 0.01 to 60")
    file_roots = _roots("fileRoots", body.get("fileRoots"), DEFAULT_FILE_ROOTS)
    device_roots = _roots("deviceRoots", body.get("deviceRoots"), DEFAULT_DEVICE_ROOTS)
    pools_raw = body.get("pools")
    if not isinstance(pools_raw, list) or not pools_raw:
        raise NodeConfigError("pools: must be a non-empty list")
    pools = tuple(
        _pool(f"pools[{i}]", p, file_roots, device_roots, plugin_dir) for i, p in enumerate(pools_raw)
    )
    for field, values in (("name", [p.name for p in pools]), ("backend.path", [p.path for p in pools])):
        for i, value in enumerate(values):
            if value in values[:i]:
                raise NodeConfigError(f"pools[{i}].{field}: {value} appears twice")
    uid, gid = _owner(body.get("fileOwner"))
    mode = body.get("fileMode", 0o660)
    if isinstance(mode, bool) or not isinstance(mode, int) or mode & ~0o660 or (mode & 0o600) != 0o600:
        raise NodeConfigError(f"fileMode: {mode!r} must grant the owner rw and nothing beyond 0o660")
    host_root = body.get("hostRoot", "")
    if host_root != "":
        host_root = _clean_path("hostRoot", host_root)
    return NodeConfig(pools, plugin_dir, float(poll), uid, gid, mode, host_root)


def _owner(value: Any) -> tuple[int | None, int | None]:
    if value is None:
        return AGENT_UID, AGENT_GID
    if value == "keep":
        return None, None
    body = _object("fileOwner", value)
    _unknown("fileOwner", body, {"uid", "gid"})
    out = []
    for key in ("uid", "gid"):
        v = body.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**31:
            raise NodeConfigError(f"fileOwner.{key}: {v!r} must be an integer id")
        out.append(v)
    return out[0], out[1]


def load_config(path: str | None = None, environ: Mapping[str, str] | None = None) -> NodeConfig:
    """Read and validate the config file named by ``path`` or ``GISMO_NODE_CONFIG``."""
    env = os.environ if environ is None else environ
    where = path or env.get(ENV_NODE_CONFIG, "")
    if not where:
        raise NodeConfigError(f"no config: pass --config or set {ENV_NODE_CONFIG}")
    try:
        with open(where, encoding="utf-8") as fh:
            raw = json.load(fh)
    except OSError as exc:
        raise NodeConfigError(f"{where}: cannot read it ({exc.strerror})") from exc
    except json.JSONDecodeError as exc:
        raise NodeConfigError(f"{where}: not JSON ({exc})") from exc
    return parse_config(raw)
