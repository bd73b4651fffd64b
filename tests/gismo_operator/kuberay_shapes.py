"""Every Ray pod shape KubeRay v1.7 builds for the samples in tests/fixtures/kuberay: the pods the
injection and webhook tests run on (built by gismo_operator.testing.kuberay_sim, as the mutating
webhooks receive them: with the API server's defaults).

``SHAPES`` holds one head pod per sample and one worker pod per worker group (replica count aside,
pods of a group are identical); ``redis_cleanup_pods()`` the Redis cleanup Job's pod of the samples
with GCS fault tolerance.
"""

from __future__ import annotations

import copy
import functools
import uuid
from pathlib import Path
from typing import Any

import yaml

from gismo_operator.testing import kuberay_sim

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "kuberay" / "samples"
if not SAMPLES.is_dir():  # never skip: these shapes are the proof the operator handles KubeRay's pods
    raise RuntimeError(f"KubeRay's samples are expected at {SAMPLES} (tests/fixtures/kuberay)")

Body = dict[str, Any]


@functools.cache
def _clusters() -> tuple[tuple[str, Body], ...]:
    out = []
    for path in sorted(SAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "RayCluster":
                meta = doc.setdefault("metadata", {})
                meta.setdefault("namespace", "default")
                meta["uid"] = str(uuid.UUID(int=len(out) + 1))
                out.append((path.stem.removeprefix("ray-cluster."), doc))
    return tuple(out)


def clusters() -> list[tuple[str, Body]]:
    """(sample name, RayCluster) for every sample; fresh copies."""
    return [(name, copy.deepcopy(body)) for name, body in _clusters()]


@functools.cache
def _shapes() -> tuple[tuple[str, Body], ...]:
    out = []
    for name, rc in _clusters():
        out.append((f"{name}/head", kuberay_sim.pod_for(rc, "head")))
        for group in rc["spec"].get("workerGroupSpecs") or []:
            out.append((f"{name}/{group['groupName']}", kuberay_sim.pod_for(rc, "worker", group)))
    return tuple(out)


def shapes() -> list[tuple[str, Body]]:
    """(id, pod) for every head and worker-group shape; fresh copies."""
    return [(sid, copy.deepcopy(pod)) for sid, pod in _shapes()]


SHAPE_IDS = [sid for sid, _ in _shapes()]


def shape(shape_id: str) -> Body:
    return copy.deepcopy(dict(_shapes())[shape_id])


def redis_cleanup_pods() -> list[Body]:
    return [
        kuberay_sim.redis_cleanup_pod(rc)
        for _, rc in _clusters()
        if rc["spec"].get("gcsFaultToleranceOptions")
    ]
