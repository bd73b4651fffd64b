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

    .venv/bin/python bench/webhook.py          # 2000 closed-loop (16 in flight) + 2000 at 200/s, 32 clusters
    .venv/bin/python bench/webhook.py --admissions 500 --rate-admissions 500 --clusters 1
    .venv/bin/python bench/webhook.py --scale  # 1,000 / 4,000 / 10,000 pods in one cluster; 1,000 slices

Two measurements: throughput with ``--concurrency`` requests always in flight (closed loop), and
latency at an offered rate of ``--rate`` admissions/s sent on a fixed schedule (open loop, how
KubeRay's pod creations arrive); the closed-loop latency is reported too but mostly measures
queueing behind the other requests in flight.

Writes ``bench/results/webhook.json``. Target on the development machine: p99 <= 25 ms and
>= 200 admissions/s. Cost: a few seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import copy
import gc
import itertools
import json
import os
import platform
import shutil
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

from gismo.contract import ANN_POOL, ANN_REGION, OPERATOR_ENV_PREFIX
from gismo_operator.testing import kuberay_sim

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "webhook.json"
#: The pool's region size: one the pool rule accepts (gismo.poolrules); nothing is mapped here, so
#: its size costs nothing.
REGION = 1 << 20
SCALE_RESULTS = ROOT / "bench" / "results" / "webhook_scale.json"
#: The scale mode's cases: (what, RayClusters, pods in all).
SCALE_CASES = (
    ("1 RayCluster of 1,000 pods", 1, 1000),
    ("1 RayCluster of 4,000 pods", 1, 4000),
    ("1 RayCluster of 10,000 pods", 1, 10000),
    ("1,000 slices in one pool (3 pods each)", 1000, 3000),
)
SAMPLE = ROOT / "tests" / "fixtures" / "kuberay" / "samples" / "ray-cluster.sample.yaml"
NS = "bench"
#: Seconds (the operator's GISMO_OPERATOR_RESERVATION_TTL in the bench).
RESERVATION_TTL = 50


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
        "annotations": {ANN_POOL: "bench-pool"},
    }
    body["spec"]["workerGroupSpecs"][0]["maxReplicas"] = max_replicas
    return body


def worker_pod(rc: dict[str, Any]) -> dict[str, Any]:
    """A worker pod as KubeRay creates it (the same builder as the demo and the operator tests)."""
    return kuberay_sim.pod_for(rc, "worker", rc["spec"]["workerGroupSpecs"][0])


def review(pod: dict[str, Any]) -> dict[str, Any]:
    """The AdmissionReview v1 the API server sends for the pod's CREATE."""
    return kuberay_sim.admission_review(pod)


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
    if ANN_REGION not in annotations:
        return None
    return "", int(annotations[ANN_REGION])


# ------------------------------------------------------------------------------------------------
# Process 3: the load


async def seed_slices(session: aiohttp.ClientSession, api_url: str, clusters: list[dict[str, Any]]) -> None:
    """Each cluster's GismoSlice, sized and placed as the operator places them (back to back), made
    directly: the scale mode measures admissions, not 1,000 slice placements."""
    from gismo_operator.core.allocator import Extent
    from gismo_operator.core.shape import cluster_shape, slice_size
    from gismo_operator.core.slices import build_slice

    offset = 0
    for rc in clusters:
        size = slice_size(cluster_shape(rc), REGION)
        body = build_slice(rc, "bench-pool", Extent(offset, size), REGION)
        await api_call(session, "POST", f"{api_url}/apis/gismo.io/v1alpha1/namespaces/{NS}/gismoslices", body)
        offset += size


async def seed_regions(session: aiohttp.ClientSession, api_url: str, rc: dict[str, Any], count: int) -> None:
    """``count`` regions of the cluster's slice already held, as the ledger writes them: the scale
    mode's cluster is that big before the measured admissions. Their reservedAt lies past the run,
    so the sweep keeps them (the bench creates no pods)."""
    import datetime as dt

    from gismo_operator.core.models import GismoSlice, RegionAssignment
    from gismo_operator.ledger.regions import region_body

    name = rc["metadata"]["name"]
    current = GismoSlice.model_validate(
        await api_call(session, "GET", f"{api_url}/apis/gismo.io/v1alpha1/namespaces/{NS}/gismoslices/{name}")
    )
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    url = f"{api_url}/apis/gismo.io/v1alpha1/namespaces/{NS}/gismoregions"
    bodies = [
        region_body(NS, current, RegionAssignment(index=i, state="Reserved", reserved_at=later), [])
        for i in range(count)
    ]
    for start in range(0, count, 64):
        await asyncio.gather(*(api_call(session, "POST", url, b) for b in bodies[start : start + 64]))


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


