"""Configuration from ``GISMO_*`` environment variables (names fixed in docs/CONTRACTS.md).

The operator's admission webhook writes the same variables into the Ray container and the agent
sidecar, so both sides read one source. Explicit keyword arguments override the environment; they
may be spelled ``slice_size`` or ``GISMO_SLICE_SIZE``.

Offsets: ``GISMO_SLICE_OFFSET`` is a byte offset in the device (or shm file). Regions of a slice all
have ``GISMO_REGION_SIZE`` bytes and region *i* starts ``i * region_size`` bytes into the slice.
``GISMO_REGION_OFFSET`` may be given either absolute (device) or slice-relative; both are accepted
when they agree with that geometry, anything else is a configuration error.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from typing import Any

from . import poolrules
from .contract import BACKENDS, COHERENCE_MODES, ENV_PREFIX, OPERATOR_ENV_PREFIX, SOCKET_PATH
from .errors import GismoError


class ConfigError(GismoError):
    """Missing or inconsistent GISMO_* settings."""


def parse_size(text: str) -> int:
    """Parse a byte count: plain integer or a Kubernetes-style quantity (``64Mi``, ``1Gi``, ``4G``)."""
    s = str(text).strip()
    units = {
        "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
        "K": 10**3, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    }  # fmt: skip
    for suffix in ("Ki", "Mi", "Gi", "Ti", "K", "k", "M", "G", "T"):
        if s.endswith(suffix):
            return int(s[: -len(suffix)]) * units[suffix]
    return int(s, 0)


@dataclasses.dataclass(frozen=True)
class Config:
    """Where the slice is and which region is ours. Cheap to build; validated once."""

    device: str = ""
    backend: str = "shm"
    pool: str = ""
    slice_offset: int = 0
    slice_size: int = 0
    region: int = -1
    region_size: int = 0
    region_offset: int = -1
    socket: str = SOCKET_PATH
    coherence: str = ""  # GISMO_COHERENCE: hardware | flush; empty: the backend's default (contract)
    # Agent tuning (not in CONTRACTS: agent-only, with safe defaults).
    slots: int = 0  # 0: derived from the region size
    pin_entries: int = 0  # 0: derived from the slot count
    metrics_port: int = 0  # 0: no HTTP endpoint
    grace_ms: float = 5.0  # delete → reclaim delay that lets in-flight pins become visible
    orphan_grace_s: float = 10.0  # how long a restarted agent keeps a half-written slot before freeing it
    format_wait_s: float = 30.0  # how long a new owner waits for readers of the old one before formatting
    # How long a restarted agent keeps an inherited pin lease whose holder it cannot identify (a
    # reader in another pid namespace) for that holder to reconnect and claim it back; a living
    # client retries every client.RECONNECT_PAUSE_S, so 10 s is ~40 tries. The bound after which a
    # reader killed while its agent was down stops holding space (README, security).
    lease_reclaim_s: float = 10.0
    owner: str = ""  # empty: the hostname (see identity)
    # Folders a file-backed pool may live under (GISMO_FILE_PREFIXES, comma separated; the webhook
    # sets it when the chart allows more than /dev/shm). The same rule as the operator's.
    file_prefixes: tuple[str, ...] = poolrules.DEFAULT_FILE_PREFIXES
    # Bounds of the agent socket (what any process reaching it can make the agent hold).
    max_connections: int = 512  # open client connections; past it, a not-yet-greeted one is dropped
    max_conn_buffer: int = (1 << 20) + 4  # bytes of one connection's unfinished request (one max frame)
    max_total_buffer: int = 64 << 20  # bytes buffered (requests in, replies out) over all connections
    hello_timeout_s: float = 10.0  # a connection that has not said HELLO by then is closed
    frame_timeout_s: float = 10.0  # a request left unfinished this long is not coming: close it

    @property
    def identity(self) -> str:
        """Who owns the region: GISMO_OWNER, else the pod's hostname (the pod name in Kubernetes).

        A restarted agent of the same pod recovers its region; a new pod handed the same region
        (different hostname) formats it instead of inheriting objects nobody will ever delete.
        """
        return (self.owner or os.environ.get("HOSTNAME") or socket.gethostname())[:64]

    @property
    def regions(self) -> int:
        """How many regions the slice holds."""
        return self.slice_size // self.region_size if self.region_size else 0

    def validate(self, need_region: bool = True) -> Config:
        """Check the geometry; returns self so calls chain. Raises ConfigError with the variable's name."""
        self._validate_bounds()
        if not self.device:
            raise ConfigError("GISMO_DEVICE is not set (path of the shm file or DAX device)")
        if self.backend not in BACKENDS:
            raise ConfigError(f"GISMO_BACKEND must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        if self.coherence and self.coherence not in COHERENCE_MODES:
            raise ConfigError(
                f"GISMO_COHERENCE must be one of {', '.join(COHERENCE_MODES)}, not {self.coherence!r}"
            )
        if self.slice_size <= 0:
            raise ConfigError("GISMO_SLICE_SIZE must be a positive byte count")
        align = poolrules.region_alignment(self.backend)
        if self.slice_offset < 0 or self.slice_offset % align:
            raise ConfigError(f"GISMO_SLICE_OFFSET must be a non-negative multiple of {align}")
        try:
            poolrules.normalize_prefixes(self.file_prefixes)
        except poolrules.PoolRuleError as exc:
            raise ConfigError(f"GISMO_FILE_PREFIXES: {exc}") from exc
        # The one pool rule (gismo.poolrules): the same refusal the webhook and the injection give.
        problems = poolrules.region_size_problems(self.region_size, self.backend)
        problems += poolrules.path_problems(self.backend, self.device, self.file_prefixes)
        if problems:
            raise ConfigError(poolrules.message(problems, poolrules.AGENT_FIELDS))
        if self.region_size > self.slice_size:
            raise ConfigError("GISMO_REGION_SIZE is larger than GISMO_SLICE_SIZE")
        if need_region:
            if not 0 <= self.region < self.regions:
                raise ConfigError(f"GISMO_REGION={self.region} is outside the slice's {self.regions} regions")
            rel = self.region * self.region_size
            if self.region_offset not in (-1, rel, self.slice_offset + rel):
                raise ConfigError(
                    f"GISMO_REGION_OFFSET={self.region_offset} disagrees with region {self.region} of size "
                    f"{self.region_size} in a slice at {self.slice_offset}"
                )
        return self

    def _validate_bounds(self) -> None:
        if not 1 <= self.max_connections <= 65536:
            raise ConfigError(f"GISMO_MAX_CONNECTIONS={self.max_connections} must be within 1..65536")
        if not 4096 <= self.max_conn_buffer <= 64 << 20:
            raise ConfigError(
                f"GISMO_MAX_CONN_BUFFER={self.max_conn_buffer} must be within 4096..{64 << 20} bytes"
            )
        if not self.max_conn_buffer <= self.max_total_buffer <= 16 << 30:
            raise ConfigError(
                f"GISMO_MAX_TOTAL_BUFFER={self.max_total_buffer} must be at least GISMO_MAX_CONN_BUFFER "
                f"({self.max_conn_buffer}) and at most {16 << 30} bytes"
            )
        for name in ("hello_timeout_s", "frame_timeout_s", "lease_reclaim_s"):
            value = getattr(self, name)
            if not 0 < value <= 3600:
                raise ConfigError(f"GISMO_{name.upper()}={value} must be within (0, 3600] seconds")


_INT_FIELDS = {
    "slice_offset", "slice_size", "region_size", "region_offset", "slots", "pin_entries",
    "max_conn_buffer", "max_total_buffer",
}  # fmt: skip
_FLOAT_FIELDS = {
    "grace_ms", "orphan_grace_s", "format_wait_s", "hello_timeout_s", "frame_timeout_s", "lease_reclaim_s",
}  # fmt: skip


def _norm(key: str) -> str:
    k = key.lower()
    prefix = ENV_PREFIX.lower()
    return k[len(prefix) :] if k.startswith(prefix) else k


def load(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Build a Config from ``environ`` (default ``os.environ``) then ``overrides`` (None values ignored)."""
    env = os.environ if environ is None else environ
    fields = {f.name: f for f in dataclasses.fields(Config)}
    values: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    for key, val in env.items():
        if key.startswith(ENV_PREFIX) and not key.startswith(OPERATOR_ENV_PREFIX):
            raw[_norm(key)] = val
    for key, val in (overrides or {}).items():
        if val is not None:
            raw[_norm(key)] = val
    for name, val in raw.items():
        if name not in fields or val == "":
            continue
        try:
            if name in _INT_FIELDS:
                values[name] = parse_size(val) if isinstance(val, str) else int(val)
            elif name in ("region", "metrics_port", "max_connections"):
                values[name] = int(val)
            elif name in _FLOAT_FIELDS:
                values[name] = float(val)
            elif name == "file_prefixes":
                items = val.split(",") if isinstance(val, str) else list(val)
                values[name] = poolrules.normalize_prefixes(str(p).strip() for p in items if str(p).strip())
            else:
                values[name] = str(val)
        except poolrules.PoolRuleError as exc:
            raise ConfigError(f"GISMO_{name.upper()}: {exc}") from exc
        except ValueError as exc:
            raise ConfigError(f"GISMO_{name.upper()}={val!r} is not a valid value") from exc
    return Config(**values)
