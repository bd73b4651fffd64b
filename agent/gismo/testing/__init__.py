"""Test and benchmark helpers for Gismo (not used in production paths).

`LocalCluster` starts a multi-node Ray cluster on this machine with one Gismo agent per Ray node,
all mapping one emulation file; see `gismo.testing.cluster`.
"""

from gismo.testing.cluster import AgentProcess, LocalCluster, leftover_processes

__all__ = ["AgentProcess", "LocalCluster", "leftover_processes"]
