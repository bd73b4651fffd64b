"""Test and benchmark helpers for Gismo (not used in production paths).

`LocalCluster` starts a multi-node Ray cluster on this machine with one Gismo agent per Ray node,
all mapping one emulation file; see `gismo.testing.cluster`. `wait_until`/`wait_until_async` are
the one way tests and harnesses wait for a state (`gismo.testing.waiting`).
"""

from gismo.testing.cluster import AgentProcess, LocalCluster, leftover_processes
from gismo.testing.waiting import WAIT_LIMIT, WaitTimeout, wait_until, wait_until_async

__all__ = [
    "WAIT_LIMIT",
    "AgentProcess",
    "LocalCluster",
    "WaitTimeout",
    "leftover_processes",
    "wait_until",
    "wait_until_async",
]
