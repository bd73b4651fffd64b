"""Every name the operator writes into the cluster that is its own: labels, annotations,
finalizers, webhook ids and Event reasons, defined here once.

Names shared with the agent and the chart (pod annotations, ``GISMO_*`` variables, the socket path
and volume, ``PAGE``, the agent's uid/gid and command) are not here: they live in
:mod:`gismo.contract` and are imported from there, never redefined. Event reasons all start with
``Gismo`` so ``kubectl get events --field-selector reason=...`` users can tell ours apart.
"""

from __future__ import annotations

from typing import Final

from gismo_operator.core.models import GROUP

# --- Who we are --------------------------------------------------------------------------------
#: Our name in Events (source/reportingComponent), in User-Agent and in managed-by labels.
COMPONENT: Final = "gismo-operator"
#: Prefix of every annotation we own (RayCluster settle check ignores all others).
ANNOTATION_PREFIX: Final = f"{GROUP}/"

# --- kopf bookkeeping ------------------------------------------------------------------------------
#: kopf's finalizer on objects with change handlers (GismoPools, opted-in RayClusters).
FINALIZER: Final = f"{GROUP}/finalizer"
#: kopf's progress/diff-base annotations are ``gismo.io/<key>`` (never in status: the schema prunes it).
KOPF_ANNOTATION_PREFIX: Final = GROUP
#: The diff-base annotation key kopf keeps the last handled spec under.
KOPF_DIFFBASE_KEY: Final = "last-handled-configuration"
#: Name of the Validating/MutatingWebhookConfigurations kopf manages itself in --dev.
MANAGED_WEBHOOKS_NAME: Final = GROUP

# --- Finalizers ------------------------------------------------------------------------------------
#: On every GismoSlice: its bytes stay allocated (the object stays) until no pod holds a region,
#: even after the RayCluster is gone; without it, a new slice could overlap terminating pods' regions.
SLICE_FINALIZER: Final = f"{GROUP}/regions-in-use"

# --- What the webhook adds to a Ray pod (beside gismo.contract's socket volume) -------------------
#: The agent sidecar's container name (also how a re-invoked admission sees it already injected).
AGENT_CONTAINER: Final = "gismo-agent"
#: The hostPath volume of the pool's device or file.
POOL_VOLUME: Final = "gismo-pool"
#: The emptyDir the agent delivers the pure-Python ``gismo`` client into (``gismo agent --deliver-to``),
#: mounted read-only in the Ray container and appended to its ``PYTHONPATH``.
CLIENT_VOLUME: Final = "gismo-client"
#: Where that volume is mounted in both containers (the folder put on ``PYTHONPATH``).
CLIENT_DIR: Final = "/gismo-client"
#: The emptyDir's size limit: the package is well under 1 MiB (bytecode the Ray container's Python
#: cannot write to a read-only mount is never stored there).
CLIENT_VOLUME_SIZE: Final = "32Mi"
#: The Ray container's own ``PYTHONPATH`` entry, renamed so the new ``PYTHONPATH`` can expand it
#: (``$(GISMO_USER_PYTHONPATH):/gismo-client``) whether it was a value or a ``valueFrom``.
ENV_USER_PYTHONPATH: Final = "GISMO_USER_PYTHONPATH"
#: On a pod (the RayCluster group's ``template.metadata.annotations``): ``"false"`` turns client delivery
#: off, for images that install ``gismo`` themselves; ``"true"`` (the default) delivers it.
ANN_DELIVER_CLIENT: Final = f"{GROUP}/deliver-client"

