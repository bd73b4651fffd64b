"""What an injection needs to know, and the names it writes (one place, so nothing drifts).

Why a plain frozen dataclass instead of the GismoPool/GismoSlice models: the patch builders are pure
functions of a pod and this plan, so they can be unit-tested without an operator, an API or a
model; the webhook assembles the plan from the models once per admission. Cost: nothing beyond
the object itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

#: Names the injected objects carry. Contract names (docs/CONTRACTS.md) are marked as such.
AGENT_CONTAINER = "gismo-agent"
POOL_VOLUME = "gismo-pool"
SOCKET_VOLUME = "gismo-socket"  # contract
SOCKET_DIR = "/run/gismo"  # contract
SOCKET_PATH = f"{SOCKET_DIR}/agent.sock"  # contract
AGENT_COMMAND = ("gismo", "agent")  # contract: console script `gismo`, subcommand `agent`

#: The agent runs as this uid/gid: non-root, and the uid of the `ray` user in rayproject/ray images,
#: so files the agent creates in the shared socket directory are the Ray container's own.
AGENT_UID = 1000
AGENT_GID = 100

#: Pod annotations (contract), plus the reservation token the operator uses to bind a pod to its
#: entry in GismoSlice.spec.regions (the pod has no name and no uid at admission time).
ANN_POOL = "gismo.io/pool"
ANN_REGION = "gismo.io/region"
ANN_REGION_OFFSET = "gismo.io/region-offset"
ANN_REGION_SIZE = "gismo.io/region-size"
ANN_SKIPPED = "gismo.io/skipped"
ANN_RESERVATION = "gismo.io/reservation"

#: Labels KubeRay puts on every Ray pod (see tests/fixtures/kuberay/NOTICE).
LABEL_IS_RAY_NODE = "ray.io/is-ray-node"
LABEL_CLUSTER = "ray.io/cluster"
LABEL_NODE_TYPE = "ray.io/node-type"

BackendType = Literal["shm", "devdax"]

#: hostPath type per backend: a CXL devdax device is a character device; emulation is a plain file.
HOSTPATH_TYPES: Mapping[str, str] = {"devdax": "CharDevice", "shm": "File"}


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

    def __post_init__(self) -> None:
        if self.backend not in HOSTPATH_TYPES:
            raise ValueError(f"backend.type: expected one of {sorted(HOSTPATH_TYPES)}, got {self.backend!r}")
        if not self.device_path.startswith("/"):
            raise ValueError(f"backend.path: expected an absolute path, got {self.device_path!r}")
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

    def env(self) -> list[dict[str, str]]:
        """The GISMO_* environment (contract), identical in the agent and the Ray container."""
        values = {
            "GISMO_POOL": self.pool,
            "GISMO_BACKEND": self.backend,
            "GISMO_DEVICE": self.device_path,
            "GISMO_SLICE_OFFSET": str(self.slice_offset),
            "GISMO_SLICE_SIZE": str(self.slice_size),
            "GISMO_REGION": str(self.region_index),
            "GISMO_REGION_OFFSET": str(self.region_offset),
            "GISMO_REGION_SIZE": str(self.region_size),
            "GISMO_SOCKET": SOCKET_PATH,
        }
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