def autogroup_enabled() -> bool | None:
    """Whether the kernel shares CPU between sessions first (then ``nice`` in another session does
    not give this benchmark the CPU); None when unknown."""
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return None


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far (Linux /proc), 0 when unknown."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_idle(pid: int | None, *, busy: float = 0.1, most: float = 120.0) -> None:
    """Wait until the process used under ``busy`` of a core over half a second (at most ``most`` s)."""
    if pid is None:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + most
    while loop.time() < deadline:
        before = cpu_seconds(pid)
        await asyncio.sleep(0.5)
        if cpu_seconds(pid) - before < busy * 0.5:
            return


def process_cpu(pids: dict[str, int | None]) -> dict[str, float]:
    """CPU seconds so far of each named process (``self``: this one, the load generator)."""
    found = {name: cpu_seconds(pid) for name, pid in pids.items()}
    found["load_generator"] = time.process_time()
    return found


def cpu_per_admission(before: dict[str, float], after: dict[str, float], count: int) -> dict[str, float]:
    """Milliseconds of CPU per admission in each process between two :func:`process_cpu` readings."""
    return {name: round((after[name] - before[name]) / max(1, count) * 1000, 3) for name in before}


async def setup_objects(args: argparse.Namespace, api_url: str) -> list[dict[str, Any]]:
    """The pool, the node, the RayClusters (and with ``seed_slices`` their slices) in the API
    before the operator starts, as on a cluster the operator (re)starts on: a sweep round running
    while slices were there but not yet their clusters would rightly release those slices."""
    total = args.warmup + args.admissions + args.rate_admissions
    per_cluster = -(-(total + args.seed_regions) // args.clusters) + 1
    clusters = [raycluster(f"bench-{i}", per_cluster) for i in range(args.clusters)]
    async with aiohttp.ClientSession() as session:
        pool = {
            "apiVersion": "gismo.io/v1alpha1",
            "kind": "GismoPool",
            "metadata": {"name": "bench-pool", "uid": str(uuid.uuid4()), "resourceVersion": "1"},
            "spec": {
                "capacity": (per_cluster + 1) * args.clusters * REGION,
                "regionSize": REGION,
                "backend": {"type": "shm", "path": "/dev/shm/gismo/bench"},
                "nodeSelector": {"gismo.io/attached": "bench-pool"},
                "agent": {"image": "gismo-agent:bench"},
            },
        }
        await api_call(session, "POST", f"{api_url}/apis/gismo.io/v1alpha1/gismopools", pool)
        if args.seed_slices:  # placed as the operator would (it finds them made at its start)
            await seed_slices(session, api_url, clusters)
        # A node where the node component advertises the pool's resource (the webhook checks one does).
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "bench-node", "labels": {"gismo.io/attached": "bench-pool"}},
            "status": {"allocatable": {"gismo.io/bench-pool": "128"}},
        }
        await api_call(session, "POST", f"{api_url}/api/v1/nodes", node)
        for rc in clusters:
            await api_call(session, "POST", f"{api_url}/apis/ray.io/v1/namespaces/{NS}/rayclusters", rc)
    return clusters


