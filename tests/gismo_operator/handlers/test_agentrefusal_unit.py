"""GismoAgentRefused at unit level: which Events a refusal posts, and how often (no API)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from gismo.contract import AGENT_EXIT_REFUSED
from gismo_operator import context as context_module
from gismo_operator.constants import AGENT_CONTAINER, REASON_AGENT_REFUSED
from gismo_operator.context import OperatorContext
from gismo_operator.handlers import agentrefusal


class Recording(OperatorContext):
    """A context whose Events are recorded instead of posted."""

    def __init__(self) -> None:
        super().__init__()
        self.posted: list[tuple[str, str, str, str]] = []

    def post_event(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        meta = involved.get("metadata") or {}
        self.posted.append((str(involved.get("kind")), str(meta.get("name")), type_, reason))


@pytest.fixture()
def ctx() -> Iterator[Recording]:
    previous = context_module._current
    rec = Recording()
    context_module.install(rec)
    yield rec
    context_module._current = previous


def _pod(name: str, message: str | None, restarts: int = 1) -> dict[str, Any]:
    status: dict[str, Any] = {"name": AGENT_CONTAINER, "restartCount": restarts, "state": {"running": {}}}
    if message is not None:
        status["lastState"] = {"terminated": {"exitCode": AGENT_EXIT_REFUSED, "message": message}}
    return {
        "metadata": {
            "name": name,
            "namespace": "ray",
            "uid": f"uid-{name}",
            "labels": {"ray.io/cluster": "rc"},
        },
        "status": {"initContainerStatuses": [status]},
    }


def test_once_per_pod_and_message_on_the_pod_and_its_cluster(ctx: Recording) -> None:
    assert not agentrefusal.report(_pod("a", None))  # serving: nothing
    assert agentrefusal.report(_pod("a", "no pool file"))
    assert ctx.posted == [
        ("Pod", "a", "Warning", REASON_AGENT_REFUSED),
        ("RayCluster", "rc", "Warning", REASON_AGENT_REFUSED),
    ]
    assert agentrefusal.report(_pod("a", "no pool file", restarts=2))  # refused again after a restart
    assert agentrefusal.report(_pod("b", "no pool file"))  # another pod of the cluster
    assert agentrefusal.report(_pod("a", "no pool file", restarts=3))  # pods by turns: no repeat
    assert [p[:2] for p in ctx.posted[2:]] == [("Pod", "b"), ("RayCluster", "rc")]
    assert agentrefusal.report(_pod("a", "region served by another pod"))  # a new reason: said again
    assert [p[:2] for p in ctx.posted[4:]] == [("Pod", "a"), ("RayCluster", "rc")]
    agentrefusal.forget(_pod("a", None))
    agentrefusal.forget(_pod("b", None))
    assert not ctx.warned  # what was remembered goes with the pods
