"""``gismo node`` driven by a fake kubelet over unix sockets: Register, ListAndWatch, Allocate,
GetPreferredAllocation, PreStartContainer, and re-registration after a kubelet restart."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from fakekubelet import FakeKubelet

from gismo.memory.poolfile import read_marker
from gismo.node.proto import api_pb2 as pb
from gismo.node.service import NodeService
from gismo.testing import wait_until

MiB = 1 << 20
RunNode = Callable[[list[dict[str, Any]]], NodeService]


def shm_pool(node_dir: Path, name: str = "pool0", shares: int = 4) -> dict[str, Any]:
    path = node_dir / "shm" / name
    return {"name": name, "capacity": "1Mi", "shares": shares, "backend": {"type": "shm", "path": str(path)}}


def dax_pool(node_dir: Path, name: str = "cxl0", shares: int = 2) -> dict[str, Any]:
    # A stand-in for /dev/dax0.0: a symlink to a real character device (/dev/null), so the probe's
    # "is a character device" rule is the real one, and removing the link makes the device vanish.
    link = node_dir / "dax0.0"
    os.symlink("/dev/null", link)
    return {"name": name, "shares": shares, "backend": {"type": "devdax", "path": str(link)}}


def test_register_then_list_and_watch_shm(node_dir: Path, kubelet: FakeKubelet, run_node: RunNode) -> None:
    pool = shm_pool(node_dir)
    run_node([pool])
    reg = kubelet.next_registration()
    assert reg.version == "v1beta1"
    assert reg.resource_name == "gismo.io/pool0"
    assert reg.endpoint == "gismo-pool0.sock"
    assert reg.options.get_preferred_allocation_available and not reg.options.pre_start_required
    assert (Path(kubelet.plugin_dir) / reg.endpoint).is_socket()

    stub = kubelet.plugin(reg.endpoint)
    assert stub.GetDevicePluginOptions(pb.Empty(), timeout=10) == reg.options
    stream = kubelet.watch(reg.endpoint)
    first = stream.next_update()
    assert first == [(f"pool0-{i}", "Healthy") for i in range(4)]
    # The node component created the pool file, with the marker after the data.
    marker = read_marker(pool["backend"]["path"])
    assert marker is not None and (marker.pool, marker.capacity) == ("pool0", MiB)

    # The file vanishes: every share turns Unhealthy on the open stream.
    os.unlink(pool["backend"]["path"])
    assert stream.next_update() == [(f"pool0-{i}", "Unhealthy") for i in range(4)]


def test_allocate_mounts_the_shm_pool_file(node_dir: Path, kubelet: FakeKubelet, run_node: RunNode) -> None:
    pool = shm_pool(node_dir)
    run_node([pool])
    reg = kubelet.next_registration()
    stub = kubelet.plugin(reg.endpoint)
    wait_until(lambda: kubelet.watch(reg.endpoint).next_update()[0][1] == "Healthy", "healthy shares")
    got = stub.Allocate(
        pb.AllocateRequest(
            container_requests=[
                pb.ContainerAllocateRequest(devices_ids=["pool0-0"]),
                pb.ContainerAllocateRequest(devices_ids=["pool0-3"]),
            ]
        ),
        timeout=10,
    )
    path = pool["backend"]["path"]
    assert len(got.container_responses) == 2
    for answer in got.container_responses:
        assert [(m.host_path, m.container_path, m.read_only) for m in answer.mounts] == [(path, path, False)]
        assert not answer.devices

    with pytest.raises(grpc.RpcError) as info:
        stub.Allocate(
            pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=["other-0"])]),
            timeout=10,
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "other-0" in info.value.details()


def test_devdax_allocate_gives_a_device_spec_and_vanishes_with_the_device(
    node_dir: Path, kubelet: FakeKubelet, run_node: RunNode
) -> None:
    pool = dax_pool(node_dir)
    run_node([pool])
    reg = kubelet.next_registration()
    assert reg.resource_name == "gismo.io/cxl0"
    stream = kubelet.watch(reg.endpoint)
    assert stream.next_update() == [("cxl0-0", "Healthy"), ("cxl0-1", "Healthy")]
    answer = (
        kubelet.plugin(reg.endpoint)
        .Allocate(
            pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=["cxl0-1"])]),
            timeout=10,
        )
        .container_responses[0]
    )
    path = pool["backend"]["path"]
    assert [(d.host_path, d.container_path, d.permissions) for d in answer.devices] == [(path, path, "rw")]
    assert not answer.mounts
    # The node component never creates or changes the device (the stand-in is still the same link).
    assert os.readlink(path) == "/dev/null"

    os.unlink(path)
    assert stream.next_update() == [("cxl0-0", "Unhealthy"), ("cxl0-1", "Unhealthy")]
    with pytest.raises(grpc.RpcError) as info:
        kubelet.plugin(reg.endpoint).Allocate(
            pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=["cxl0-0"])]),
            timeout=10,
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert path in info.value.details()
    assert not os.path.lexists(path)

    # The device comes back: healthy again.
    os.symlink("/dev/null", path)
    assert stream.next_update() == [("cxl0-0", "Healthy"), ("cxl0-1", "Healthy")]


def test_a_regular_file_is_not_a_dax_device(node_dir: Path, kubelet: FakeKubelet, run_node: RunNode) -> None:
    fake = node_dir / "dax1.0"
    fake.write_bytes(b"not a device")
    run_node([{"name": "cxl1", "backend": {"type": "devdax", "path": str(fake)}}])
    reg = kubelet.next_registration()
    assert kubelet.watch(reg.endpoint).next_update() == [(f"cxl1-{i}", "Unhealthy") for i in range(128)]
    assert fake.read_bytes() == b"not a device"


def test_preferred_allocation_and_prestart(node_dir: Path, kubelet: FakeKubelet, run_node: RunNode) -> None:
    run_node([shm_pool(node_dir, shares=6)])
    stub = kubelet.plugin(kubelet.next_registration().endpoint)
    got = stub.GetPreferredAllocation(
        pb.PreferredAllocationRequest(
            container_requests=[
                pb.ContainerPreferredAllocationRequest(
                    available_deviceIDs=["pool0-5", "pool0-1", "pool0-2"],
                    must_include_deviceIDs=["pool0-2"],
                    allocation_size=2,
                )
            ]
        ),
        timeout=10,
    )
    assert list(got.container_responses[0].deviceIDs) == ["pool0-2", "pool0-5"]
    assert stub.PreStartContainer(pb.PreStartContainerRequest(devices_ids=["pool0-0"]), timeout=10) == (
        pb.PreStartContainerResponse()
    )


def test_kubelet_restart_means_serve_and_register_again(
    node_dir: Path, kubelet: FakeKubelet, run_node: RunNode
) -> None:
    service = run_node([shm_pool(node_dir), dax_pool(node_dir)])
    wait_until(lambda: all(ep.registrations for ep in service.endpoints), "both plugins registered")
    before = {ep.pool.resource: ep.registrations for ep in service.endpoints}
    assert set(before) == {"gismo.io/pool0", "gismo.io/cxl0"}
    while not kubelet.registrations.empty():
        kubelet.registrations.get()

    kubelet.restart()  # the kubelet deletes the plugin sockets and serves kubelet.sock anew
    again = {kubelet.next_registration().resource_name for _ in range(2)}
    assert again == {"gismo.io/pool0", "gismo.io/cxl0"}
    for ep in service.endpoints:
        wait_until(
            lambda ep=ep: ep.registrations > before[ep.pool.resource], f"{ep.pool.resource} registered again"
        )
        wait_until(ep.serving, f"{ep.socket_path} served again")
        # The kubelet's new stream on the fresh socket sees the shares.
        assert kubelet.watch(ep.pool.socket_name).next_update()[0][1] == "Healthy"
    # A few more polls change nothing: once registered with this kubelet, a plugin stays quiet.
    polls = service.polls
    wait_until(lambda: service.polls >= polls + 5, "five more polls")
    assert {ep.pool.resource: ep.registrations for ep in service.endpoints} == {
        name: count + 1 for name, count in before.items()
    }


def test_no_kubelet_yet_then_registers_when_it_appears(
    node_dir: Path, plugin_dir: Path, run_node: RunNode
) -> None:
    service = run_node([shm_pool(node_dir)])
    ep = service.endpoints[0]
    wait_until(ep.serving, "the plugin socket")
    assert ep.registrations == 0
    late = FakeKubelet(str(plugin_dir))
    late.start()
    try:
        assert late.next_registration().resource_name == "gismo.io/pool0"
    finally:
        late.stop()


def test_refused_registration_is_retried_after_a_kubelet_restart(
    node_dir: Path, kubelet: FakeKubelet, run_node: RunNode
) -> None:
    kubelet.refuse = "resource name already taken"
    service = run_node([shm_pool(node_dir)])
    assert kubelet.next_registration().resource_name == "gismo.io/pool0"
    assert service.endpoints[0].registrations == 0
    kubelet.refuse = ""
    kubelet.restart()
    wait_until(lambda: service.endpoints[0].registrations == 1, "a registration the kubelet accepted")


def test_stop_removes_the_plugin_sockets(node_dir: Path, kubelet: FakeKubelet) -> None:
    import threading

    from nodefix import base_config

    from gismo.node.config import parse_config

    service = NodeService(parse_config(base_config(node_dir, Path(kubelet.plugin_dir), [shm_pool(node_dir)])))
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    sock = Path(kubelet.plugin_dir) / kubelet.next_registration().endpoint
    assert sock.is_socket()
    stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert not sock.exists()
    assert (Path(kubelet.plugin_dir) / "kubelet.sock").is_socket()  # the kubelet's own is left alone


def test_in_a_container_the_host_is_seen_under_host_root(node_dir: Path, kubelet: FakeKubelet) -> None:
    """As the chart runs it: host paths in the config and in Allocate, files found under hostRoot."""
    import threading

    from gismo.node.config import parse_config

    host = node_dir / "host"
    cfg = parse_config(
        {
            "pools": [
                {"name": "pool0", "capacity": "1Mi", "backend": {"type": "shm", "path": "/dev/shm/g/pool0"}}
            ],
            "pluginDir": kubelet.plugin_dir,
            "pollSeconds": 0.05,
            "hostRoot": str(host),
            "fileOwner": "keep",
        }
    )
    service = NodeService(cfg)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    try:
        reg = kubelet.next_registration()
        assert kubelet.watch(reg.endpoint).next_update()[0] == ("pool0-0", "Healthy")
        assert read_marker(str(host / "dev/shm/g/pool0")) is not None
        assert not os.path.exists("/dev/shm/g/pool0")
        answer = kubelet.plugin(reg.endpoint).Allocate(
            pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=["pool0-0"])]),
            timeout=10,
        )
        mount = answer.container_responses[0].mounts[0]
        assert (mount.host_path, mount.container_path) == ("/dev/shm/g/pool0", "/dev/shm/g/pool0")
    finally:
        stop.set()
        thread.join(timeout=30)
