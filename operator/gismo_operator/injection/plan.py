"""What an injection needs to know, and the names it writes (one place, so nothing drifts).

Why a plain frozen dataclass instead of the GismoPool/GismoSlice models: the patch builders are pure
functions of a pod and this plan, so they can be unit-tested without an operator, an API or a
model; the webhook assembles the plan from the models once per admission. Cost: nothing beyond
the object itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gismo import poolrules
from gismo.contract import (
    ANN_POOL,
    ANN_REGION,
    ANN_REGION_OFFSET,
    ANN_REGION_SIZE,
    ANN_RESERVATION,
    BACKEND_DEVDAX,
    BACKEND_FAMFS,
    BACKEND_SHM,
    COHERENCE_MODES,
    DEFAULT_COHERENCE,
    ENV_BACKEND,
    ENV_COHERENCE,
    ENV_DEVICE,
    ENV_FILE_PREFIXES,
    ENV_POOL,
    ENV_REGION,
    ENV_REGION_OFFSET,
    ENV_REGION_SIZE,
    ENV_SLICE_OFFSET,
    ENV_SLICE_SIZE,
    ENV_SOCKET,
    RESOURCE_PREFIX,
    SOCKET_PATH,
)
from gismo_operator.core.models import ACCESS_DEVICE_PLUGIN, ACCESS_HOST_PATH

# The names the injected objects carry live in gismo.contract (shared with the agent) and
# gismo_operator.constants (the operator's own); none is defined here.

BackendType = Literal["shm", "devdax", "famfs"]
ACCESS_MODES = (ACCESS_DEVICE_PLUGIN, ACCESS_HOST_PATH)
#: The name part of an extended resource (after "gismo.io/"): a qualified name, at most 63 characters.
_RESOURCE_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")

#: hostPath type per backend: a CXL devdax device is a character device; emulation is a plain file.
#: A famfs pool is a file too (on the node's famfs mount), never created by Gismo.
HOSTPATH_TYPES: Mapping[str, str] = {BACKEND_DEVDAX: "CharDevice", BACKEND_SHM: "File", BACKEND_FAMFS: "File"}


@dataclass(frozen=True)
class AgentSpec:
    """The pool's `agent` block, already defaulted."""

    image: str
    image_pull_policy: str | None = None
    resources: Mapping[str, Any] | None = None
    native_sidecar: bool = True


@dataclass(frozen=True)
class InjectionPlan:
    """Everything the patch builders need for one pod: pool, slice, the pod's region, the agent.

    Offsets are bytes from the start of the pool; sizes are bytes.
    """

    pool: str
    backend: BackendType
    device_path: str
    slice_offset: int
    slice_size: int
    region_index: int
    region_offset: int
    region_size: int
    agent: AgentSpec
    node_selector: Mapping[str, str] = field(default_factory=dict)
    reservation: str = ""
    #: Folders file backends may live under (the operator's FILE_BACKEND_PREFIXES setting).
    file_prefixes: tuple[str, ...] = poolrules.DEFAULT_FILE_PREFIXES
    coherence: str = ""  # empty: the backend's default (gismo.contract.DEFAULT_COHERENCE)
    #: How the containers reach the pool: the device-plugin resource, or a hostPath volume.
    access: str = ACCESS_DEVICE_PLUGIN

    @property
    def uses_device_plugin(self) -> bool:
        return self.access == ACCESS_DEVICE_PLUGIN

    @property
    def resource_name(self) -> str:
        """The pool's extended resource, ``gismo.io/<pool>`` (what the node component advertises)."""
        return RESOURCE_PREFIX + self.pool

    def __post_init__(self) -> None:
        if self.access not in ACCESS_MODES:
            raise ValueError(f"access: expected one of {', '.join(ACCESS_MODES)}, got {self.access!r}")
        if self.uses_device_plugin and not _RESOURCE_NAME.match(self.pool):
            raise ValueError(
                f"access: {ACCESS_DEVICE_PLUGIN} needs a pool name the resource {RESOURCE_PREFIX}<pool> can "
                f"carry (at most 63 characters), not {self.pool!r}"
            )
        if self.backend not in HOSTPATH_TYPES:
            raise ValueError(f"backend.type: expected one of {sorted(HOSTPATH_TYPES)}, got {self.backend!r}")
        if self.coherence and self.coherence not in COHERENCE_MODES:
            raise ValueError(f"backend.coherence: expected one of {COHERENCE_MODES}, got {self.coherence!r}")
        if not self.agent.image:
            raise ValueError("agent.image: no agent image (set it on the pool or DEFAULT_AGENT_IMAGE)")
        for name in ("slice_offset", "slice_size", "region_index", "region_offset", "region_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must not be negative, got {getattr(self, name)}")
        end = self.region_offset + self.region_size
        if self.region_offset < self.slice_offset or end > self.slice_offset + self.slice_size:
            raise ValueError(
                f"region {self.region_index}: [{self.region_offset}, {end}) lies outside the slice "
                f"[{self.slice_offset}, {self.slice_offset + self.slice_size})"
            )
        # Never inject a pool that breaks the pool rule: its agent would refuse to start, or the API
        # server would refuse the pod. The webhook admits the pod without Gismo, naming the rule.
        problems = poolrules.pool_problems(
            backend=self.backend, path=self.device_path, region_size=self.region_size,
            node_selector=self.node_selector, file_prefixes=self.file_prefixes,
        )  # fmt: skip
        if problems:
            raise ValueError(poolrules.message(problems))

    def env(self) -> list[dict[str, str]]:
        """The GISMO_* environment (contract), identical in the agent and the Ray container."""
        values = {
            ENV_POOL: self.pool,
            ENV_BACKEND: self.backend,
            ENV_DEVICE: self.device_path,
            ENV_SLICE_OFFSET: str(self.slice_offset),
            ENV_SLICE_SIZE: str(self.slice_size),
            ENV_REGION: str(self.region_index),
            ENV_REGION_OFFSET: str(self.region_offset),
            ENV_REGION_SIZE: str(self.region_size),
            ENV_SOCKET: SOCKET_PATH,
            ENV_COHERENCE: self.coherence or DEFAULT_COHERENCE[self.backend],
        }
        if self.file_prefixes != poolrules.DEFAULT_FILE_PREFIXES:
            values[ENV_FILE_PREFIXES] = ",".join(self.file_prefixes)
        return [{"name": k, "value": v} for k, v in values.items()]

    def annotations(self) -> dict[str, str]:
        """The pod annotations naming the region (contract), plus the reservation token."""
        result = {
            ANN_POOL: self.pool,
            ANN_REGION: str(self.region_index),
            ANN_REGION_OFFSET: str(self.region_offset),
            ANN_REGION_SIZE: str(self.region_size),
        }
        if self.reservation:
            result[ANN_RESERVATION] = self.reservation
        return result
