"""Benchmark of the ``mutate-raypod`` admission webhook: admissions/s and p50/p99 latency.

Three processes, as in a cluster:

1. an API server stand-in (``bench/apistub.py``: in memory, resourceVersion and 409 like the real
   one; kmock's per-request cost grows with its request history, so it cannot be benchmarked
   against) holding a GismoPool and opted-in RayClusters;
2. ONE operator process, started exactly as in production (``python -m gismo_operator``), logging
   in through a kubeconfig and serving its webhooks over HTTPS with a certificate from ``TLS_DIR``;
3. this process, which POSTs AdmissionReview v1 requests for KubeRay-shaped worker pods (generateName,
   KubeRay's labels, ``containers[0]`` the Ray container) to ``https://127.0.0.1:<port>/mutate-raypod``
   with ``--concurrency`` requests in flight, and times each one from send to answer.

Every admission does the full work: a durable region reservation written to the GismoSlice with a
resourceVersion precondition before the answer, and the JSON patch. The benchmark checks that every
answer is allowed and carries an injected, distinct region (or reports how many were skipped).

    .venv/bin/python bench/webhook.py                 # defaults: 2000 admissions, 16 in flight, 8 clusters
    .venv/bin/python bench/webhook.py --admissions 500 --clusters 1

Writes ``bench/results/webhook.json``. Target on the development machine: p99 <= 25 ms and
>= 200 admissions/s. Cost: a few seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import copy
import json
import os
import platform
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "webhook.json"
SAMPLE = ROOT.parent / "shared" / "kuberay" / "samples" / "ray-cluster.sample.yaml"
NS = "bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------------------------
# Objects


def raycluster(name: str, max_replicas: int) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(SAMPLE.read_text()) if d and d.get("kind") == "RayCluster"]
    body = copy.deepcopy(docs[0])
    body["metadata"] = {
        "name": name,
        "namespace": NS,
        "uid": str(uuid.uuid4()),
        "generation": 1,
        "resourceVersion": "1",
        "annotations": {"gismo.io/pool": "bench-pool"},
    }
    body["spec"]["workerGroupSpecs"][0]["maxReplicas"] = max_replicas
    return body


def worker_pod(rc: dict[str, Any]) -> dict[str, Any]:
    cluster = rc["metadata"]["name"]
    group = rc["spec"]["workerGroupSpecs"][0]
    spec = copy.deepcopy(group["template"]["spec"])
    spec["containers"][0].setdefault("volumeMounts", []).append(
        {"name": "shared-mem", "mountPath": "/dev/shm"}
    )
    spec.setdefault("volumes", []).append({"name": "shared-mem", "emptyDir": {"medium": "Memory"}})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": f"{cluster}-{group['groupName']}-worker-",
            "namespace": NS,
            "labels": {
                "ray.io/is-ray-node": "yes",
                "ray.io/cluster": cluster,
                "ray.io/node-type": "worker",
                "ray.io/group": group["groupName"],
                "ray.io/identifier": f"{cluster}-worker",
                "app.kubernetes.io/name": "kuberay",
                "app.kubernetes.io/created-by": "kuberay-operator",
            },
        },
        "spec": spec,
    }


def review(pod: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": NS,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:ray-system:kuberay-operator"},
            "object": pod,
            "oldObject": None,
            "dryRun": False,
        },
    }


def region_of(answer: dict[str, Any]) -> tuple[str, int] | None:
    """(cluster, region index) the answer's patch assigns, or None when the pod was skipped."""
    response = answer["response"]
    if not response.get("allowed"):
        raise RuntimeError(f"admission denied: {response}")
    if not response.get("patch"):
        return None
    ops = json.loads(base64.b64decode(response["patch"]))
    annotations: dict[str, str] = {}
    for op in ops:
        if op["path"] == "/metadata/annotations":
            annotations.update(op["value"])
        elif op["path"].startswith("/metadata/annotations/"):
            annotations[op["path"].rsplit("/", 1)[1].replace("~1", "/")] = op["value"]
    if "gismo.io/region" not in annotations:
        return None
    return "", int(annotations["gismo.io/region"])


