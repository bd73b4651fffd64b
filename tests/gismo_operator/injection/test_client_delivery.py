"""Client delivery in the pod patch: the shared volume, the agent's delivery step, the Ray container's
PYTHONPATH (the user's kept, value or valueFrom, through Kubernetes' ``$(VAR)`` expansion), and the
annotation that turns it off."""

from __future__ import annotations

import re
from typing import Any

import pytest
from test_patch_injection import kuberay_pod, plan

from gismo_operator.constants import (
    ANN_DELIVER_CLIENT,
    CLIENT_DIR,
    CLIENT_VOLUME,
    CLIENT_VOLUME_SIZE,
    ENV_USER_PYTHONPATH,
)
from gismo_operator.injection import InjectionError, inject_pod
from gismo_operator.injection.containers import AGENT_DELIVERY_ARGS, with_client_on_python_path


def expand(env: list[dict[str, Any]], resolved: dict[str, str]) -> dict[str, str]:
    """Kubernetes' dependent-variable expansion: ``$(VAR)`` takes VAR's value defined earlier in the
    list (``valueFrom`` entries resolve to ``resolved[name]``, or stand for themselves: KubeRay's pods
    carry fieldRef env); unknown references stay as written."""
    out: dict[str, str] = {}
    for entry in env:
        raw = entry["value"] if "value" in entry else resolved.get(entry["name"], f"<{entry['name']}>")
        out[entry["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: out.get(m[1], m[0]), raw)
    return out


def ray_and_agent(pod: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    out = inject_pod(pod, plan())
    return out["spec"]["containers"][0], out["spec"]["initContainers"][-1]


def test_the_agent_delivers_into_a_volume_the_ray_container_reads() -> None:
    out = inject_pod(kuberay_pod(), plan())
    volumes = {v["name"]: v for v in out["spec"]["volumes"]}
    assert volumes[CLIENT_VOLUME] == {"name": CLIENT_VOLUME, "emptyDir": {"sizeLimit": CLIENT_VOLUME_SIZE}}
    ray, agent = out["spec"]["containers"][0], out["spec"]["initContainers"][-1]
    assert agent["command"] == ["gismo", "agent"] and agent["args"] == list(AGENT_DELIVERY_ARGS)
    assert agent["args"] == ["--deliver-to", CLIENT_DIR]
    assert {"name": CLIENT_VOLUME, "mountPath": CLIENT_DIR} in agent["volumeMounts"]
    assert {"name": CLIENT_VOLUME, "mountPath": CLIENT_DIR, "readOnly": True} in ray["volumeMounts"]
    assert expand(ray["env"], {})["PYTHONPATH"] == CLIENT_DIR


def test_a_plain_user_pythonpath_is_kept_first() -> None:
    pod = kuberay_pod()
    pod["spec"]["containers"][0]["env"].append({"name": "PYTHONPATH", "value": "/app:/lib"})
    ray, _agent = ray_and_agent(pod)
    names = [e["name"] for e in ray["env"]]
    assert names.count("PYTHONPATH") == 1
    assert names.index(ENV_USER_PYTHONPATH) < names.index("PYTHONPATH")
    assert expand(ray["env"], {})["PYTHONPATH"] == f"/app:/lib:{CLIENT_DIR}"


def test_a_value_from_pythonpath_is_kept_through_dependent_expansion() -> None:
    source = {"configMapKeyRef": {"name": "paths", "key": "pythonpath"}}
    pod = kuberay_pod()
    pod["spec"]["containers"][0]["env"] += [
        {"name": "PYTHONPATH", "valueFrom": source},
        {"name": "LATER", "value": "$(PYTHONPATH):/x"},  # a reference after it still resolves
    ]
    ray, _agent = ray_and_agent(pod)
    renamed = next(e for e in ray["env"] if e["name"] == ENV_USER_PYTHONPATH)
    assert renamed == {"name": ENV_USER_PYTHONPATH, "valueFrom": source}
    env = expand(ray["env"], {ENV_USER_PYTHONPATH: "/from/configmap"})
    assert env["PYTHONPATH"] == f"/from/configmap:{CLIENT_DIR}"
    assert env["LATER"] == f"/from/configmap:{CLIENT_DIR}:/x"


def test_the_input_env_is_not_mutated() -> None:
    env = [{"name": "PYTHONPATH", "value": "/a"}]
    with_client_on_python_path(env)
    assert env == [{"name": "PYTHONPATH", "value": "/a"}]


def test_the_annotation_turns_delivery_off() -> None:
    pod = kuberay_pod()
    pod["metadata"]["annotations"] = {ANN_DELIVER_CLIENT: "false"}
    pod["spec"]["containers"][0]["env"].append({"name": "PYTHONPATH", "value": "/app"})
    out = inject_pod(pod, plan())
    ray, agent = out["spec"]["containers"][0], out["spec"]["initContainers"][-1]
    assert CLIENT_VOLUME not in {v["name"] for v in out["spec"]["volumes"]}
    assert "args" not in agent
    assert CLIENT_VOLUME not in {m["name"] for m in ray["volumeMounts"] + agent["volumeMounts"]}
    assert [e for e in ray["env"] if "PYTHONPATH" in e["name"]] == [{"name": "PYTHONPATH", "value": "/app"}]


@pytest.mark.parametrize("value", ["False", "no", "0", ""])
def test_a_bad_annotation_value_names_the_annotation(value: str) -> None:
    pod = kuberay_pod()
    pod["metadata"]["annotations"] = {ANN_DELIVER_CLIENT: value}
    with pytest.raises(InjectionError, match=re.escape(f"metadata.annotations[{ANN_DELIVER_CLIENT}]")):
        inject_pod(pod, plan())
