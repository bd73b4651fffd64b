"""Reading an agent's refusal from a pod's container statuses (pure)."""

from __future__ import annotations

from typing import Any

from gismo.contract import AGENT_EXIT_REFUSED
from gismo_operator.constants import AGENT_CONTAINER
from gismo_operator.core import agentrefusal


def _pod(*statuses: dict[str, Any], key: str = "initContainerStatuses") -> dict[str, Any]:
    return {"metadata": {"name": "p"}, "status": {key: list(statuses)}}


def _terminated(
    code: int, message: str = "", where: str = "lastState", name: str = AGENT_CONTAINER
) -> dict[str, Any]:
    term: dict[str, Any] = {"exitCode": code, "reason": "Error"}
    if message:
        term["message"] = message
    return {"name": name, "ready": False, where: {"terminated": term}}


def test_a_refusal_is_the_agents_exit_with_its_message() -> None:
    why = "/dev/shm/gismo-pool0: not a Gismo pool file; refusing to use it"
    assert agentrefusal.refusal(_pod(_terminated(AGENT_EXIT_REFUSED, why + "\n"))) == why
    # Waiting to be restarted (state) or restarted since (lastState); a sidecar or a plain container.
    assert agentrefusal.refusal(_pod(_terminated(AGENT_EXIT_REFUSED, why, where="state"))) == why
    assert agentrefusal.refusal(_pod(_terminated(AGENT_EXIT_REFUSED, why), key="containerStatuses")) == why
    assert agentrefusal.refusal(_pod(_terminated(AGENT_EXIT_REFUSED))) == "(the agent left no message)"
    long = agentrefusal.refusal(_pod(_terminated(AGENT_EXIT_REFUSED, "x" * 5000)))
    assert long is not None and len(long) == agentrefusal.MAX_MESSAGE


def test_anything_else_is_no_refusal() -> None:
    assert agentrefusal.refusal({}) is None
    assert agentrefusal.refusal(_pod(_terminated(2, "region served by another agent"))) is None  # a crash
    assert agentrefusal.refusal(_pod(_terminated(0))) is None  # stopped with its pod
    assert agentrefusal.refusal(_pod(_terminated(AGENT_EXIT_REFUSED, "x", name="ray-head"))) is None
    running = {"name": AGENT_CONTAINER, "state": {"running": {}}, "lastState": {}}
    assert agentrefusal.refusal(_pod(running)) is None
    garbage: dict[str, Any] = {
        "status": {"initContainerStatuses": ["x", {"name": AGENT_CONTAINER, "state": 7}]}
    }
    assert agentrefusal.refusal(garbage) is None


def test_messages_name_the_pod_and_the_reason() -> None:
    assert "pod p refuses" in agentrefusal.pod_message("p", "why") and "why" in agentrefusal.pod_message(
        "p", "why"
    )
    assert "Ray pod p" in agentrefusal.cluster_message("p", "why")
