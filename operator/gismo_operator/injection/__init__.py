"""Pure builders for the pod patch: agent sidecar, volumes, env, node affinity, annotations.

Nothing here talks to the API; the webhook (``gismo_operator.handlers.raypods``) builds an
:class:`InjectionPlan` and calls :func:`inject_pod`.
"""

from gismo_operator.injection.affinity import merge_node_affinity
from gismo_operator.injection.plan import AgentSpec, InjectionPlan
from gismo_operator.injection.pod import InjectionError, inject_pod, is_injected, mark_skipped

__all__ = [
    "AgentSpec",
    "InjectionError",
    "InjectionPlan",
    "inject_pod",
    "is_injected",
    "mark_skipped",
    "merge_node_affinity",
]
