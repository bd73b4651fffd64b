"""The webhook's rendered pods from KubeRay's sample carry the client delivery: the shared volume, the
agent's delivery step, and the Ray container's PYTHONPATH; a pod annotated off gets none of it."""

from __future__ import annotations

from typing import Any

import kmock
from _ray_fixtures import (
    apply_response,
    kuberay_pod,
    opted_in_cluster,
    running_operator,
)

from gismo_operator.constants import ANN_DELIVER_CLIENT, CLIENT_DIR, CLIENT_VOLUME, ENV_USER_PYTHONPATH


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container.get("env", [])}


async def test_kuberay_sample_pods_get_the_delivered_client(api: kmock.KubernetesEmulator) -> None:
    async with running_operator(api) as op:
        rc = await opted_in_cluster(op, capacity="64Mi")

        head = kuberay_pod(rc, "head")
        head["spec"]["containers"][0]["env"].append({"name": "PYTHONPATH", "value": "/home/ray/app"})
        admitted = apply_response(head, await op.admit(head))
        spec = admitted["spec"]
        ray, agent = spec["containers"][0], spec["initContainers"][-1]
        assert {v["name"]: v for v in spec["volumes"]}[CLIENT_VOLUME]["emptyDir"]
        assert agent["command"] == ["gismo", "agent"] and agent["args"] == ["--deliver-to", CLIENT_DIR]
        assert {"name": CLIENT_VOLUME, "mountPath": CLIENT_DIR} in agent["volumeMounts"]
        assert {"name": CLIENT_VOLUME, "mountPath": CLIENT_DIR, "readOnly": True} in ray["volumeMounts"]
        env = _env(ray)
        assert env[ENV_USER_PYTHONPATH]["value"] == "/home/ray/app"
        assert env["PYTHONPATH"]["value"] == f"$({ENV_USER_PYTHONPATH}):{CLIENT_DIR}"
        assert ray["image"].startswith("rayproject/ray")  # the stock image, unchanged

        worker = kuberay_pod(rc, "worker")
        # KubeRay sends a worker without annotations: this one comes from the group's template.
        worker["metadata"].setdefault("annotations", {})[ANN_DELIVER_CLIENT] = "false"
        plain = apply_response(worker, await op.admit(worker))
        assert CLIENT_VOLUME not in {v["name"] for v in plain["spec"]["volumes"]}
        assert "PYTHONPATH" not in _env(plain["spec"]["containers"][0])
        assert "args" not in plain["spec"]["initContainers"][-1]
        assert "gismo.io/region" in plain["metadata"]["annotations"]  # still injected
