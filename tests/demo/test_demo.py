"""``make demo`` in CI: ``python -m gismo_demo --quick`` as a user runs it, output checked.

What is checked: the pool is Ready with the figures the example pool and the opted-in RayCluster
imply, a slice exists for the cluster, every pod KubeRay would create got its own region (distinct,
non-overlapping, Bound), the Ray-vs-Gismo table has numbers, and nothing is left behind (no
process carrying the Ray harness's marker, no emulation file, no temporary folders), also when the
demo is interrupted with Ctrl-C in the middle of the Ray part.

The subprocess timeouts are guards against hangs, not assertions about speed.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gismo.testing import leftover_processes
from gismo_operator.core.quantity import parse_bytes as parse_quantity
from gismo_operator.testing import kuberay_sim

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(420)]

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
GUARD = 300  # seconds: a hung demo is killed (and the test fails) after this
GiB = 1 << 30


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    def explain(self) -> str:
        tail = self.stderr[-4000:]
        return f"exit {self.returncode}\n--- stdout ---\n{self.stdout}\n--- stderr (tail) ---\n{tail}"


def tls_dirs(tmp: str) -> set[str]:
    return set(glob.glob(os.path.join(tmp, "gismo-tls-*")))


@contextlib.contextmanager
def private_tmp() -> Iterator[str]:
    """A temp folder of the demo run's own (its TMPDIR), so what other processes on the machine leave
    in /tmp at the same time can never be mistaken for the demo's leftovers. Short, for Ray's
    socket paths."""
    tmp = tempfile.mkdtemp(prefix="gd-")
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def demo_env(tmp: str) -> dict[str, str]:
    return {**os.environ, "TMPDIR": tmp}


def demo_cmd() -> list[str]:
    return [sys.executable, "-m", "gismo_demo", "--quick"]


def stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM (the demo cleans up), then SIGKILL for the whole group if it does not exit."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def table_rows(stdout: str, header: str) -> Iterator[list[list[str]]]:
    """Each table whose header line matches the regex ``header``: its rows split on 2+ spaces."""
    lines = stdout.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("    ") and re.match(header, line.strip()):
            rows = []
            for row in lines[i + 1 :]:
                if not row.startswith("    ") or not row.strip():
                    break
                rows.append(re.split(r"\s{2,}", row.strip()))
            yield rows


def expected_slice_bytes() -> tuple[str, int]:
    """(RayCluster name, slice size): head + every worker group's maxReplicas x numOfHosts regions."""
    rc, _ = kuberay_sim.load_raycluster(EXAMPLES / "raycluster.yaml")
    pool = kuberay_sim.load_manifest(EXAMPLES / "gismopool.yaml", "GismoPool")
    ann = (rc["metadata"].get("annotations") or {}).get("gismo.io/region-size")
    region = parse_quantity(ann or pool["spec"]["regionSize"])
    regions = 1 + sum(
        int(g.get("maxReplicas", g.get("replicas", 1))) * int(g.get("numOfHosts", 1))
        for g in rc["spec"].get("workerGroupSpecs") or []
    )
    return rc["metadata"]["name"], regions * region


@pytest.fixture(scope="module")
def demo_run() -> Iterator[tuple[Run, set[str]]]:
    """One quick demo run shared by the checks below (it takes ~15-60 s)."""
    with private_tmp() as tmp:
        yield from _demo_run(tmp)


def _demo_run(tmp: str) -> Iterator[tuple[Run, str]]:
    proc = subprocess.Popen(
        demo_cmd(),
        cwd=REPO,
        env=demo_env(tmp),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=GUARD)
    except subprocess.TimeoutExpired:
        stop(proc)
        out, err = proc.communicate()
        pytest.fail(f"the demo did not finish within {GUARD} s:\n{out}\n{err[-4000:]}")
    yield Run(proc.returncode, out, err), tmp


def test_demo_succeeds(demo_run: tuple[Run, str]) -> None:
    run, _ = demo_run
    assert run.returncode == 0, run.explain()
    assert re.search(r"done in \d+\.\d s", run.stdout), run.explain()
    # Progress: one timestamped line per step.
    steps = [line for line in run.stdout.splitlines() if re.match(r"\[\s*\d+\.\d+s\] ", line)]
    assert len(steps) >= 10, run.explain()


