{{/*
The operator's ClusterRole rules. They are literal (no values, identical for every install):
exactly the API calls the operator makes, one rule per resource, so they can be compared with the
calls recorded in the operator tests. The admission webhook configurations are managed by this
chart, so the operator gets no access to admissionregistration.k8s.io.
*/}}
{{- define "gismo.clusterRoleRules" -}}
# GismoPools: reconciled (kopf finalizer and annotations via patch) and validated.
- apiGroups: ["gismo.io"]
  resources: ["gismopools"]
  verbs: ["get", "list", "watch", "patch", "update"]
# GismoPool status: conditions, capacity, allocated, free, counts.
- apiGroups: ["gismo.io"]
  resources: ["gismopools/status"]
  verbs: ["get", "patch", "update"]
# GismoSlices: one per opted-in RayCluster; region assignments written with resourceVersion preconditions.
- apiGroups: ["gismo.io"]
  resources: ["gismoslices"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# GismoSlice status: region counts for `kubectl get gismoslices`.
- apiGroups: ["gismo.io"]
  resources: ["gismoslices/status"]
  verbs: ["patch"]
# RayClusters (KubeRay's): read, and patched for metadata only (kopf finalizer, annotations); never status.
- apiGroups: ["ray.io"]
  resources: ["rayclusters"]
  verbs: ["get", "list", "watch", "patch"]
# GismoSlices are owned by their RayCluster with blockOwnerDeletion (kopf's default); the
# OwnerReferencesPermissionEnforcement admission plugin requires this to set such a reference.
- apiGroups: ["ray.io"]
  resources: ["rayclusters/finalizers"]
  verbs: ["update"]
# Ray pods: watched to release regions when pods go away, patched for Gismo annotations.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "patch"]
# Events on pools, RayClusters and pods (kopf posts core/v1 Events).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
# Namespaces: a pool's namespaceSelector.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
# kopf scans CRDs to find the resources it serves.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
# kopf peering (replicaCount > 1): keep-alives in the ClusterKopfPeering object.
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
