"""What KubeRay and the API server do for a RayCluster, played by hand (no cluster): the one place the
demo, the operator tests and the webhook benchmark get their Ray pods and AdmissionReviews from.

KubeRay turns a RayCluster into pods (:mod:`gismo_operator.testing.kuberay_pods` builds them as
KubeRay v1.7 does, with the API server's defaults: ``pod_for``/``pods_for`` here). The API server
then sends each pod CREATE to the mutating webhooks as an AdmissionReview v1 over HTTPS and stores
the pod with the returned JSON patch applied (then fills in name and uid). This module builds
those requests, so the demo exercises the operator's real webhook path. Cost: microseconds per
pod, plus one HTTPS round-trip.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import ssl
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import jsonpatch
import yaml

from gismo_operator.constants import WEBHOOK_MUTATE_RAYPOD
from gismo_operator.testing.kuberay_pods import (
    build_pod,
    desired_workers,
    generate_name,
    pod_for,
    pods_for,
    redis_cleanup_pod,
)

__all__ = [
    "admission_review", "admit", "apply_admission", "build_pod", "desired_workers", "generate_name",
    "load_manifest", "load_raycluster", "pod_for", "pods_for", "redis_cleanup_pod",
]  # fmt: skip

Body = dict[str, Any]


#: Used when ``examples/raycluster.yaml`` is absent: KubeRay's ``ray-cluster.sample.yaml`` (v1.4)
#: with the opt-in annotation, 2 workers (up to 3), and requests sized for a laptop.
FALLBACK_RAYCLUSTER = """
apiVersion: ray.io/v1
kind: RayCluster
metadata:
  name: raycluster-gismo
  namespace: default
  annotations:
    gismo.io/pool: pool0
spec:
  rayVersion: "2.52.0"
  headGroupSpec:
    rayStartParams: {}
    template:
      spec:
        containers:
        - name: ray-head
          image: rayproject/ray:2.52.0
          resources:
            limits: {cpu: "1", memory: 2Gi}
            requests: {cpu: "1", memory: 2Gi}
          ports:
          - {containerPort: 6379, name: gcs-server}
          - {containerPort: 8265, name: dashboard}
          - {containerPort: 10001, name: client}
  workerGroupSpecs:
  - groupName: workergroup
    replicas: 2
    minReplicas: 1
    maxReplicas: 3
    rayStartParams: {}
    template:
      spec:
        containers:
        - name: ray-worker
          image: rayproject/ray:2.52.0
          resources:
            limits: {cpu: "1", memory: 1Gi}
            requests: {cpu: "1", memory: 1Gi}
"""


def load_raycluster(path: Path) -> tuple[Body, str]:
    """The first RayCluster in ``path``, or :data:`FALLBACK_RAYCLUSTER` when the file is absent;
    with where it came from (for the demo's output)."""
    if path.is_file():
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "RayCluster":
                return doc, str(path)
        raise ValueError(f"{path}: no RayCluster in it")
    body = yaml.safe_load(FALLBACK_RAYCLUSTER)
    assert isinstance(body, dict)
    return body, "built-in (KubeRay sample + gismo.io/pool annotation)"


def load_manifest(path: Path, kind: str) -> Body:
    """The first object of ``kind`` in a YAML file."""
    for doc in yaml.safe_load_all(path.read_text()):
        if isinstance(doc, dict) and doc.get("kind") == kind:
            return doc
    raise ValueError(f"{path}: no {kind} in it")


def admission_review(
    pod: Mapping[str, Any],
    user: str = "system:serviceaccount:ray-system:kuberay-operator",
    *,
    dry_run: bool = False,
) -> Body:
    """An AdmissionReview v1 for a Pod CREATE, as the API server sends it."""
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": pod["metadata"].get("namespace", "default"),
            "operation": "CREATE",
            "userInfo": {"username": user, "groups": ["system:serviceaccounts"]},
            "object": dict(pod),
            "oldObject": None,
            "dryRun": dry_run,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def apply_admission(pod: Mapping[str, Any], response: Mapping[str, Any]) -> Body:
    """The pod after the API server applied the webhook's answer (a JSON patch, or nothing)."""
    if not response.get("allowed"):
        status = response.get("status") or {}
        raise RuntimeError(f"the webhook denied the pod: {status.get('message') or response}")
    if not response.get("patch"):
        return copy.deepcopy(dict(pod))
    if response.get("patchType") != "JSONPatch":
        raise RuntimeError(f"unexpected patchType {response.get('patchType')!r}")
    ops = json.loads(base64.b64decode(response["patch"]))
    result: Body = jsonpatch.apply_patch(copy.deepcopy(dict(pod)), ops)
    return result


async def admit(
    session: aiohttp.ClientSession, webhook_url: str, context: ssl.SSLContext, pod: Mapping[str, Any]
) -> Body:
    """POST the pod's AdmissionReview to ``/mutate-raypod`` over HTTPS; return the review's ``response``.

    Retries briefly while kopf answers 404 (right after start-up it may not serve the path yet).
    """
    review = admission_review(pod)
    for _ in range(100):
        async with session.post(f"{webhook_url}/{WEBHOOK_MUTATE_RAYPOD}", json=review, ssl=context) as resp:
            if resp.status == 404:
                await asyncio.sleep(0.05)
                continue
            text = await resp.text()
            if resp.status != 200:
                raise RuntimeError(f"webhook HTTP {resp.status}: {text[:500]}")
            answer = json.loads(text)
            if answer.get("response", {}).get("uid") != review["request"]["uid"]:
                raise RuntimeError(f"webhook answered another request: {text[:500]}")
            result: Body = answer["response"]
            return result
    raise RuntimeError(f"{webhook_url}/{WEBHOOK_MUTATE_RAYPOD} kept answering 404")
