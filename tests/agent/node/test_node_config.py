"""The node config: every refusal names the field and the rule; the defaults are the kubelet's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gismo.node.config import NodeConfigError, load_config, parse_config


def good() -> dict[str, Any]:
    return {
        "pools": [
            {"name": "pool0", "capacity": "64Gi", "backend": {"type": "shm", "path": "/dev/shm/gismo/pool0"}},
            {"name": "cxl0", "shares": 16, "backend": {"type": "devdax", "path": "/dev/dax0.0"}},
        ]
    }


def test_defaults() -> None:
    cfg = parse_config(good())
    assert cfg.plugin_dir == "/var/lib/kubelet/device-plugins"
    assert cfg.kubelet_socket == "/var/lib/kubelet/device-plugins/kubelet.sock"
    assert (cfg.file_uid, cfg.file_gid, cfg.file_mode) == (1000, 100, 0o660)
    shm, dax = cfg.pools
    assert (shm.resource, shm.capacity, shm.shares, shm.socket_name) == (
        "gismo.io/pool0", 64 << 30, 128, "gismo-pool0.sock",
    )  # fmt: skip
    assert (dax.resource, dax.capacity, dax.shares, dax.is_device) == ("gismo.io/cxl0", 0, 16, True)
    assert dax.device_ids()[:2] == ["cxl0-0", "cxl0-1"]


def edit(path: str, value: Any) -> dict[str, Any]:
    doc = good()
    target: Any = doc
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if value is KeyError:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("pools", [], "pools: must be a non-empty list"),
        ("pools.0.name", "Pool_0", "pools[0].name: 'Pool_0' must be a pool name of at most 63 characters"),
        ("pools.0.name", "p" * 64, "pools[0].name"),
        ("pools.0.nmae", "x", "pools[0].nmae: unknown field"),
        ("pools.0.backend.type", "nvme", "pools[0].backend.type: 'nvme' is not one of shm, famfs, devdax"),
        ("pools.0.backend.path", "dev/shm/p", "pools[0].backend.path: must be absolute"),
        ("pools.0.backend.path", "/dev/shm/../../etc/passwd", "pools[0].backend.path: must be normalized"),
        ("pools.0.backend.path", "/dev/shm/a\nb", "pools[0].backend.path: must not contain control"),
        ("pools.0.backend.path", "/etc/passwd", "pools[0].backend.path: /etc/passwd must be under /dev/shm"),
        ("pools.1.backend.path", "/dev/sda", "pools[1].backend.path: /dev/sda must be a DAX device daxN.M"),
        ("pools.1.backend.path", "/dev/shm/dax0.0", "pools[1].backend.path"),
        ("pools.0.capacity", KeyError, "pools[0].capacity: required for shm pools"),
        ("pools.0.capacity", "64Gx", "pools[0].capacity: '64Gx' is not a byte count"),
        ("pools.0.capacity", 1000, "pools[0].capacity: 1000 must be a positive multiple of 4096"),
        ("pools.0.shares", 0, "pools[0].shares: 0 must be an integer from 1 to 4096"),
        ("pools.0.shares", True, "pools[0].shares"),
        ("pools.1.name", "pool0", "pools[1].name: pool0 appears twice"),
        ("pools.1.backend", {"type": "shm", "path": "/dev/shm/gismo/pool0", "x": 1}, "pools[1].backend.x"),
        ("pollSeconds", 0, "pollSeconds: 0 must be a number from 0.01 to 60"),
        ("pluginDir", "relative", "pluginDir: must be absolute"),
        ("pluginDir", "/" + "d" * 90, "pools[0].name: the socket path"),
        ("fileMode", 0o666, "fileMode: 438 must grant the owner rw and nothing beyond 0o660"),
        ("fileOwner", {"uid": -1, "gid": 100}, "fileOwner.uid: -1 must be an integer id"),
        ("fileRoots", [], "fileRoots: must be a non-empty list"),
        ("extra", 1, "extra: unknown field"),
    ],
)
def test_refusals_name_the_field_and_rule(path: str, value: Any, message: str) -> None:
    with pytest.raises(NodeConfigError) as info:
        parse_config(edit(path, value))
    assert message in str(info.value)


def test_load_from_file_or_env(tmp_path: Path) -> None:
    f = tmp_path / "node.json"
    f.write_text(json.dumps(good()))
    assert load_config(str(f)).pools[0].name == "pool0"
    assert load_config(environ={"GISMO_NODE_CONFIG": str(f)}).pools[1].name == "cxl0"
    with pytest.raises(NodeConfigError, match="no config: pass --config or set GISMO_NODE_CONFIG"):
        load_config(environ={})
    f.write_text("{not json")
    with pytest.raises(NodeConfigError, match=f"{f}: not JSON"):
        load_config(str(f))
    with pytest.raises(NodeConfigError, match="cannot read it"):
        load_config(str(tmp_path / "missing.json"))
