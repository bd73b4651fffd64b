"""A local multi-node Ray cluster with one Gismo agent per Ray node, for tests, benchmarks and demos.

Why: Gismo's point is reading objects made on another node in place. On one machine we emulate
that with `ray.cluster_utils.Cluster` (several raylets, each a Ray "node") and one emulation file
in /dev/shm standing in for the CXL appliance: every node's agent maps the same file and owns one
region of it, exactly as on Kubernetes where the operator hands each Ray pod a region and the
agent sidecar sets `GISMO_*` in the Ray container.

How a node's tasks find their own agent: each raylet is started with that node's `GISMO_*`
environment (`env_vars`), and Ray workers inherit the raylet's environment, so `gismo.ray` inside
a task reads `GISMO_SOCKET` etc. from `os.environ` -- the same mechanism as in a Kubernetes pod.

How they import gismo: as in a pod, each node's agent first delivers the client into
that node's own folder (`gismo agent --deliver-to`, see gismo.deliver) and the raylet's
`PYTHONPATH` is the driver's `PYTHONPATH` with that folder appended, so Ray workers import the
delivered copy (`PYTHONPATH` precedes site-packages and the editable install), not this checkout.
The driver (this process) is attached to node 0; while the cluster is up its `os.environ` carries
node 0's `GISMO_*` (restored on exit).

Usage::

    from gismo.testing import LocalCluster

    with LocalCluster(nodes=3, region_bytes=256 << 20) as lc:
        @ray.remote
        def f(): ...
        ray.get(f.options(scheduling_strategy=lc.on_node(1)).remote())

Cleanup is unconditional (also on errors, KeyboardInterrupt in the body, or a failed start):
the driver disconnects, every raylet/worker/agent started here is stopped (stragglers are found
by a marker in their environment and killed by pid), the emulation file and the temporary
directory are removed, and the driver's environment is restored. If the driver itself dies
without running Python code (SIGKILL, SIGTERM's default action, os._exit), a small janitor
process started with the cluster does the same (`gismo.testing.janitor`).

Cost: starting takes ~3-6 s per cluster (mostly Ray), stopping ~2-5 s. Memory is only what is
touched: object stores and the slice file are tmpfs pages, allocated on first write.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from gismo import contract as c
from gismo.memory import model as _model
from gismo.poolrules import DEFAULT_FILE_PREFIXES
from gismo.testing.poolfile import create_pool_file

GISMO_ENV_KEYS = c.REGION_ENV
#: Every Ray process of the harness listens on loopback only, never the machine's interface address.
LOOPBACK = "127.0.0.1"
# Ray resolves 127.0.0.1 back to the interface address unless this is off (ray._private.ray_constants
# reads it at import; services.get_node_ip_address then answers loopback): set for the driver and
# inherited by every raylet and worker.
RAY_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# Set in the environment of every process this harness starts (raylets, workers, agents), so
# stragglers can be found after shutdown even when Ray has rewritten their process titles.
MARKER_ENV = "GISMO_TESTING_CLUSTER"

MiB = 1 << 20


@dataclass
class AgentProcess:
    """One `gismo agent` daemon serving one Ray node's region."""

    index: int
    env: dict[str, str]
    socket_path: str
    log_path: str
    client_dir: str = ""  # where this agent delivers the client (on the node's PYTHONPATH)
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def log_tail(self, limit: int = 4000) -> str:
        """The end of the agent's combined stdout/stderr (for error messages)."""
        try:
            return Path(self.log_path).read_text(errors="replace")[-limit:]
        except OSError:
            return ""


