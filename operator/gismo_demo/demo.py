"""``make demo`` / ``python -m gismo_demo``: the product's main job, end to end, no cluster.

1. Control plane: an embedded Kubernetes API (kmock, :mod:`gismo_operator.testing.embedded`), the operator
   and its webhooks (HTTPS, dev certificate); ``examples/gismopool.yaml`` and an opted-in
   RayCluster are applied; the RayCluster's head and worker pods are created as KubeRay would,
   through the ``mutate-raypod`` admission webhook (:mod:`gismo_operator.testing.kuberay_sim`). Shown: the
   pool's status (its printer columns), the slice, and each pod's region.
2. Data plane: one local Ray node per pod, each with its Gismo agent on the region the operator
   assigned to that pod (:mod:`gismo_demo.demo_dataplane`), and a Ray-vs-Gismo table measured
   in this run.

Everything it starts is stopped and every file it makes is removed, also on errors and Ctrl-C
(SIGTERM too); if the process is killed outright, LocalCluster's janitor cleans the Ray side.
Cost: about 1 minute with ``--quick`` (2 Ray nodes, small sizes), 1-3 minutes without, on 2 cores.
Needs the ``ray`` and ``dev`` extras (Ray; kmock).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import itertools
import json
import logging
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp

from gismo.contract import (
    ANN_POOL,
    ANN_SKIPPED,
    ENV_PREFIX,
    ENV_REGION,
    ENV_REGION_OFFSET,
    ENV_REGION_SIZE,
    RESOURCE_PREFIX,
)
from gismo_operator import kube
from gismo_operator.constants import ENV_OWNER, LABEL_NODE_TYPE
from gismo_operator.testing import embedded, kuberay_sim

Body = dict[str, Any]
REPO = Path(__file__).resolve().parents[2]
MiB = 1 << 20
GiB = 1 << 30
#: Guard against hangs while waiting for the operator (not a performance assertion).
WAIT = 60.0


# ------------------------------------------------------------------------------------------------
# Output


class Progress:
    """One line per step, with the time since the demo started."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def elapsed(self) -> float:
        """Seconds since the start."""
        return time.monotonic() - self.t0

    def step(self, message: str) -> None:
        """Print ``[  12.3s] message`` at once."""
        print(f"[{self.elapsed():6.1f}s] {message}", flush=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], indent: str = "    ") -> str:
    """Aligned columns (numbers right-aligned), like ``kubectl get``."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [all(_is_number(r[i]) for r in cells[1:]) and len(cells) > 1 for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric, strict=True)]
        lines.append(indent + "   ".join(parts).rstrip())
    return "\n".join(lines)


def _is_number(text: str) -> bool:
    try:
        float(text.rstrip("xs").replace(",", ""))
    except ValueError:
        return False
    return True


def show(text: str) -> None:
    """Print a block (a table) at once."""
    print(text, flush=True)


def mib(n: int) -> str:
    """Bytes as MiB/GiB for people."""
    return f"{n / GiB:g} GiB" if n % GiB == 0 else f"{n / MiB:g} MiB"


# ------------------------------------------------------------------------------------------------
# Options


@dataclasses.dataclass(frozen=True)
class Options:
    """What to run and how big."""

    examples: Path
    quick: bool
    nodes: int
    array_bytes: int
    shuffle_bytes: int
    shuffle_tasks: int
    repeats: int
    object_store_bytes: int


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m gismo_demo",
        description="Gismo end to end on an embedded Kubernetes API and a local multi-node Ray cluster.",
    )
    parser.add_argument("--quick", action="store_true", help="CI mode: 2 Ray nodes, small sizes (~1 min)")
    parser.add_argument(
        "--examples",
        type=Path,
        default=REPO / "examples",
        help="folder with gismopool.yaml and raycluster.yaml",
    )
    args = parser.parse_args(argv)
    if args.quick:
        return Options(args.examples, True, 2, 32 * MiB, 64 * MiB, 4, 2, 256 * MiB)
    return Options(args.examples, False, 3, 256 * MiB, 512 * MiB, 8, 3, 1 * GiB)


# ------------------------------------------------------------------------------------------------
# Control plane


@dataclasses.dataclass
class AdmittedPod:
    """A Ray pod as stored after admission, and the region the operator gave it."""

    name: str
    node_type: str
    node: str
    env: dict[str, str]
    annotations: dict[str, str]

    @property
    def region(self) -> tuple[int, int, int]:
        """(index, offset, size) from the GISMO_* env the webhook wrote."""
        e = self.env
        return int(e[ENV_REGION]), int(e[ENV_REGION_OFFSET]), int(e[ENV_REGION_SIZE])


def ray_env(pod: Mapping[str, Any]) -> dict[str, str]:
    """The GISMO_* variables in the Ray container (``containers[0]``)."""
    container = pod["spec"]["containers"][0]
    return {
        e["name"]: str(e.get("value", ""))
        for e in container.get("env", [])
        if e["name"].startswith(ENV_PREFIX)
    }


def pool_columns(pool: Mapping[str, Any]) -> list[list[Any]]:
    """``kubectl get gismopools -o wide`` (the CRD's printer columns)."""
    st = pool.get("status") or {}
    return [
        [
            pool["metadata"]["name"],
            st.get("capacity", ""),
            st.get("allocated", ""),
            st.get("free", ""),
            st.get("slices", ""),
            st.get("ready", ""),
            pool["spec"]["backend"]["type"],
            st.get("largestFreeExtent", ""),
            st.get("regions", ""),
        ]
    ]


POOL_HEADERS = [
    "NAME",
    "CAPACITY",
    "ALLOCATED",
    "FREE",
    "SLICES",
    "READY",
    "BACKEND",
    "LARGEST-FREE",
    "REGIONS",
]


async def wait_pool(kapi: embedded.EmbeddedApi, name: str, slices: int) -> Body:
    """The pool once Ready with ``slices`` slices counted in its status."""

    async def probe() -> Body | None:
        pool = await kapi.api.get_or_none(kube.POOLS, name)
        st = (pool or {}).get("status") or {}
        return pool if st.get("ready") == "True" and st.get("slices") == slices else None

    result: Body = await embedded.poll(probe, f"GismoPool {name} Ready with {slices} slice(s)", WAIT)
    return result


async def wait_slice(kapi: embedded.EmbeddedApi, namespace: str, name: str) -> Body:
    """The RayCluster's GismoSlice; if the operator posts a Warning Event about the cluster instead
    (unknown pool, bad annotation, pool full, ...), a RuntimeError quoting it."""

    async def probe() -> tuple[str, Any] | None:
        body = await kapi.api.get_or_none(kube.SLICES, name, namespace)
        if body is not None:
            return ("slice", body)
        warnings = [
            f"{e.get('reason')}: {e.get('message')}"
            for e in await kapi.api.list(kube.EVENTS, namespace)
            if e.get("type") == "Warning" and (e.get("involvedObject") or {}).get("name") == name
        ]
        return ("warnings", warnings) if warnings else None

    kind, value = await embedded.poll(probe, f"GismoSlice {namespace}/{name}", WAIT)
    if kind == "warnings":
        raise RuntimeError(f"no slice for RayCluster {namespace}/{name}: " + "; ".join(value))
    result: Body = value
    return result


async def wait_bound(kapi: embedded.EmbeddedApi, namespace: str, name: str, pods: int) -> list[Body]:
    """The slice's regions (their GismoRegions' specs) once ``pods`` of them are Bound to pods."""

    async def probe() -> list[Body] | None:
        listed = await kapi.api.list(kube.REGIONS, namespace)
        regions = [r["spec"] for r in listed if (r.get("spec") or {}).get("slice") == name]
        bound = [r for r in regions if r.get("state") == "Bound" and r.get("podUID")]
        return regions if len(bound) >= pods else None

    result: list[Body] = await embedded.poll(probe, f"{pods} regions of GismoSlice {name} Bound", WAIT)
    return result


async def control_plane(opts: Options, progress: Progress) -> list[AdmittedPod]:
    """Steps 1-5; returns the admitted pods (head first)."""
    pool_manifest = kuberay_sim.load_manifest(opts.examples / "gismopool.yaml", "GismoPool")
    raycluster, source = kuberay_sim.load_raycluster(opts.examples / "raycluster.yaml")
    async with embedded.serve_api() as kapi:
        progress.step(
            f"embedded Kubernetes API (kmock) at {kapi.url}: gismo.io/v1alpha1 GismoPool+GismoSlice, "
            "ray.io/v1 RayCluster, core v1 pods/events/namespaces/nodes"
        )
        # Namespaces are not created: kmock 0.8 parses /api/v1/namespaces as a namespace prefix, so it
        # cannot store them (the example pool has no namespaceSelector, so none is read).
        workers = sum(
            int(g.get("replicas", 1) or 0) * int(g.get("numOfHosts", 1) or 1)
            for g in raycluster["spec"].get("workerGroupSpecs") or []
        )
        nodes = [f"node-{i}" for i in range(1 + workers)]
        pool_name = pool_manifest["metadata"]["name"]
        attached = (pool_manifest.get("spec") or {}).get("nodeSelector") or {}
        for node in nodes:
            # Each node advertises the pool's resource, as the chart's node component makes the kubelet
            # report it (the webhook admits Ray pods of a DevicePlugin pool only where some node does).
            await kapi.create(
                kube.NODES,
                {
                    "metadata": {"name": node, "labels": {"kubernetes.io/hostname": node, **attached}},
                    "status": {"allocatable": {RESOURCE_PREFIX + pool_name: "128"}},
                },
            )
        async with embedded.run_operator(kapi.url) as op:
            progress.step(
                f"operator running (kopf, all handlers); webhooks at {op.webhook_url}/mutate-raypod (dev CA)"
            )

            pool = await kapi.apply(pool_manifest)
            name = pool["metadata"]["name"]
            progress.step(f"applied {opts.examples / 'gismopool.yaml'}: GismoPool {name}")
            pool = await wait_pool(kapi, name, 0)
            progress.step("pool reconciled: kubectl get gismopools -o wide")
            show(table(POOL_HEADERS, pool_columns(pool)))

            rc = await kapi.apply(raycluster)
            rc_name, ns = rc["metadata"]["name"], rc["metadata"]["namespace"]
            progress.step(
                f"applied RayCluster {ns}/{rc_name} ({source}), annotation "
                f"{ANN_POOL}={rc['metadata'].get('annotations', {}).get(ANN_POOL)}"
            )
            slice_body = await wait_slice(kapi, ns, rc_name)
            sp = slice_body["spec"]
            progress.step("slice reserved for the cluster: kubectl get gismoslices")
            show(
                table(
                    ["NAMESPACE", "NAME", "POOL", "RAYCLUSTER", "OFFSET", "SIZE", "REGION-SIZE", "REGIONS"],
                    [[ns, rc_name, sp["pool"], sp["rayCluster"], sp["offset"], mib(int(sp["size"])),
                      mib(int(sp["regionSize"])), int(sp["size"]) // int(sp["regionSize"])]],
                )
            )  # fmt: skip

            admitted = await create_pods(kapi, op, rc, nodes, progress)
            bound = await wait_bound(kapi, ns, rc_name, len(admitted))
            progress.step(f"{len(admitted)} pods created through the webhook; regions bound in the slice")
            by_index = {int(r["index"]): r for r in bound}
            rows = []
            for pod in admitted:
                index, offset, size = pod.region
                state = by_index.get(index, {}).get("state", "?")
                rows.append([pod.name, pod.node_type, pod.node, index, offset, mib(size), state])
            show(table(["POD", "TYPE", "NODE", "REGION", "OFFSET", "SIZE", "STATE"], rows))
            regions = [p.region for p in admitted]
            if len({r[0] for r in regions}) != len(regions) or _overlap(regions):
                raise RuntimeError(f"the operator gave overlapping regions: {regions}")
            progress.step(f"every pod has its own region ({len(regions)} distinct, no overlap)")
            pool = await wait_pool(kapi, name, 1)
            progress.step("pool after the slice: kubectl get gismopools -o wide")
            show(table(POOL_HEADERS, pool_columns(pool)))
        progress.step("operator stopped")
    progress.step("embedded API stopped")
    return admitted


def _overlap(regions: Sequence[tuple[int, int, int]]) -> bool:
    spans = sorted((off, off + size) for _, off, size in regions)
    return any(a[1] > b[0] for a, b in itertools.pairwise(spans))


async def create_pods(
    kapi: embedded.EmbeddedApi,
    op: embedded.EmbeddedOperator,
    raycluster: Body,
    nodes: Sequence[str],
    progress: Progress,
) -> list[AdmittedPod]:
    """KubeRay's pods for ``raycluster``, each admitted by the webhook, stored, and scheduled."""
    out: list[AdmittedPod] = []
    context = op.ssl_context()
    async with aiohttp.ClientSession() as session:
        for i, pod in enumerate(kuberay_sim.pods_for(raycluster)):
            t0 = time.monotonic()
            response = await kuberay_sim.admit(session, op.webhook_url, context, pod)
            patched = kuberay_sim.apply_admission(pod, response)
            patched["spec"]["nodeName"] = nodes[i % len(nodes)]  # what the scheduler would do next
            stored = await kapi.create(kube.PODS, patched)
            meta = stored["metadata"]
            annotations = dict(meta.get("annotations") or {})
            if ANN_SKIPPED in annotations:
                raise RuntimeError(
                    f"pod {meta['name']} was admitted without Gismo: {annotations[ANN_SKIPPED]}"
                )
            env = ray_env(stored)
            admitted = AdmittedPod(
                meta["name"], meta["labels"][LABEL_NODE_TYPE], stored["spec"]["nodeName"], env, annotations
            )
            out.append(admitted)
            index, offset, size = admitted.region
            progress.step(
                f"pod {meta['name']}: admitted in {(time.monotonic() - t0) * 1000:.0f} ms, "
                f"{len(patch_ops(response))} patch ops, region {index} (offset {offset}, {mib(size)})"
            )
    return out


def patch_ops(response: Mapping[str, Any]) -> list[Any]:
    """The JSON patch operations in an admission response."""
    patch = response.get("patch")
    return list(json.loads(base64.b64decode(patch))) if patch else []


# ------------------------------------------------------------------------------------------------
# Data plane


def data_plane(pods: Sequence[AdmittedPod], opts: Options, progress: Progress) -> None:
    """Steps 6-8: the store on local Ray nodes with the operator's regions, and the table."""
    from gismo.testing.workloads import PAGE
    from gismo_demo import demo_dataplane as dp

    used = list(pods[: opts.nodes])
    if len(used) < 2:
        raise RuntimeError("the demo needs at least 2 Ray pods (head + 1 worker)")
    progress.step(f"starting {len(used)} local Ray nodes, one Gismo agent each on its pod's region ...")
    # GISMO_OWNER: the pod's identity; in Kubernetes the injected agent gets the pod uid (downward API).
    envs = [{**p.env, ENV_OWNER: p.name} for p in used]
    lc = dp.operator_layout_cluster(envs, cpus_per_node=1, object_store_bytes=opts.object_store_bytes)
    with lc:
        progress.step(f"Ray cluster up (marker {lc.marker}); pool file {lc.slice_path}")
        show(
            table(
                ["RAY NODE", "POD", "REGION", "OFFSET", "SIZE", "AGENT PID"],
                [[i, p.name, *p.region[:2], mib(p.region[2]), a.proc.pid if a.proc else "-"]
                 for i, (p, a) in enumerate(zip(used, lc.agents, strict=True))],
            )
        )  # fmt: skip
        dp.warm_up(lc)
        progress.step("warmed up (workers started, agents connected)")
        # Sizes that fit the regions the operator gave (an example with small regions still runs).
        region = min(p.region[2] for p in used)
        array = min(opts.array_bytes, region // 2 // PAGE * PAGE)
        total = min(opts.shuffle_bytes, len(used) * region // 2)
        total -= total % (opts.shuffle_tasks * opts.shuffle_tasks * PAGE)
        rows = dp.remote_get(lc, array, opts.repeats)
        progress.step(f"measured remote get ({opts.repeats} runs each)")
        rows.append(dp.all_to_all(lc, total, opts.shuffle_tasks, opts.repeats))
        progress.step(f"measured shuffle ({opts.repeats} runs each)")
        print(
            f"\nRay vs Gismo, measured in this run ({len(used)} Ray nodes on this machine; median of "
            f"{opts.repeats} runs, the first one with cold mappings included):"
        )
        show(
            table(
                ["WORKLOAD", "RAY (s)", "GISMO (s)", "SPEED-UP", "NOTE"],
                [
                    [r.workload, f"{r.ray_s:.4f}", f"{r.gismo_s:.4f}", f"{r.speedup:.1f}x", r.note]
                    for r in rows
                ],
            )
        )
        print(flush=True)
    left = lc.leftovers()
    if left:
        raise RuntimeError(f"left behind: {', '.join(left)}")
    progress.step(
        f"Ray cluster stopped; nothing left behind (no process with marker {lc.marker}, file removed)"
    )


# ------------------------------------------------------------------------------------------------
# Entry point


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; exit code 0 when every step worked, 1 on an error, 130 when interrupted."""
    opts = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # kopf runs in a thread here by design; its note that it cannot install signal handlers is noise.
    logging.getLogger("kopf._core.reactor.running").setLevel(logging.ERROR)
    signal.signal(signal.SIGTERM, _terminate)
    progress = Progress()
    mode = "quick" if opts.quick else "full"
    progress.step(
        f"Gismo demo ({mode}): control plane on an embedded Kubernetes API, then the data plane on Ray"
    )
    try:
        pods = asyncio.run(control_plane(opts, progress))
        data_plane(pods, opts, progress)
    except KeyboardInterrupt:
        progress.step("interrupted; everything started was stopped")
        return 130
    except Exception as exc:
        progress.step(f"FAILED: {type(exc).__name__}: {exc}")
        return 1
    progress.step(f"done in {progress.elapsed():.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
