"""Every process of a local Ray cluster (gismo.testing.LocalCluster) listens on 127.0.0.1 only.

Network tests here must never use the machine's interface address: the GCS, every raylet, the
driver and the workers all report loopback.
"""

from __future__ import annotations

import pytest
import ray

from gismo.testing import LocalCluster

pytestmark = pytest.mark.ray

MiB = 1 << 20
LOOPBACK = "127.0.0.1"


@ray.remote(num_cpus=0)
def _worker_address() -> str:
    return str(ray.util.get_node_ip_address())


def test_every_node_gcs_driver_and_worker_address_is_loopback() -> None:
    with LocalCluster(2, cpus_per_node=1, object_store_bytes=128 * MiB, region_bytes=32 * MiB) as lc:
        nodes = [n for n in ray.nodes() if n["Alive"]]
        assert len(nodes) == 2
        assert {n["NodeManagerAddress"] for n in nodes} == {LOOPBACK}
        assert lc.cluster.address.rpartition(":")[0] == LOOPBACK  # the GCS
        assert ray.get_runtime_context().gcs_address.rpartition(":")[0] == LOOPBACK
        assert ray.util.get_node_ip_address() == LOOPBACK  # the driver
        workers = [_worker_address.options(scheduling_strategy=lc.on_node(i)).remote() for i in range(2)]
        assert ray.get(workers) == [LOOPBACK, LOOPBACK]
