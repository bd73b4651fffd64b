"""The end-to-end demo (``make demo`` / ``python -m gismo_demo``): an embedded API server and the
operator (control plane), then a local Ray cluster storing objects in Gismo (data plane).

Dev/demo only: it imports kmock and ray, which the operator image does not ship.
"""