def _proc_environ_has(pid: int, needle: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return needle in f.read()
    except OSError:
        return False


def _parents() -> dict[int, int]:
    """pid -> parent pid of every live (non-zombie) process."""
    out: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()  # after "pid (comm) "
        if fields[0] != b"Z":
            out[int(entry)] = int(fields[1])
    return out


def leftover_processes(marker: str) -> list[int]:
    """Live PIDs (other than this one) started for the cluster with this marker.

    That is: processes whose initial environment carries `MARKER_ENV=<marker>`, plus all their
    descendants (some Ray daemons rewrite their process title over the environment block, so
    the marker is not always readable; their parent's is). Cost: two reads of /proc per process
    on the machine (a few ms).
    """
    needle = f"{MARKER_ENV}={marker}\0".encode()
    me = os.getpid()
    parents = _parents()
    found = {pid for pid in parents if pid != me and _proc_environ_has(pid, needle)}
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    todo = list(found)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found and child != me:
                found.add(child)
                todo.append(child)
    return sorted(found)


class LocalCluster:
    """N Ray nodes (raylets) on this machine, each with its own Gismo agent and region.

    Args:
        nodes: number of Ray nodes; node 0 is the head and the driver's node.
        cpus_per_node: `num_cpus` of each node.
        object_store_bytes: Ray object store size per node.
        agents: start one Gismo agent per node (False: a plain Ray cluster, no `GISMO_*` anywhere).
        region_bytes: size of each node's region; the emulation file is `nodes * region_bytes`.
        shm_dir: where the emulation file lives (a tmpfs).
        tmp_root: parent of the temporary directory (kept short: Unix socket paths < 108 chars).
        agent_start_timeout: seconds to wait for each agent's socket to accept a client.
        connect: `ray.init` the driver to the cluster on start.
        ray_env: extra environment for every raylet (e.g. Ray system config overrides).
        memory: ``"noncoherent"`` runs every agent, raylet, worker and the driver under the
            non-coherent memory model (gismo.memory.model); empty: one coherent file.
        layout: the ``GISMO_*`` environment of each node's region, as the operator's webhook gives
            it to a Ray pod (slice offset/size, region index/offset/size); ``nodes`` and
            ``region_bytes`` then follow from it. Default: node i owns region i of a slice of
            ``nodes * region_bytes`` at offset 0. ``GISMO_DEVICE`` and ``GISMO_SOCKET`` are always
            this cluster's own file and sockets.
    """

    def __init__(
        self,
        nodes: int = 3,
        *,
        cpus_per_node: int = 1,
        object_store_bytes: int = 512 * MiB,
        agents: bool = True,
        region_bytes: int = 256 * MiB,
        shm_dir: str = "/dev/shm",
        tmp_root: str = "/tmp",
        agent_start_timeout: float = 30.0,
        connect: bool = True,
        ray_env: dict[str, str] | None = None,
        memory: str = "",
        layout: Sequence[Mapping[str, str]] | None = None,
    ) -> None:
        if layout is not None:
            if not layout:
                raise ValueError("layout needs at least one region")
            nodes, region_bytes = len(layout), int(layout[0][c.ENV_REGION_SIZE])
        self.layout = [dict(r) for r in layout] if layout is not None else None
        if nodes < 1:
            raise ValueError("nodes must be >= 1")
        self.nodes = nodes
        self.cpus_per_node = cpus_per_node
        self.object_store_bytes = object_store_bytes
        self.with_agents = agents
        self.region_bytes = region_bytes
        self.shm_dir = shm_dir
        self.tmp_root = tmp_root
        self.agent_start_timeout = agent_start_timeout
        self.connect = connect
        self.ray_env = dict(ray_env or {})
        self.memory = memory
        self.tmpdir = ""
        self.slice_path = ""
        self.marker = ""
        self.agents: list[AgentProcess] = []
        self.node_ids: list[str] = []
        self.cluster: Any = None
        self._saved_env: dict[str, str | None] = {}
        self._janitor: subprocess.Popen[bytes] | None = None
        self._started = False

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> LocalCluster:
        """Create the file, start the agents, the raylets, and connect the driver.

        On any failure everything already started is torn down before the error propagates.
        """
        if self._started:
            raise RuntimeError("LocalCluster already started")
        self._started = True
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        self._saved_env[RAY_CLUSTER_ENV] = os.environ.get(RAY_CLUSTER_ENV)
        os.environ[RAY_CLUSTER_ENV] = "0"
        import ray
        from ray.cluster_utils import Cluster

        _loopback_only()
        if ray.is_initialized():
            raise RuntimeError("ray is already initialized in this process; shut it down first")
        self.tmpdir = tempfile.mkdtemp(prefix="gr-", dir=self.tmp_root)
        self.marker = os.path.basename(self.tmpdir)
        if self.with_agents:
            self.slice_path = os.path.join(self.shm_dir, f"gismo-{self.marker}.slice")
        self._start_janitor()
        # The driver's env: no inherited GISMO_* (raylets inherit ours), Ray's temp dir inside ours.
        for key in (*GISMO_ENV_KEYS, c.ENV_TEST_MEMORY, "RAY_TMPDIR", MARKER_ENV):
            if key in self._saved_env:
                continue
            self._saved_env[key] = os.environ.pop(key, None)
        os.environ["RAY_TMPDIR"] = self.tmpdir
        os.environ[MARKER_ENV] = self.marker

        if self.with_agents:
            self._start_agents()

        # The first add_node starts the head (GCS included) on LOOPBACK too.
        self.cluster = Cluster(shutdown_at_exit=False)
        for i in range(self.nodes):
            node_env = dict(self.ray_env)
            node_env[MARKER_ENV] = self.marker
            if self.with_agents:
                node_env.update(self.agents[i].env)
                node_env["PYTHONPATH"] = python_path(os.environ.get("PYTHONPATH"), self.agents[i].client_dir)
            kwargs: dict[str, Any] = {
                "num_cpus": self.cpus_per_node,
                "object_store_memory": self.object_store_bytes,
                "env_vars": node_env,
                "resources": {f"gismo_node_{i}": 1000},
                "node_ip_address": LOOPBACK,
            }
            if i == 0:
                kwargs["include_dashboard"] = False
                kwargs["temp_dir"] = os.path.join(self.tmpdir, "ray")
            node = self.cluster.add_node(**kwargs)
            self.node_ids.append(node.node_id)
        self.cluster.wait_for_nodes()

        if self.with_agents:
            os.environ.update(self.agents[0].env)
        _reset_gismo_ray()
        if self.connect:
            ray.init(address=self.cluster.address, log_to_driver=True)

    def _region_env(self, i: int) -> dict[str, str]:
        """Node ``i``'s region: from ``layout``, or region i of a slice of ``nodes`` regions."""
        if self.layout is not None:
            return dict(self.layout[i])
        return {
            c.ENV_POOL: "local",
            c.ENV_BACKEND: c.BACKEND_SHM,
            c.ENV_SLICE_OFFSET: "0",
            c.ENV_SLICE_SIZE: str(self.nodes * self.region_bytes),
            c.ENV_REGION: str(i),
            c.ENV_REGION_OFFSET: str(i * self.region_bytes),
            c.ENV_REGION_SIZE: str(self.region_bytes),
        }

    def _start_agents(self) -> None:
        regions = [self._region_env(i) for i in range(self.nodes)]
        size = max(int(r[c.ENV_SLICE_OFFSET]) + int(r[c.ENV_SLICE_SIZE]) for r in regions)
        pool = regions[0].get(c.ENV_POOL) or "local"
        # A Gismo pool file, as the node component makes one: agents format nothing else.
        create_pool_file(self.slice_path, pool, size)
        for i, region in enumerate(regions):
            sock = os.path.join(self.tmpdir, f"agent-{i}.sock")
            env = {c.ENV_POOL: pool, **region, c.ENV_DEVICE: self.slice_path, c.ENV_SOCKET: sock}
            if not any(self.slice_path.startswith(p + "/") for p in DEFAULT_FILE_PREFIXES):
                env[c.ENV_FILE_PREFIXES] = os.path.dirname(self.slice_path)
            if self.memory:
                env[c.ENV_TEST_MEMORY] = self.memory  # agents, raylets, workers and the driver alike
            agent = AgentProcess(
                i,
                env,
                sock,
                os.path.join(self.tmpdir, f"agent-{i}.log"),
                os.path.join(self.tmpdir, f"client-{i}"),
            )
            self.agents.append(agent)
            proc_env = {k: v for k, v in os.environ.items() if not k.startswith(c.ENV_PREFIX)}
            proc_env.update(env)
            proc_env[MARKER_ENV] = self.marker
            with open(agent.log_path, "wb") as log:
                agent.proc = subprocess.Popen(
                    [sys.executable, "-m", "gismo.cli", "agent", "--deliver-to", agent.client_dir],
                    env=proc_env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        for agent in self.agents:
            self._wait_agent(agent)

    def _start_janitor(self) -> None:
        """A watchdog that cleans up if this process dies without `close()` (see janitor.py)."""
        env = {k: v for k, v in os.environ.items() if k != MARKER_ENV}
        paths = [p for p in (self.slice_path, self.tmpdir) if p]
        if self.slice_path and self.memory:
            paths += [_model.cache_path(self.slice_path, i) for i in range(self.nodes)]
        self._janitor = subprocess.Popen(
            [sys.executable, "-m", "gismo.testing.janitor", self.marker, *paths],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )

    def _stop_janitor(self) -> None:
        j, self._janitor = self._janitor, None
        if j is None:
            return
        with contextlib.suppress(OSError, ValueError):
            assert j.stdin is not None
            j.stdin.write(b"done\n")
            j.stdin.close()
        try:
            j.wait(5)
        except subprocess.TimeoutExpired:
            j.kill()
            j.wait()

    def _wait_agent(self, agent: AgentProcess) -> None:
        import gismo

        deadline = time.monotonic() + self.agent_start_timeout
        last: BaseException | None = None
        while time.monotonic() < deadline:
            assert agent.proc is not None
            if agent.proc.poll() is not None:
                raise RuntimeError(
                    f"gismo agent {agent.index} exited with {agent.proc.returncode}:\n{agent.log_tail()}"
                )
            if os.path.exists(agent.socket_path):
                try:
                    client = gismo.connect(socket_path=agent.socket_path)
                    client.close()
                    return
                except Exception as e:
                    last = e
            time.sleep(0.05)
        raise RuntimeError(
            f"gismo agent {agent.index} not ready after {self.agent_start_timeout}s ({last!r}):\n"
            f"{agent.log_tail()}"
        )

    def close(self) -> None:
        """Stop everything this cluster started and remove its files. Idempotent, never raises."""
        if not self._started:
            return
        self._started = False
        with contextlib.suppress(Exception):
            _reset_gismo_ray()
        with contextlib.suppress(Exception):
            import ray

            if ray.is_initialized():
                ray.shutdown()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.shutdown()
            self.cluster = None
        for agent in self.agents:
            _stop(agent.proc)
        if self.marker:
            for pid in leftover_processes(self.marker):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            _wait_gone(self.marker, timeout=10.0)
        if self.slice_path:
            for path in [self.slice_path, *_model.cache_files(self.slice_path)]:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()
        self._stop_janitor()

    # ----------------------------------------------------------------- helpers for callers

    def on_node(self, index: int, soft: bool = False) -> Any:
        """A Ray scheduling strategy that pins a task/actor to node `index`."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        return NodeAffinitySchedulingStrategy(node_id=self.node_ids[index], soft=soft)

    def node_env(self, index: int) -> dict[str, str]:
        """The `GISMO_*` environment of node `index` (empty without agents)."""
        return dict(self.agents[index].env) if self.with_agents else {}

    def agent_stats(self) -> list[dict[str, Any]]:
        """`Client.stats()` of every node's agent, in node order (connects to each socket)."""
        import gismo

        out: list[dict[str, Any]] = []
        for agent in self.agents:
            client = gismo.connect(socket_path=agent.socket_path)
            try:
                out.append(dict(client.stats()))
            finally:
                client.close()
        return out

    def leftovers(self) -> list[str]:
        """What this cluster left behind (processes, files); empty after a clean `close()`."""
        left = [f"pid {pid}" for pid in leftover_processes(self.marker)] if self.marker else []
        left += [p for p in (self.slice_path, self.tmpdir) if p and os.path.exists(p)]
        return left

    @contextlib.contextmanager
    def driver_on_node(self, index: int) -> Iterator[None]:
        """Temporarily make the driver use node `index`'s agent (for tests of cross-node reads)."""
        saved = {k: os.environ.get(k) for k in GISMO_ENV_KEYS}
        os.environ.update(self.node_env(index))
        _reset_gismo_ray()
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            _reset_gismo_ray()


def python_path(user: str | None, delivered: str) -> str:
    """``PYTHONPATH`` with the delivered client folder appended (the user's entries keep precedence)."""
    return f"{user}{os.pathsep}{delivered}" if user else delivered


def _loopback_only() -> None:
    """Make an already imported Ray answer loopback for this process's own address too.

    RAY_CLUSTER_ENV only takes effect when ray is first imported; a driver that imported ray before
    starting the cluster gets the same rule by the constant that services.get_node_ip_address reads.
    """
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        setattr(constants, "ENABLE_RAY_CLUSTER", False)  # noqa: B010 (private module, untyped)


def _reset_gismo_ray() -> None:
    mod = sys.modules.get("gismo.ray")
    if mod is not None:
        mod.reset()


def _stop(proc: subprocess.Popen[bytes] | None, timeout: float = 5.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)


def _wait_gone(marker: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while leftover_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
