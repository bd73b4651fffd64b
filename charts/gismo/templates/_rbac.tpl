{{/*
The operator's ClusterRole rules. They are literal (no values, identical for every install):
exactly the API calls the operator makes, one rule per resource, so they can be compared with the
calls recorded in the operator tests. The admission webhook configurations are managed by this
chart, so the operator gets no access to admissionregistration.k8s.io.
*/}}
{{- define "gismo.clusterRoleRules" -}}
# GismoPools: watched by kopf, read by the webhooks and reconcilers, patched for kopf's finalizer
# and bookkeeping annotations (kopf never uses PUT).
- apiGroups: ["gismo.io"]
  resources: ["gismopools"]
  verbs: ["get", "list", "watch", "patch"]
# GismoPool status: conditions, capacity, allocated, free, counts (merge patch of the subresource).
- apiGroups: ["gismo.io"]
  resources: ["gismopools/status"]
  verbs: ["patch"]
# GismoSlices: one per opted-in RayCluster; region assignments patched with resourceVersion
# preconditions; deleted with a uid precondition when the RayCluster goes.
- apiGroups: ["gismo.io"]
  resources: ["gismoslices"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# GismoSlice status: the regions-in-use counts kubectl shows, and how many of the cluster's Ray
# pods run without the agent (GismoNotInjected) (merge patch of the subresource).
- apiGroups: ["gismo.io"]
  resources: ["gismoslices/status"]
  verbs: ["patch"]
# GismoRegions: one per region in use. Created at admission (AlreadyExists = taken), listed per
# slice (labelSelector) on first use and before a slice is called full, all at once (paged) by
# the sweep, read on a cache miss, patched (bound to the pod, resourceVersion precondition),
# deleted with uid/resourceVersion preconditions. Never watched.
- apiGroups: ["gismo.io"]
  resources: ["gismoregions"]
  verbs: ["get", "list", "create", "patch", "delete"]
# RayClusters (KubeRay's): read only. The operator never writes them, their status least of all;
# GismoSlices name them as owner without blockOwnerDeletion, so no rayclusters/finalizers. No
# get: the sweep finds each slice's cluster in its one list per round.
- apiGroups: ["ray.io"]
  resources: ["rayclusters"]
  verbs: ["list", "watch"]
# Ray pods: watched to release regions when pods go away, listed per cluster before a slice is
# called full, and all at once (paged) by the sweep. The
# webhook changes pods through its admission response, not through the API.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# Events about pools, RayClusters and pods (core/v1, created by the operator and by kopf).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# Nodes: listed (every 30 s at most) to see which advertise a pool's gismo.io/<pool> resource.
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["list"]
# Namespaces: read to match a pool's namespaceSelector.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get"]
# kopf scans CRDs to find the resources it serves.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
# kopf peering (replicaCount > 1): watched, and patched with this replica's keep-alives.
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["list", "watch", "patch"]
{{- end }}
