"""Pure rules and data: the CRD models, quantities, a RayCluster's shape, the pool allocator, pool status,
region assignment, and the coalescer. No API calls, no kopf: unit-tested on their own."""
