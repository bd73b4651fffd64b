"""A pod whose agent refuses its region gets a GismoAgentRefused Warning, on the pod and on its
RayCluster, with the agent's message, once (kmock): the operator reads the agent container's status,
where the kubelet puts the termination message of the degraded agent when it exits."""

from __future__ import annotations

from typing import Any

import kmock
from _ray_fixtures import (
    NS,
    kuberay_pod,
    opted_in_cluster,
    running_operator,
)

from gismo.contract import AGENT_EXIT_REFUSED, AGENT_TERMINATION_LOG
from gismo.testing import wait_until_async
from gismo_operator import kube
from gismo_operator.constants import AGENT_CONTAINER, REASON_AGENT_REFUSED

WHY = "/dev/shm/gismo-pool-a: not the Gismo pool file of 'pool-a'; refusing to use it"


def _agent_status(restarts: int, message: str) -> dict[str, Any]:
    """The agent container's status as the kubelet reports it after a degraded spell."""
    return {
        "name": AGENT_CONTAINER, "ready": False, "started": True, "restartCount": restarts,
        "state": {"running": {"startedAt": "2026-12-01T12:00:00Z"}},
        "lastState": {"terminated": {"exitCode": AGENT_EXIT_REFUSED, "reason": "Error", "message": message}},
    }  # fmt: skip


async def test_a_refusing_agent_shows_as_a_warning_on_the_pod_and_its_cluster(
    api: kmock.KubernetesEmulator,
) -> None:
    async with running_operator(api) as op:
        rc = await opted_in_cluster(op)
        pod = await op.create_pod(kuberay_pod(rc, "head"), node="node-1")  # through the webhook
        agent = next(c for c in pod["spec"]["initContainers"] if c["name"] == AGENT_CONTAINER)
        # Where the degraded agent writes, so the kubelet can report it.
        assert agent["terminationMessagePath"] == AGENT_TERMINATION_LOG
        name = pod["metadata"]["name"]
        assert not await op.events(REASON_AGENT_REFUSED)  # a pod whose agent serves: nothing
        for restarts in (1, 2):  # the agent is restarted after each spell and refuses again
            await op.client.patch(
                kube.PODS, name, {"status": {"initContainerStatuses": [_agent_status(restarts, WHY)]}}, NS
            )

            async def both() -> list[dict[str, Any]]:
                found = await op.events(REASON_AGENT_REFUSED)
                on = {e["involvedObject"]["kind"]: e for e in found}
                return found if {"Pod", "RayCluster"} <= set(on) else []

            found = await wait_until_async(both, "GismoAgentRefused on the pod and its RayCluster")
        assert len(found) == 2, [e["message"] for e in found]  # once, not once per restart
        assert all(e["type"] == "Warning" and WHY in e["message"] for e in found)
        on = {e["involvedObject"]["kind"]: e["involvedObject"]["name"] for e in found}
        assert on == {"Pod": name, "RayCluster": rc["metadata"]["name"]}