def test_pool_ready_with_expected_figures(demo_run: tuple[Run, str]) -> None:
    run, _ = demo_run
    pool = kuberay_sim.load_manifest(EXAMPLES / "gismopool.yaml", "GismoPool")
    capacity = parse_quantity(pool["spec"]["capacity"])
    _, slice_bytes = expected_slice_bytes()
    tables = list(table_rows(run.stdout, r"NAME\s+CAPACITY"))
    assert len(tables) == 2, run.explain()  # before and after the slice
    first, after = tables[0][0], tables[1][0]
    # NAME CAPACITY ALLOCATED FREE SLICES READY BACKEND LARGEST-FREE REGIONS
    assert first[0] == pool["metadata"]["name"]
    assert parse_quantity(first[1]) == capacity and first[4] == "0" and first[5] == "True", first
    assert parse_quantity(after[1]) == capacity, after
    assert parse_quantity(after[2]) == slice_bytes, after
    assert parse_quantity(after[3]) == capacity - slice_bytes, after
    assert after[4] == "1" and after[5] == "True" and after[6] == pool["spec"]["backend"]["type"], after


def test_slice_for_the_cluster(demo_run: tuple[Run, str]) -> None:
    run, _ = demo_run
    name, slice_bytes = expected_slice_bytes()
    (rows,) = list(table_rows(run.stdout, r"NAMESPACE\s+NAME"))
    assert len(rows) == 1, rows
    _ns, slice_name, pool, raycluster, _offset, size, *_ = rows[0]
    assert slice_name == raycluster == name
    assert pool == "pool0"
    assert _bytes(size) == slice_bytes, rows


def test_every_pod_got_a_distinct_region(demo_run: tuple[Run, str]) -> None:
    run, _ = demo_run
    rc, _ = kuberay_sim.load_raycluster(EXAMPLES / "raycluster.yaml")
    want = kuberay_sim.pods_for(rc)
    (rows,) = list(table_rows(run.stdout, r"POD\s+TYPE"))
    assert len(rows) == len(want), rows
    assert [r[1] for r in rows] == [p["metadata"]["labels"]["ray.io/node-type"] for p in want]
    indices = [int(r[3]) for r in rows]
    spans = sorted((int(r[4]), int(r[4]) + _bytes(r[5])) for r in rows)
    assert len(set(indices)) == len(indices), rows
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), spans
    assert all(r[6] == "Bound" for r in rows), rows
    assert all(r[0].startswith(rc["metadata"]["name"] + "-") for r in rows), rows
    # The data plane ran on the operator's regions: the Ray node table repeats them.
    (nodes,) = list(table_rows(run.stdout, r"RAY NODE\s+POD"))
    assert len(nodes) == 2
    by_pod = {r[0]: (r[3], r[4]) for r in rows}
    for node in nodes:
        assert by_pod[node[1]] == (node[2], node[3]), (node, rows)


def test_ray_vs_gismo_table(demo_run: tuple[Run, str]) -> None:
    run, _ = demo_run
    (rows,) = list(table_rows(run.stdout, r"WORKLOAD\s+RAY"))
    assert len(rows) == 3, run.explain()
    for row in rows:
        ray_s, gismo_s, speedup = float(row[1]), float(row[2]), row[3]
        assert ray_s > 0 and gismo_s > 0, row
        assert re.fullmatch(r"\d+(\.\d+)?x", speedup), row
        assert len(row) == 4, f"a note means a fallback to Ray's store: {row}"
    assert any("shuffle" in r[0] for r in rows)
    assert any("get+read" in r[0] for r in rows)


def test_nothing_left_behind(demo_run: tuple[Run, str]) -> None:
    run, tmp = demo_run
    assert_clean(run.stdout, tmp)


def assert_clean(stdout: str, tmp: str) -> None:
    marker = re.search(r"marker (gr-\w+)", stdout)
    assert marker, stdout
    m = marker.group(1)
    assert leftover_processes(m) == []
    assert not os.path.exists(f"/dev/shm/gismo-{m}.slice")
    assert not os.path.exists(os.path.join("/tmp", m))  # LocalCluster's own folder (unique marker)
    assert os.listdir(tmp) == [], "the demo left files in its TMPDIR"
    assert tls_dirs(tmp) == set()


def test_ctrl_c_during_the_ray_part_cleans_up() -> None:
    with private_tmp() as tmp:
        _ctrl_c_cleans_up(tmp)


def _ctrl_c_cleans_up(tmp: str) -> None:
    proc = subprocess.Popen(
        demo_cmd(),
        cwd=REPO,
        env=demo_env(tmp),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "Ray cluster up" in line:
                os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C: the whole foreground group
                break
        rest, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        stop(proc)
        pytest.fail("the demo did not stop within 120 s of Ctrl-C:\n" + "".join(lines))
    finally:
        if proc.poll() is None:
            stop(proc)
    stdout = "".join(lines) + rest
    assert "Ray cluster up" in stdout, stdout
    assert proc.returncode == 130, stdout
    assert "interrupted" in stdout
    assert_clean(stdout, tmp)


def _bytes(text: str) -> int:
    number, unit = text.split()
    return int(float(number) * {"MiB": 1 << 20, "GiB": GiB}[unit])