# --- Labels ----------------------------------------------------------------------------------------
#: KubeRay's labels on every Ray pod (tests/fixtures/kuberay/NOTICE): we read them, never write them.
LABEL_IS_RAY_NODE: Final = "ray.io/is-ray-node"
#: KubeRay's label naming a pod's RayCluster; we also put it on GismoSlices (list by cluster).
LABEL_CLUSTER: Final = "ray.io/cluster"
#: KubeRay's head/worker label: only those two node types get a region (KubeRay's Redis cleanup
#: Job pod, ``redis-cleanup``, also carries ray.io/is-ray-node and is left alone).
LABEL_NODE_TYPE: Final = "ray.io/node-type"
#: On every GismoRegion: the name of its GismoSlice (the ledger lists a slice's regions by it).
LABEL_SLICE: Final = f"{GROUP}/slice"
RAY_NODE_TYPES: Final = ("head", "worker")
#: The namespace label PodSecurity admission enforces (privileged, baseline or restricted).
LABEL_POD_SECURITY_ENFORCE: Final = "pod-security.kubernetes.io/enforce"
#: The well-known managed-by label on the GismoSlices we create (value: :data:`COMPONENT`).
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"

# --- Webhooks and probes (kopf serves each at ``/<id>``; the chart's configurations use them) -----
#: The mutating webhook that injects the agent into Ray pods.
WEBHOOK_MUTATE_RAYPOD: Final = "mutate-raypod"
#: The validating webhook that refuses bad GismoPools before they are stored.
WEBHOOK_VALIDATE_POOL: Final = "validate-gismopool"
#: The liveness probe detail "has API credentials".
PROBE_API: Final = "api"

# --- Environment the operator adds beside gismo.contract's ---------------------------------------
#: The agent's owner identity (the pod uid, via the downward API). Read by ``gismo.config``; not yet
#: in :mod:`gismo.contract`, so it is named here once until the agent side moves it there.
ENV_OWNER: Final = "GISMO_OWNER"

# --- Event reasons ---------------------------------------------------------------------------------
#: A RayCluster got its GismoSlice (a range of the pool).
REASON_SLICE_RESERVED: Final = "GismoSliceReserved"
#: A RayCluster's slice grew or shrank with the cluster's shape.
REASON_SLICE_RESIZED: Final = "GismoSliceResized"
#: A slice was given back to the pool (cluster gone, opted out, or replaced).
REASON_SLICE_RELEASED: Final = "GismoSliceReleased"
#: The RayCluster names a GismoPool that does not exist.
REASON_UNKNOWN_POOL: Final = "GismoUnknownPool"
#: The named GismoPool exists but its spec is invalid.
REASON_INVALID_POOL: Final = "GismoInvalidPool"
#: The pool does not admit the RayCluster's namespace.
REASON_NOT_ADMITTED: Final = "GismoNamespaceNotAdmitted"
#: No free range of the pool is large enough for the cluster's slice.
REASON_POOL_FULL: Final = "GismoPoolFull"
#: A resize cannot happen now (regions in use, or no room next to the slice).
REASON_RESIZE_BLOCKED: Final = "GismoResizeBlocked"
#: The RayCluster's shape cannot be sized (the message names the field).
REASON_INVALID_SHAPE: Final = "GismoInvalidShape"
#: The cluster's pool annotation changed while its slice lives in another pool.
REASON_POOL_CHANGED: Final = "GismoPoolChanged"
#: Every region of the slice is taken: a Ray pod starts without Gismo.
REASON_SLICE_FULL: Final = "GismoSliceFull"
#: A Ray pod could not take the agent (the message says why): it starts without Gismo.
REASON_NOT_INJECTED: Final = "GismoNotInjected"
#: The pool is reached by hostPath and the pod's namespace enforces a Pod Security level that forbids
#: hostPath volumes: the pod starts without Gismo.
REASON_POD_SECURITY: Final = "GismoPodSecurity"
#: The pool is reached through the device plugin and no node of the pool advertises its resource (no
#: node component there, or the device/file is missing): the pod starts without Gismo.
REASON_NOT_ADVERTISED: Final = "GismoResourceNotAdvertised"
#: A pod uses a region the ledger records for another pod.
REASON_REGION_CONFLICT: Final = "GismoRegionConflict"
#: A GismoPool deletion waits: slices still live in it.
REASON_POOL_IN_USE: Final = "GismoPoolInUse"
#: On a pod and its RayCluster: the pod's agent refuses its region (it runs degraded, Ray uses its own
#: object store); the message is the agent's own, from the container's termination message.
REASON_AGENT_REFUSED: Final = "GismoAgentRefused"