# ------------------------------------------------------------------------------------------------
# Process 3: the load


async def api_call(session: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> Any:
    async with session.request(method, url, json=body) as resp:
        text = await resp.text()
        if resp.status >= 400:
            raise RuntimeError(f"{method} {url}: {resp.status} {text[:300]}")
        return json.loads(text) if text else None


async def wait_until(check: Any, what: str, attempts: int = 600) -> Any:
    for _ in range(attempts):
        with contextlib.suppress(aiohttp.ClientError, OSError, RuntimeError):
            result = await check()
            if result:
                return result
        await asyncio.sleep(0.05)
    raise RuntimeError(f"gave up waiting for {what}")


async def run_load(args: argparse.Namespace, api_url: str, webhook_url: str, ca: Path) -> dict[str, Any]:
    per_cluster = -(-(args.admissions + args.warmup) // args.clusters) + 1
    clusters = [raycluster(f"bench-{i}", per_cluster) for i in range(args.clusters)]
    async with aiohttp.ClientSession() as session:
        pool = {
            "apiVersion": "gismo.io/v1alpha1",
            "kind": "GismoPool",
            "metadata": {"name": "bench-pool", "uid": str(uuid.uuid4()), "resourceVersion": "1"},
            "spec": {
                "capacity": (per_cluster + 1) * args.clusters,
                "regionSize": 1,
                "backend": {"type": "shm", "path": "/dev/shm/gismo/bench"},
                "nodeSelector": {"gismo.io/attached": "bench-pool"},
                "agent": {"image": "gismo-agent:bench"},
            },
        }
        await api_call(session, "POST", f"{api_url}/apis/gismo.io/v1alpha1/gismopools", pool)
        for rc in clusters:
            await api_call(session, "POST", f"{api_url}/apis/ray.io/v1/namespaces/{NS}/rayclusters", rc)
        for rc in clusters:
            url = f"{api_url}/apis/gismo.io/v1alpha1/namespaces/{NS}/gismoslices/{rc['metadata']['name']}"
            await wait_until(lambda url=url: api_call(session, "GET", url), f"slice {url}")

    context = ssl.create_default_context(cafile=str(ca))
    connector = aiohttp.TCPConnector(ssl=context, limit=args.concurrency)
    latencies: list[float] = []
    assigned: list[tuple[str, int] | None] = []
    async with aiohttp.ClientSession(connector=connector) as session:
        url = f"{webhook_url}/mutate-raypod"

        async def admit(i: int, record: bool) -> None:
            rc = clusters[i % len(clusters)]
            body = review(worker_pod(rc))
            start = time.perf_counter()
            async with session.post(url, json=body) as resp:
                answer = await resp.json()
            elapsed = time.perf_counter() - start
            if resp.status != 200:
                raise RuntimeError(f"webhook answered {resp.status}: {answer}")
            got = region_of(answer)
            if record:
                latencies.append(elapsed)
                assigned.append(None if got is None else (rc["metadata"]["name"], got[1]))

        async def run(count: int, record: bool, offset: int) -> float:
            queue: asyncio.Queue[int] = asyncio.Queue()
            for i in range(count):
                queue.put_nowait(offset + i)

            async def worker() -> None:
                while not queue.empty():
                    await admit(queue.get_nowait(), record)

            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
            return time.perf_counter() - start

        await run(args.warmup, False, 0)
        wall = await run(args.admissions, True, args.warmup)

    injected = [a for a in assigned if a is not None]
    if len(set(injected)) != len(injected):
        raise RuntimeError("the same region was handed out twice")
    ordered = sorted(latencies)
    p = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return {
        "admissions": args.admissions,
        "concurrency": args.concurrency,
        "clusters": args.clusters,
        "warmup": args.warmup,
        "injected": len(injected),
        "skipped": len(assigned) - len(injected),
        "wall_seconds": round(wall, 3),
        "admissions_per_second": round(args.admissions / wall, 1),
        "latency_ms": {
            "p50": round(p(0.50), 2),
            "p90": round(p(0.90), 2),
            "p99": round(p(0.99), 2),
            "max": round(ordered[-1] * 1000, 2),
            "mean": round(statistics.fmean(ordered) * 1000, 2),
        },
        "target": {"p99_ms": 25, "admissions_per_second": 200},
    }


# ------------------------------------------------------------------------------------------------
# Orchestration


def write_kubeconfig(folder: Path, api_url: str) -> Path:
    path = folder / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "bench", "cluster": {"server": api_url}}],
                "users": [{"name": "bench", "user": {"token": "bench"}}],
                "contexts": [
                    {"name": "bench", "context": {"cluster": "bench", "user": "bench", "namespace": NS}}
                ],
                "current-context": "bench",
            }
        )
    )
    return path


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "operator"))
    from gismo_operator import devcert

    folder = Path(tempfile.mkdtemp(prefix="gismo-bench-"))
    devcert.generate(["127.0.0.1", "localhost"]).write(folder)
    ca = folder / "ca.crt"
    api_port, webhook_port = free_port(), free_port()
    api_url = f"http://127.0.0.1:{api_port}"
    env = {
        **os.environ,
        "KUBECONFIG": str(write_kubeconfig(folder, api_url)),
        "GISMO_OPERATOR_TLS_DIR": str(folder),
        "GISMO_OPERATOR_WEBHOOK_PORT": str(webhook_port),
        "GISMO_OPERATOR_METRICS_PORT": "0",
        "GISMO_OPERATOR_HEALTH_PORT": "0",
        "GISMO_OPERATOR_LOG_LEVEL": "WARNING",
        "GISMO_OPERATOR_NAMESPACE": NS,
        "PYTHONPATH": os.pathsep.join(
            [str(ROOT / "operator"), str(ROOT / "agent"), os.environ.get("PYTHONPATH", "")]
        ),
    }
    log = open(folder / "processes.log", "w")  # noqa: SIM115
    api_proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "apistub.py"), str(api_port)],
        stdout=subprocess.PIPE,
        stderr=log,
        env=env,
    )
    operator_proc: subprocess.Popen[bytes] | None = None
    try:
        assert api_proc.stdout is not None
        line = await asyncio.get_running_loop().run_in_executor(None, api_proc.stdout.readline)
        if line.strip() != b"ready":
            raise RuntimeError(f"the API stand-in did not start (see {folder / 'processes.log'})")
        operator_proc = subprocess.Popen(
            [sys.executable, "-m", "gismo_operator"], stdout=log, stderr=log, env=env
        )

        async def listening() -> bool:
            _, writer = await asyncio.open_connection("127.0.0.1", webhook_port)
            writer.close()
            return True

        await wait_until(listening, "the operator's webhook server")
        result = await run_load(args, api_url, f"https://127.0.0.1:{webhook_port}", ca)
    finally:
        if args.profile and operator_proc is not None:
            operator_proc.send_signal(signal.SIGUSR1)
            with contextlib.suppress(subprocess.TimeoutExpired):
                operator_proc.wait(timeout=30)
        for proc in (operator_proc, api_proc):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        log.close()
    result["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    result["setup"] = (
        "1 operator process (python -m gismo_operator), bench/apistub.py API stand-in "
        "in its own process, HTTPS"
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admissions", type=int, default=2000, help="timed admissions (default 2000)")
    parser.add_argument("--warmup", type=int, default=100, help="untimed admissions first (default 100)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (default 16)")
    parser.add_argument("--clusters", type=int, default=8, help="RayClusters the pods belong to (default 8)")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the operator process here")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"result file (default {RESULTS})")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    lat = result["latency_ms"]
    print(
        f"mutate-raypod: {result['admissions']} admissions ({result['injected']} injected, "
        f"{result['skipped']} skipped), {result['concurrency']} in flight, {result['clusters']} clusters"
    )
    print(f"  throughput: {result['admissions_per_second']} admissions/s (target >= 200)")
    print(
        f"  latency:    p50 {lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms (target p99 <= 25 ms)"
    )
    print(f"  written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
