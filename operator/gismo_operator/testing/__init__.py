"""Dev and test support: an embedded Kubernetes API (kmock) that runs the operator in-process, and a
KubeRay pod simulator. Imports kmock; the operator image never imports this package."""
