"""The kopf-registered code: process lifecycle, GismoPools, RayClusters, the Ray pod webhook and events,
the sweep. :mod:`gismo_operator.registry` lists these modules; kopf registers them on import."""
