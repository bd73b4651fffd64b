"""The agent daemon (``gismo agent``): the one writer of its region's metadata, serving its pod.

``region`` owns the region (format, recover, reserve, seal, delete, reclaim), ``alloc`` its data
area, ``server`` the Unix socket that feeds it (``protocol``: the frames), ``metrics`` the
Prometheus/probe port, ``degraded`` the stand-in that answers (saying why) when the agent cannot
serve its region, so Ray never waits for Gismo.
"""

from .server import Agent, run

__all__ = ["Agent", "run"]
