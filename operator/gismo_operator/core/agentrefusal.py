"""Whether a Ray pod's agent refused its region, from the pod's container statuses (pure).

A degraded agent (gismo.daemon.degraded) writes why to its termination message file and, after its
retry interval, exits with ``gismo.contract.AGENT_EXIT_REFUSED``; the kubelet then records that exit,
message included, in the agent container's status (``state.terminated`` while it waits to be
restarted, ``lastState.terminated`` after). These are real container status fields of the API server:
nothing here depends on the agent reaching the API.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gismo.contract import AGENT_EXIT_REFUSED
from gismo_operator.constants import AGENT_CONTAINER

#: At most this many characters of the agent's message in an Event (the kubelet keeps 4096 bytes).
MAX_MESSAGE = 1024


def refusal(pod: Mapping[str, Any]) -> str | None:
    """The agent's own words when its last exit was a refusal of its region; None otherwise.

    The agent is a native sidecar (an init container) or, on clusters without sidecars, a plain
    container: both lists are searched. A refusal without a message says so.
    """
    status = pod.get("status") or {}
    for key in ("initContainerStatuses", "containerStatuses"):
        for st in status.get(key) or ():
            if not isinstance(st, Mapping) or st.get("name") != AGENT_CONTAINER:
                continue
            for state in (st.get("state"), st.get("lastState")):
                term = (state or {}).get("terminated") if isinstance(state, Mapping) else None
                if isinstance(term, Mapping) and term.get("exitCode") == AGENT_EXIT_REFUSED:
                    message = str(term.get("message") or "").strip()
                    return message[:MAX_MESSAGE] or "(the agent left no message)"
    return None


def pod_message(pod_name: str, reason: str) -> str:
    return (
        f"the Gismo agent of pod {pod_name} refuses its region, so Ray uses its own object store there: "
        f"{reason} (the agent retries after its retry interval)"
    )


def cluster_message(pod_name: str, reason: str) -> str:
    return f"Ray pod {pod_name} runs without Gismo: its agent refuses its region: {reason}"
