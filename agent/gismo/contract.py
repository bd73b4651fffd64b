"""Names shared by the store, the operator, the chart and the demo: defined here, once.

The operator's admission webhook writes these names into Ray pods and the agent reads them back, so
a rename on one side only would break every pod silently. Both sides import this module (the
operator depends on the ``gismo`` distribution for exactly this reason); the chart and
``docs/CONTRACTS.md`` repeat them for humans, and ``tests/`` checks that they agree.

Pure constants, importable on every Python that Ray supports (3.10+), no dependencies.
"""

from __future__ import annotations

from typing import Final

#: The smallest unit of mapping and placement: offsets and sizes of slices and regions are multiples.
PAGE: Final = 4096

#: Memory backends a GismoPool may name.
BACKEND_SHM: Final = "shm"
BACKEND_DEVDAX: Final = "devdax"
#: A famfs file of fixed size, present on every attached node (never created or resized by Gismo).
BACKEND_FAMFS: Final = "famfs"
BACKENDS: Final = (BACKEND_SHM, BACKEND_DEVDAX, BACKEND_FAMFS)

#: What the pool's memory needs for one node to see another's stores (GismoPool
#: ``spec.backend.coherence``): ``hardware`` = nothing (one host's tmpfs, CXL 3.x coherence),
#: ``flush`` = write back / invalidate cache lines (CXL memory shared by hosts without coherence).
COHERENCE_HARDWARE: Final = "hardware"
COHERENCE_FLUSH: Final = "flush"
COHERENCE_MODES: Final = (COHERENCE_HARDWARE, COHERENCE_FLUSH)
#: The default per backend: shm is one host's tmpfs; devdax and famfs are CXL memory, which is not
#: coherent between hosts unless the hardware says so (then set ``coherence: hardware``).
DEFAULT_COHERENCE: Final = {
    BACKEND_SHM: COHERENCE_HARDWARE,
    BACKEND_DEVDAX: COHERENCE_FLUSH,
    BACKEND_FAMFS: COHERENCE_FLUSH,
}

# --- Environment of the agent and the Ray container (written by the webhook, read by gismo.config) ---
ENV_PREFIX: Final = "GISMO_"
ENV_POOL: Final = "GISMO_POOL"
ENV_BACKEND: Final = "GISMO_BACKEND"
ENV_DEVICE: Final = "GISMO_DEVICE"
ENV_SLICE_OFFSET: Final = "GISMO_SLICE_OFFSET"
ENV_SLICE_SIZE: Final = "GISMO_SLICE_SIZE"
ENV_REGION: Final = "GISMO_REGION"
ENV_REGION_OFFSET: Final = "GISMO_REGION_OFFSET"
ENV_REGION_SIZE: Final = "GISMO_REGION_SIZE"
ENV_SOCKET: Final = "GISMO_SOCKET"
#: Folders a file-backed pool may live under (comma separated; default /dev/shm). Set by the
#: webhook only when the chart allows more than the default (gismo.poolrules).
ENV_FILE_PREFIXES: Final = "GISMO_FILE_PREFIXES"
ENV_COHERENCE: Final = "GISMO_COHERENCE"
#: Every variable the webhook sets, in the order it writes them.
REGION_ENV: Final = (
    ENV_POOL,
    ENV_BACKEND,
    ENV_DEVICE,
    ENV_SLICE_OFFSET,
    ENV_SLICE_SIZE,
    ENV_REGION,
    ENV_REGION_OFFSET,
    ENV_REGION_SIZE,
    ENV_SOCKET,
    ENV_COHERENCE,
)
#: The operator's own settings share the prefix but are not the store's.
OPERATOR_ENV_PREFIX: Final = "GISMO_OPERATOR_"
#: Tests only: ``noncoherent`` maps every node's view of the slice as a private write-back cache
#: (gismo.memory.model); read once when a process maps the slice. Never set by the operator.
ENV_TEST_MEMORY: Final = "GISMO_TEST_MEMORY"

# --- The agent's socket: a pod-private emptyDir shared by the agent sidecar and the Ray container ---
SOCKET_VOLUME: Final = "gismo-socket"
SOCKET_DIR: Final = "/run/gismo"
SOCKET_PATH: Final = f"{SOCKET_DIR}/agent.sock"
#: Console script ``gismo``, subcommand ``agent``.
AGENT_COMMAND: Final = ("gismo", "agent")
#: The agent sidecar's startup probe: exits 0 once the agent answers on its socket, healthy or
#: degraded (an agent that cannot serve its region still answers, saying why), so a native sidecar
#: never holds the Ray container back for a Gismo problem.
AGENT_STARTUP_COMMAND: Final = ("gismo", "health", "--answering")
#: The agent sidecar's terminationMessagePath (the Kubernetes default, set explicitly so both sides
#: agree): a degraded agent writes why it refuses its region there, and the kubelet copies it into the
#: container's status when the agent exits (``lastState.terminated.message``), where the operator
#: reads it to post GismoAgentRefused. The agent only writes the file the kubelet made, never creates it.
AGENT_TERMINATION_LOG: Final = "/dev/termination-log"
#: The agent's exit status after a degraded spell (the kubelet then restarts it, and it tries again).
AGENT_EXIT_REFUSED: Final = 3
#: The agent runs as this uid/gid: non-root, and the ``ray`` user of rayproject/ray images, so the
#: socket it creates belongs to the Ray container's own user.
AGENT_UID: Final = 1000
AGENT_GID: Final = 100

# --- Annotations ---
#: On a RayCluster: opt in to the named GismoPool (also copied onto each admitted pod).
ANN_POOL: Final = "gismo.io/pool"
#: On a RayCluster: per-pod region size override (a multiple of the pool's regionSize);
#: on an admitted pod: the region's size in bytes.
ANN_REGION_SIZE: Final = "gismo.io/region-size"
#: On an admitted pod: its region index and absolute byte offset in the pool.
ANN_REGION: Final = "gismo.io/region"
ANN_REGION_OFFSET: Final = "gismo.io/region-offset"
#: On an admitted pod: the token that binds the pod to its ledger entry (a pod has no name or uid at
#: admission time).
ANN_RESERVATION: Final = "gismo.io/reservation"
#: On a pod admitted without Gismo: why.
ANN_SKIPPED: Final = "gismo.io/skipped"

# --- The node component (`gismo node`, a kubelet device plugin) ---------------------------------
#: Each pool is advertised to the kubelet as the extended resource ``gismo.io/<pool>``; the webhook
#: asks for 1 of it in the agent's and the Ray container's requests and limits.
RESOURCE_PREFIX: Final = "gismo.io/"
