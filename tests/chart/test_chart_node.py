"""The node component in the chart (templates/node.yaml), rendered by the real helm: one ConfigMap and
one DaemonSet per pool, valid Kubernetes objects (kubernetes-validate, strict), a config the node
component's own validator accepts, and no more privilege than a device plugin needs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from chartkit import (
    NAMESPACE,
    VALUES_DIR,
    Doc,
    find,
    find_all,
    helm,
    render,
    render_with,
    template_args,
    validate_builtin,
)

from gismo.contract import AGENT_GID
from gismo.node.config import parse_config

EXTRA_POOLS = [
    {
        "name": "shm1",
        "capacity": "8Gi",
        "backend": {"type": "shm", "path": "/dev/shm/gismo/shm1"},
        "shares": 8,
    },
    {
        "name": "fam0",
        "capacity": "16Gi",
        "backend": {"type": "famfs", "path": "/mnt/famfs/pool"},
        "nodeSelector": {"gismo.io/famfs": "yes"},
    },
]


def render_pools(*extra: str) -> list[Doc]:
    return render_with(
        "-f", str(VALUES_DIR / "pool.yaml"), "--set-json", f"node.pools={json.dumps(EXTRA_POOLS)}",
        "--set", "node.fileRoots={/dev/shm,/mnt/famfs}", *extra,
    )  # fmt: skip


def daemonsets(docs: list[Doc]) -> dict[str, Doc]:
    return {d["metadata"]["labels"]["gismo.io/pool"]: d for d in find_all(docs, "DaemonSet")}


def node_config(docs: list[Doc], pool: str) -> dict[str, Any]:
    cm = find(docs, "ConfigMap", f"gismo-node-{pool}")
    loaded: dict[str, Any] = json.loads(cm["data"]["node.json"])
    return loaded


@pytest.fixture(scope="module")
def docs() -> list[Doc]:
    return render_pools()


def test_one_valid_daemonset_and_config_per_pool(docs: list[Doc]) -> None:
    sets = daemonsets(docs)
    assert sorted(sets) == ["cxl0", "fam0", "shm1"]
    for doc in [*sets.values(), *find_all(docs, "ConfigMap")]:
        validate_builtin(doc)
        assert doc["metadata"]["namespace"] == NAMESPACE
    assert len(find_all(docs, "ConfigMap")) == 3


def test_the_rendered_config_is_accepted_by_gismo_node(docs: list[Doc]) -> None:
    for name, backend, shares in (("cxl0", "devdax", 128), ("shm1", "shm", 8), ("fam0", "famfs", 128)):
        cfg = parse_config(node_config(docs, name))  # the node component's own validator
        (pool,) = cfg.pools
        assert (pool.name, pool.backend, pool.shares, pool.resource) == (
            name,
            backend,
            shares,
            f"gismo.io/{name}",
        )
        assert cfg.host_root == "/host"
        assert cfg.plugin_dir == "/var/lib/kubelet/device-plugins"
    assert parse_config(node_config(docs, "shm1")).pools[0].capacity == 8 << 30


def _volumes(ds: Doc) -> dict[str, Doc]:
    return {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}


def _mounts(ds: Doc) -> dict[str, Doc]:
    (container,) = ds["spec"]["template"]["spec"]["containers"]
    return {m["name"]: m for m in container["volumeMounts"]}


def test_host_paths_are_the_plugin_folder_and_the_pools_folder_only(docs: list[Doc]) -> None:
    expected = {
        "cxl0": ("/dev", "Directory", True),
        "shm1": ("/dev/shm/gismo", "DirectoryOrCreate", False),
        "fam0": ("/mnt/famfs", "Directory", False),
    }
    for name, ds in daemonsets(docs).items():
        volumes, mounts = _volumes(ds), _mounts(ds)
        host = {k: v["hostPath"] for k, v in volumes.items() if "hostPath" in v}
        assert sorted(host) == ["device-plugins", "pool"]
        assert host["device-plugins"] == {"path": "/var/lib/kubelet/device-plugins", "type": "Directory"}
        folder, kind, read_only = expected[name]
        assert host["pool"] == {"path": folder, "type": kind}
        # The host's folder appears under hostRoot, where the config says gismo node looks.
        assert mounts["pool"]["mountPath"] == node_config(docs, name)["hostRoot"] + folder
        assert mounts["pool"].get("readOnly", False) is read_only
        assert mounts["device-plugins"]["mountPath"] == "/var/lib/kubelet/device-plugins"
        # The config file the container reads is the ConfigMap's.
        (container,) = ds["spec"]["template"]["spec"]["containers"]
        assert container["args"] == ["node", "--config", mounts["config"]["mountPath"] + "/node.json"]
        assert volumes["config"]["configMap"]["name"] == ds["metadata"]["name"]


def test_least_privilege(docs: list[Doc]) -> None:
    for ds in daemonsets(docs).values():
        spec = ds["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
        assert spec["securityContext"]["supplementalGroups"] == [AGENT_GID]
        assert container["resources"]["requests"] and container["resources"]["limits"]


def test_scheduled_on_the_pools_nodes_with_the_node_image(docs: list[Doc]) -> None:
    sets = daemonsets(docs)
    assert sets["cxl0"]["spec"]["template"]["spec"]["nodeSelector"] == {
        "kubernetes.io/os": "linux",
        "gismo.io/cxl": "true",
    }
    assert sets["fam0"]["spec"]["template"]["spec"]["nodeSelector"]["gismo.io/famfs"] == "yes"
    assert sets["shm1"]["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}
    for ds in sets.values():
        (container,) = ds["spec"]["template"]["spec"]["containers"]
        assert container["image"] == "gismo-node:0.1.0"
        labels = ds["spec"]["template"]["metadata"]["labels"]
        assert ds["spec"]["selector"]["matchLabels"] == labels
        assert labels["app.kubernetes.io/component"] == "node"


def test_own_image_and_off_switch() -> None:
    docs = render_pools(
        "--set", "node.image.repository=registry.example.com/gismo-node", "--set-string", "node.image.tag=1"
    )
    for ds in daemonsets(docs).values():
        assert ds["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example.com/gismo-node:1"
    assert not find_all(render_pools("--set", "node.enabled=false"), "DaemonSet")
    assert not find_all(render("default"), "DaemonSet")  # no pool, nothing to serve


def test_the_config_checksum_rolls_the_pods() -> None:
    a = daemonsets(render_pools())["cxl0"]["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    b = daemonsets(render_pools("--set", "node.shares=64"))["cxl0"]
    assert b["spec"]["template"]["metadata"]["annotations"]["checksum/config"] != a


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--set", "pool.create=true", "--set", "pool.name=" + "a" * 64],
            "must be at most 63 characters of lower-case letters",
        ),
        (
            ["--set-json", 'node.pools=[{"name":"s","backend":{"type":"shm","path":"/dev/shm/s"}}]'],
            'pool "s" is shm and needs a capacity',
        ),
        (["--set", "node.shares=0"], "/node/shares"),
        (
            ["--set-json", 'node.pools=[{"name":"x","backend":{"type":"nvme","path":"/x"}}]'],
            "/node/pools/0/backend/type",
        ),
        (
            ["--set-json", 'node.pools=[{"name":"x","backend":{"type":"shm","path":"/x/"}}]'],
            "/node/pools/0/backend/path",
        ),
        (["--set", "node.pluginDir=relative"], "/node/pluginDir"),
    ],
)
def test_bad_node_values_fail_naming_the_field(args: list[str], message: str) -> None:
    result = helm(*template_args(*args))
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
