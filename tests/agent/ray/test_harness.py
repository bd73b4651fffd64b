"""The local multi-node harness starts what it promises and leaves no processes or files behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import ray

from gismo.testing import LocalCluster, leftover_processes, wait_until

pytestmark = pytest.mark.ray
# Workers cannot import test modules: ship this module's functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
MiB = 1 << 20


@ray.remote(num_cpus=0)
def where() -> tuple[str, str | None, int]:
    return str(ray.get_runtime_context().get_node_id()), os.environ.get("GISMO_SOCKET"), os.getpid()


def test_cleans_up_after_a_failing_body() -> None:
    saved = {k: os.environ.get(k) for k in ("GISMO_SOCKET", "RAY_TMPDIR")}
    lc = LocalCluster(2, object_store_bytes=128 * MiB, region_bytes=16 * MiB)
    with pytest.raises(RuntimeError, match="boom"), lc:
        assert os.path.exists(lc.slice_path) and os.path.isdir(lc.tmpdir)
        seen = ray.get([where.options(scheduling_strategy=lc.on_node(i)).remote() for i in range(2)])
        # each node's tasks reach their own node's agent
        assert [s[0] for s in seen] == lc.node_ids
        assert [s[1] for s in seen] == [a.socket_path for a in lc.agents]
        assert os.environ["GISMO_SOCKET"] == lc.agents[0].socket_path  # the driver is on node 0
        workers = [s[2] for s in seen]
        assert leftover_processes(lc.marker)  # sanity: the marker does find our processes
        raise RuntimeError("boom")
    assert not ray.is_initialized()
    assert lc.leftovers() == []
    assert not os.path.exists(lc.slice_path) and not os.path.exists(lc.tmpdir)
    assert all(a.proc is not None and a.proc.poll() is not None for a in lc.agents)
    assert not any(os.path.exists(f"/proc/{pid}") for pid in workers)
    assert {k: os.environ.get(k) for k in saved} == saved


def test_cleans_up_after_a_failed_start() -> None:
    # A region size the agent must reject (not a page multiple): start fails, nothing stays.
    lc = LocalCluster(2, object_store_bytes=128 * MiB, region_bytes=16 * MiB + 1, agent_start_timeout=15)
    with pytest.raises(RuntimeError), lc:
        pass
    assert lc.leftovers() == []
    assert not ray.is_initialized()


DRIVER = """
import json, sys, time
from gismo.testing import LocalCluster
lc = LocalCluster(2, object_store_bytes=128 << 20, region_bytes=16 << 20).start()
print(json.dumps([lc.marker, lc.slice_path, lc.tmpdir]), flush=True)
time.sleep(600)  # stay alive, cluster up, until the test kills this driver
"""


def test_janitor_cleans_up_when_the_driver_is_killed() -> None:
    proc = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        marker, slice_path, tmpdir = json.loads(proc.stdout.readline())
        assert os.path.exists(slice_path)
        before = set(leftover_processes(marker))  # raylets, GCS, agents, Ray's helper daemons ...
        assert len(before) >= 4
    finally:
        proc.kill()  # SIGKILL: no Python cleanup runs in the driver
        proc.wait()
    wait_until(
        lambda: not (leftover_processes(marker) or os.path.exists(slice_path) or os.path.exists(tmpdir)),
        "the janitor to stop every process of the cluster and remove its files",
    )
    # also the daemons whose marker is unreadable (found as descendants): none survives
    wait_until(lambda: not [p for p in before if alive(p)], "every process seen before the kill to be gone")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False
