"""Fixtures for the Ray integration tests: local multi-node Ray clusters (see gismo.testing)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gismo.testing import LocalCluster

MiB = 1 << 20


@pytest.fixture(scope="module")
def cluster3() -> Iterator[LocalCluster]:
    """3 Ray nodes x 1 CPU, a Gismo agent per node, 64 MiB regions in one /dev/shm file."""
    with LocalCluster(3, cpus_per_node=1, object_store_bytes=256 * MiB, region_bytes=64 * MiB) as lc:
        yield lc


@pytest.fixture(scope="module")
def cluster3_no_agent() -> Iterator[LocalCluster]:
    """3 Ray nodes x 1 CPU and no Gismo anywhere (no GISMO_* in any process)."""
    with LocalCluster(3, cpus_per_node=1, object_store_bytes=256 * MiB, agents=False) as lc:
        yield lc
