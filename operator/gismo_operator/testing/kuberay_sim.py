"""What KubeRay and the API server do for a RayCluster, played by hand (no cluster): the one place the
demo, the operator tests and the webhook benchmark get their Ray pods and AdmissionReviews from.

KubeRay turns a RayCluster into pods: ``generateName`` ``<cluster>-head-`` / ``<cluster>-<group>-worker-``,
its ``ray.io/*`` labels, a controller ownerReference, ``containers[0]`` the Ray container, and the
``shared-mem`` emptyDir at /dev/shm. The API server then sends each pod CREATE to the mutating
webhooks as an AdmissionReview v1 over HTTPS and stores the pod with the returned JSON patch
applied (then fills in name and uid). This module builds those objects and requests, so the demo
exercises the operator's real webhook path. Cost: microseconds per pod, plus one HTTPS round-trip.
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

from gismo_operator.constants import LABEL_CLUSTER, LABEL_IS_RAY_NODE, LABEL_NODE_TYPE, WEBHOOK_MUTATE_RAYPOD

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


def _owner(raycluster: Mapping[str, Any]) -> Body:
    meta = raycluster["metadata"]
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "name": meta["name"],
        "uid": meta.get("uid", ""),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def pod_for(raycluster: Mapping[str, Any], node_type: str, group: Mapping[str, Any] | None = None) -> Body:
    """A Ray pod as KubeRay builds it (no name, no uid: the API server adds them)."""
    meta = raycluster["metadata"]
    cluster = meta["name"]
    namespace = meta.get("namespace", "default")
    if node_type == "head":
        template, group_name = raycluster["spec"]["headGroupSpec"]["template"], "headgroup"
        generate = f"{cluster}-head-"
    else:
        assert group is not None
        template, group_name = group["template"], group["groupName"]
        generate = f"{cluster}-{group_name}-worker-"
    spec = copy.deepcopy(template["spec"])
    ray = spec["containers"][0]
    ray.setdefault("volumeMounts", []).append({"name": "shared-mem", "mountPath": "/dev/shm"})
    ray.setdefault("env", []).extend(
        [{"name": "RAY_CLUSTER_NAME", "value": cluster}, {"name": "RAY_USAGE_STATS_ENABLED", "value": "0"}]
    )
    spec.setdefault("volumes", []).append(
        {"name": "shared-mem", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}
    )
    spec.setdefault("restartPolicy", "Always")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": generate,
            "namespace": namespace,
            "labels": {
                LABEL_IS_RAY_NODE: "yes",
                LABEL_CLUSTER: cluster,
                LABEL_NODE_TYPE: node_type,
                "ray.io/group": group_name,
                "ray.io/identifier": f"{cluster}-{node_type}",
                "app.kubernetes.io/name": "kuberay",
                "app.kubernetes.io/created-by": "kuberay-operator",
            },
            "annotations": {"ray.io/ft-enabled": "false"},
            "ownerReferences": [_owner(raycluster)],
        },
        "spec": spec,
    }


def pods_for(raycluster: Mapping[str, Any]) -> list[Body]:
    """The pods KubeRay creates at start: the head, then ``replicas x numOfHosts`` per worker group."""
    pods = [pod_for(raycluster, "head")]
    for group in raycluster["spec"].get("workerGroupSpecs") or []:
        count = int(group.get("replicas", 1) or 0) * int(group.get("numOfHosts", 1) or 1)
        pods.extend(pod_for(raycluster, "worker", group) for _ in range(count))
    return pods


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