async def run_load(
    args: argparse.Namespace,
    clusters: list[dict[str, Any]],
    api_url: str,
    webhook_url: str,
    ca: Path,
    operator_pid: int | None = None,
    api_pid: int | None = None,
) -> dict[str, Any]:
    total = args.warmup + args.admissions + args.rate_admissions
    async with aiohttp.ClientSession() as session:
        for rc in clusters:
            url = f"{api_url}/apis/gismo.io/v1alpha1/namespaces/{NS}/gismoslices/{rc['metadata']['name']}"
            await wait_until(lambda url=url: api_call(session, "GET", url), f"slice {url}")
        if args.seed_regions:
            await seed_regions(session, api_url, clusters[0], args.seed_regions)
    # The operator reconciles every RayCluster it was just shown (1,000 in the slices case): that
    # start-up work is not an admission's, so the measurement starts once the operator is idle.
    await wait_idle(operator_pid)

    context = ssl.create_default_context(cafile=str(ca))
    connector = aiohttp.TCPConnector(ssl=context, limit=args.concurrency)
    assigned: list[tuple[str, int] | None] = []
    assigned_at: dict[tuple[str, int], list[tuple[float, float]]] = {}  # (sent, answered)
    async with aiohttp.ClientSession(connector=connector) as session:
        url = f"{webhook_url}/mutate-raypod"

        # Every request body is built (and encoded) before the timed phases: on a 2-core machine the
        # load generator's own CPU would otherwise be taken from the operator it measures.
        bodies = [json.dumps(review(worker_pod(clusters[i % len(clusters)]))).encode() for i in range(total)]
        headers = {"Content-Type": "application/json"}

        answers: list[tuple[int, float, float, bytes]] = []  # (request, sent, elapsed, answer)

        async def admit(i: int, latencies: list[float] | None) -> None:
            start = time.perf_counter()
            async with session.post(url, data=bodies[i], headers=headers) as resp:
                raw = await resp.read()
            elapsed = time.perf_counter() - start
            if resp.status != 200:
                raise RuntimeError(f"webhook answered {resp.status}: {raw[:300]!r}")
            answers.append((i, start, elapsed, raw))  # checked after the run (CPU, again)
            if latencies is not None:
                latencies.append(elapsed)

        async def closed_loop(count: int, offset: int, latencies: list[float] | None) -> float:
            """``concurrency`` clients, each sending its next request when the last is answered."""
            queue: asyncio.Queue[int] = asyncio.Queue()
            for i in range(count):
                queue.put_nowait(offset + i)

            async def worker() -> None:
                while not queue.empty():
                    await admit(queue.get_nowait(), latencies)

            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
            return time.perf_counter() - start

        async def open_loop(count: int, offset: int, rate: float, latencies: list[float]) -> float:
            """Requests sent on a fixed schedule of ``rate`` per second, whatever the answers do
            (as pods arrive from KubeRay): latency is then not hidden by a client waiting."""
            loop = asyncio.get_running_loop()
            start = loop.time()
            tasks = []
            for i in range(count):
                delay = start + i / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(admit(offset + i, latencies)))
            await asyncio.gather(*tasks)
            return loop.time() - start

        await closed_loop(args.warmup, 0, None)
        # The load generator's own garbage-collector pauses (it holds every answer) would stall
        # its event loop and show as the operator's latency: no collections while it measures.
        gc.collect()
        gc.disable()
        async with aiohttp.ClientSession() as plain:
            stats0 = await api_call(plain, "GET", f"{api_url}/_stats")
        throughput_latencies: list[float] = []
        pids = {"operator": operator_pid, "api_stand_in": api_pid}
        cpu0 = process_cpu(pids)
        wall = await closed_loop(args.admissions, args.warmup, throughput_latencies)
        cpu1 = process_cpu(pids)
        rate_latencies: list[float] = []
        rate_wall = await open_loop(
            args.rate_admissions, args.warmup + args.admissions, args.rate, rate_latencies
        )
        cpu2 = process_cpu(pids)
        gc.enable()
        async with aiohttp.ClientSession() as plain:
            stats1 = await api_call(plain, "GET", f"{api_url}/_stats")

    if os.environ.get("BENCH_TIMES"):  # diagnostics: every request's (send time, latency)
        Path(os.environ["BENCH_TIMES"]).write_text(json.dumps([(i, t, e) for i, t, e, _ in answers]))
    for i, start, elapsed, raw in answers:
        name = clusters[i % len(clusters)]["metadata"]["name"]
        got = region_of(json.loads(raw))
        assigned.append(None if got is None else (name, got[1]))
        if got is not None:
            assigned_at.setdefault((name, got[1]), []).append((start, start + elapsed))
    measured = args.admissions + args.rate_admissions

    def per_admission(key: str, method: str | None = None) -> float:
        if method is None:
            return (stats1[key] - stats0[key]) / measured
        return (
            stats1[f"{key}_by_method"].get(method, 0) - stats0[f"{key}_by_method"].get(method, 0)
        ) / measured

    writes = {
        "requests_per_admission": round(per_admission("write_requests"), 3),
        "bytes_per_admission": round(per_admission("write_bytes"), 1),
        "bytes_per_admission_by_method": {
            m: round(per_admission("write_bytes", m), 1) for m in ("POST", "PATCH", "PUT", "DELETE")
        },
        "largest_object_bytes": stats1["largest_object_bytes"],
        "largest_object": stats1["largest_object"],
    }
    injected = [a for a in assigned if a is not None]
    # The bench's pods are never created, so a reservation older than the TTL is rightly reclaimed
    # by the sweep and its region handed out again: only a reuse sooner than that is an error.
    reclaimed = 0
    for region, times in assigned_at.items():
        times.sort()
        for (sent, _), (_, answered) in itertools.pairwise(times):
            # The first reservation was made after it was sent, the next before it was answered.
            if answered - sent < RESERVATION_TTL:
                raise RuntimeError(f"region {region} was handed out twice within the reservation TTL")
            reclaimed += 1
    return {
        "clusters": args.clusters,
        "regions_held_before": args.seed_regions,
        "warmup": args.warmup,
        "injected": len(injected),
        "skipped": len(assigned) - len(injected),
        "reclaimed_after_ttl": reclaimed,
        "api_writes": writes,
        "throughput": {
            "mode": f"closed loop, {args.concurrency} requests in flight",
            "admissions": args.admissions,
            "wall_seconds": round(wall, 3),
            "admissions_per_second": round(args.admissions / wall, 1),
            "latency_ms": summary(throughput_latencies),
            "operator_cpu_ms_per_admission": cpu_per_admission(cpu0, cpu1, args.admissions)["operator"],
            "cpu_ms_per_admission": cpu_per_admission(cpu0, cpu1, args.admissions),
        },
        "latency_at_rate": {
            "mode": f"open loop, {args.rate:g} admissions/s offered",
            "admissions": args.rate_admissions,
            "achieved_per_second": round(args.rate_admissions / rate_wall, 1),
            "latency_ms": summary(rate_latencies),
            "operator_cpu_ms_per_admission": cpu_per_admission(cpu1, cpu2, args.rate_admissions)["operator"],
            "cpu_ms_per_admission": cpu_per_admission(cpu1, cpu2, args.rate_admissions),
        },
        "target": {"p99_ms": 25, "admissions_per_second": 200},
    }


def summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    if not ordered:
        return {}

    def pct(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {
        "p50": pct(0.50),
        "p90": pct(0.90),
        "p99": pct(0.99),
        "max": round(ordered[-1] * 1000, 2),
        "mean": round(statistics.fmean(ordered) * 1000, 2),
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
    from gismo_operator.webhook import devcert

    folder = Path(tempfile.mkdtemp(prefix="gismo-bench-"))
    devcert.generate(["127.0.0.1", "localhost"]).write(folder)
    ca = folder / "ca.crt"
    api_port, webhook_port = free_port(), free_port()
    api_url = f"http://127.0.0.1:{api_port}"
    env = {
        **os.environ,
        "KUBECONFIG": str(write_kubeconfig(folder, api_url)),
        OPERATOR_ENV_PREFIX + "TLS_DIR": str(folder),
        OPERATOR_ENV_PREFIX + "WEBHOOK_PORT": str(webhook_port),
        OPERATOR_ENV_PREFIX + "METRICS_PORT": "0",
        OPERATOR_ENV_PREFIX + "HEALTH_PORT": "0",
        OPERATOR_ENV_PREFIX + "LOG_LEVEL": "WARNING",
        OPERATOR_ENV_PREFIX + "NAMESPACE": NS,
        # The bench's pods are never created, so every reservation expires after the TTL and its
        # region is handed out again (counted as reclaimed_after_ttl). A TTL longer than the default
        # (30 s) keeps that rare; sweeps run more often than the default (25 s), so their cost is
        # part of what is measured.
        OPERATOR_ENV_PREFIX + "RESERVATION_TTL": str(RESERVATION_TTL),
        OPERATOR_ENV_PREFIX + "SWEEP_INTERVAL": "10",
        "PYTHONPATH": os.pathsep.join(
            [str(ROOT / "operator"), str(ROOT / "agent"), os.environ.get("PYTHONPATH", "")]
        ),
    }
    log = open(folder / "processes.log", "w")  # noqa: SIM115
    # The API stand-in and the operator each run in a session of their own, as the separate
    # programs they are in a cluster: with the kernel's autogroup scheduling (Linux's default for
    # desktop-style setups, on here) CPU is shared between sessions first, so three processes of one
    # session would together get one session's share of a machine other sessions also use.
    api_proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "apistub.py"), str(api_port)],
        stdout=subprocess.PIPE,
        stderr=log,
        env=env,
        start_new_session=True,
    )
    operator_proc: subprocess.Popen[bytes] | None = None
    try:
        assert api_proc.stdout is not None
        line = await asyncio.get_running_loop().run_in_executor(None, api_proc.stdout.readline)
        if line.strip() != b"ready":
            raise RuntimeError(f"the API stand-in did not start (see {folder / 'processes.log'})")
        clusters = await setup_objects(args, api_url)
        command = ["-m", "gismo_operator"]
        if os.environ.get("BENCH_OPERATOR_SCRIPT"):  # diagnostics: run the operator through a wrapper
            command = [os.environ["BENCH_OPERATOR_SCRIPT"]]
        if args.profile:  # written on SIGUSR1 (sent below): kopf owns SIGTERM
            env["PROF_OUT"] = str(args.profile)
            command = [str(ROOT / "bench" / "profile_operator.py")]
        operator_proc = subprocess.Popen(
            [sys.executable, *command], stdout=log, stderr=log, env=env, start_new_session=True
        )

        async def listening() -> bool:
            _, writer = await asyncio.open_connection("127.0.0.1", webhook_port)
            writer.close()
            return True

        await wait_until(listening, "the operator's webhook server")
        result = await run_load(
            args, clusters, api_url, f"https://127.0.0.1:{webhook_port}", ca, operator_proc.pid, api_proc.pid
        )
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
        if sys.exc_info()[0] is None:  # keep the certificates and process logs only for a failed run
            shutil.rmtree(folder, ignore_errors=True)
        else:
            print(f"bench: logs kept in {folder}", file=sys.stderr)
    result["machine"] = {
        "cpus": os.cpu_count(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    result["setup"] = (
        "1 operator process (python -m gismo_operator), bench/apistub.py API stand-in "
        "in its own process, each in a session of its own (scheduler autogroup), HTTPS"
    )
    result["machine"]["sched_autogroup"] = autogroup_enabled()
    return result


def scale_case_args(base: argparse.Namespace, clusters: int, pods: int) -> argparse.Namespace:
    """One scale case: ``pods`` pods in ``clusters`` RayClusters sized for them. All but the last
    (at most) 2,600 are regions already held when the operator starts (made as its ledger makes
    them); the last are the measured admissions: a warm-up, the closed loop, then the open loop at
    ``--rate``, the cluster then full. So a case takes about the same time whatever its size."""
    measured = min(pods, 2600)
    at_rate = min(1000, (measured - 100) // 2)
    return argparse.Namespace(
        **{
            **vars(base),
            "clusters": clusters,
            "warmup": 100,
            "admissions": measured - at_rate - 100,
            "rate_admissions": at_rate,
            "seed_regions": pods - measured,
            "seed_slices": clusters > 1,
            "profile": base.profile.with_suffix(f".{clusters}x{pods}.prof") if base.profile else None,
        }
    )


def scale(base: argparse.Namespace) -> dict[str, Any]:
    """The scale mode: every case in a fresh API stand-in and operator process."""
    cases = []
    for what, clusters, pods in SCALE_CASES:
        if base.cases and pods not in base.cases:
            continue
        load_before = [round(x, 2) for x in os.getloadavg()]
        started = time.perf_counter()
        result = asyncio.run(main_async(scale_case_args(base, clusters, pods)))
        thr, at = result["throughput"], result["latency_at_rate"]
        case = {
            "case": what,
            "rayclusters": clusters,
            "pods": pods,
            "injected": result["injected"],
            "skipped": result["skipped"],
            "closed_loop_admissions_per_second": thr["admissions_per_second"],
            "closed_loop_latency_ms": thr["latency_ms"],
            "offered_per_second": base.rate,
            "achieved_per_second": at["achieved_per_second"],
            "latency_at_rate_ms": at["latency_ms"],
            "regions_held_before": result["regions_held_before"],
            "bytes_written_per_admission": result["api_writes"]["bytes_per_admission"],
            "bytes_written_per_admission_by_method": result["api_writes"]["bytes_per_admission_by_method"],
            "write_requests_per_admission": result["api_writes"]["requests_per_admission"],
            "largest_object_bytes": result["api_writes"]["largest_object_bytes"],
            "largest_object": result["api_writes"]["largest_object"],
            "operator_cpu_ms_per_admission": thr["operator_cpu_ms_per_admission"],
            "cpu_ms_per_admission_closed_loop": thr["cpu_ms_per_admission"],
            "cpu_ms_per_admission_at_rate": at["cpu_ms_per_admission"],
            "load_average_before": load_before,
            "load_average_after": result["machine"]["load_average_at_end"],
            "wall_seconds": round(time.perf_counter() - started, 1),
        }
        cases.append(case)
        print(
            f"{what}: {case['closed_loop_admissions_per_second']}/s closed loop; at {base.rate:g}/s "
            f"p50 {at['latency_ms']['p50']} ms p99 {at['latency_ms']['p99']} ms; "
            f"{case['bytes_written_per_admission']} B/admission; largest object "
            f"{case['largest_object_bytes']} B; load {load_before} -> {case['load_average_after']}; "
            f"CPU ms/admission {thr['cpu_ms_per_admission']} (closed), "
            f"{at['cpu_ms_per_admission']} (at rate)",
            flush=True,
        )
    bytes_per = [c["bytes_written_per_admission"] for c in cases]
    slowest = min(c["closed_loop_admissions_per_second"] for c in cases)
    worst_p99 = max(c["latency_at_rate_ms"]["p99"] for c in cases)
    spread = round(max(bytes_per) / min(bytes_per), 3)
    largest = max(c["largest_object_bytes"] for c in cases)
    return {
        "targets": {
            "closed_loop_admissions_per_second_min": {"value": slowest, "target": 200, "met": slowest >= 200},
            "p99_ms_at_200_per_second_max": {"value": worst_p99, "target": 50, "met": worst_p99 <= 50},
            "bytes_per_admission_max_over_min": {"value": spread, "target": 1.25, "met": spread <= 1.25},
            "largest_object_bytes": {"value": largest, "target": 256 * 1024, "met": largest <= 256 * 1024},
        },
        "cases": cases,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "note": "shared by several engineers at once: see each case's load average",
            "sched_autogroup": autogroup_enabled(),
        },
        "setup": "per case: 1 operator process (python -m gismo_operator) and bench/apistub.py in its "
        f"own process, HTTPS, {base.concurrency} requests in flight in the closed loop; pods are not "
        "created (reservations only), every admission writes its region durably before its answer",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admissions", type=int, default=2000, help="closed-loop admissions (default 2000)")
    parser.add_argument(
        "--rate", type=float, default=200.0, help="open-loop offered rate per second (default 200)"
    )
    parser.add_argument(
        "--rate-admissions", type=int, default=2000, help="open-loop admissions (default 2000)"
    )
    parser.add_argument("--warmup", type=int, default=100, help="untimed admissions first (default 100)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (default 16)")
    parser.add_argument(
        "--clusters", type=int, default=32, help="RayClusters the pods belong to (default 32)"
    )
    parser.add_argument("--profile", type=Path, help="write a cProfile of the operator process here")
    parser.add_argument(
        "--out", type=Path, help=f"result file (default {RESULTS}, {SCALE_RESULTS} with --scale)"
    )
    parser.add_argument(
        "--scale",
        action="store_true",
        help="the scale mode: one RayCluster of 1,000, 4,000 and 10,000 pods, and 1,000 slices in one pool",
    )
    parser.add_argument(
        "--cases",
        type=int,
        nargs="+",
        metavar="PODS",
        help="with --scale: only the cases of these pod counts (1000 4000 10000 3000)",
    )
    args = parser.parse_args()
    args.seed_regions, args.seed_slices = 0, False
    if args.scale:
        out = args.out or SCALE_RESULTS
        report = scale(args)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        for metric, target in report["targets"].items():
            print(
                f"  {metric}: {target['value']} (target {target['target']}) "
                + ("met" if target["met"] else "MISSED")
            )
        print(f"  written to {out}")
        return 0
    args.out = args.out or RESULTS
    result = asyncio.run(main_async(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    thr, at = result["throughput"], result["latency_at_rate"]
    print(
        f"mutate-raypod: {result['injected']} injected, {result['skipped']} skipped, "
        f"{result['reclaimed_after_ttl']} regions reclaimed after the TTL, "
        f"{result['clusters']} RayClusters, 1 operator process"
    )
    print(
        f"  throughput ({thr['mode']}): {thr['admissions_per_second']} admissions/s, "
        f"p50 {thr['latency_ms']['p50']} ms, p99 {thr['latency_ms']['p99']} ms   (target >= 200/s)"
    )
    print(
        f"  operator CPU per admission: {thr['operator_cpu_ms_per_admission']} ms (closed loop), "
        f"{at['operator_cpu_ms_per_admission']} ms (open loop); "
        f"load average {result['machine']['load_average_at_end']}"
    )
    print(
        f"  latency ({at['mode']}, achieved {at['achieved_per_second']}/s): "
        f"p50 {at['latency_ms']['p50']} ms, p99 {at['latency_ms']['p99']} ms, "
        f"max {at['latency_ms']['max']} ms   (target p99 <= 25 ms)"
    )
    print(f"  written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
