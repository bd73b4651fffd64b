"""The Gismo Kubernetes operator: hands CXL appliance memory (GismoPools) to KubeRay Ray pods."""
