"""Benchmark: a healthy client's put+get latency with and without 1,000 hostile connections.

One agent (open-file limit ``--nofile``, default 64, as in tests/agent/daemon/test_bounds.py) serves a
32 MiB region of a /dev/shm pool file. A client connected beforehand times ``--ops`` put+get pairs of
4 KiB objects (p50/p99); then a separate process opens 1,000 connections against the agent and keeps
them up (re-opening any the agent drops; half never say anything, half park an unfinished 1 MiB
request), and the same client is timed again, plus ``--newcomers`` fresh clients connecting under the
flood. Not a test: it prints numbers and writes JSON with a top-level ``targets`` object.

    .venv/bin/python bench/hostile.py [--out bench/results/hostile.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import gismo
from gismo import contract
from gismo.daemon import protocol
from gismo.testing.poolfile import create_pool_file

MiB = 1 << 20
HOSTILE = 1000
#: Targets: under the flood the healthy client's p99 stays below this, nothing fails, newcomers connect.
P99_TARGET_MS = 10.0


def start_agent(env: dict[str, str], log: str, nofile: int) -> subprocess.Popen[bytes]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(contract.ENV_PREFIX)} | env

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    with open(log, "ab") as f:
        p = subprocess.Popen([sys.executable, "-m", "gismo.cli", "agent"], env=full, stdout=f, stderr=f,
                             preexec_fn=cap)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise SystemExit(f"agent exited {p.returncode}; see {log}")
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(env[contract.ENV_SOCKET])
                s.sendall(protocol.frame(protocol.HEALTH))
                if s.recv(64):
                    return p
        except OSError:
            time.sleep(0.05)
    raise SystemExit("agent did not start")


def flood(path: str, ready: Any, stop: Any) -> None:
    """Hold HOSTILE connections open; re-open what the agent drops."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, HOSTILE + 256), hard))
    conns: list[socket.socket | None] = [None] * HOSTILE
    partial = protocol.LEN.pack(protocol.MAX_FRAME) + b"\x01" + bytes(4096)
    signalled = False
    while not stop.is_set():
        for i in range(HOSTILE):
            s = conns[i]
            if s is not None:
                try:
                    if s.recv(1, socket.MSG_DONTWAIT) == b"":
                        s.close()
                        s = conns[i] = None
                except BlockingIOError:
                    continue
                except OSError:
                    s.close()
                    s = conns[i] = None
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(path)
                if i % 2:
                    s.send(partial)
                conns[i] = s
            except OSError:
                s.close()
        if not signalled:
            ready.set()
            signalled = True
        time.sleep(0.01)
    for s in conns:
        if s is not None:
            s.close()


def timed_pairs(c: gismo.Client, ops: int) -> tuple[list[float], int]:
    payload = os.urandom(4096)
    times, errors = [], 0
    for _ in range(ops):
        t0 = time.perf_counter()
        try:
            ref = c.put(payload)
            ok = bytes(c.get(ref)) == payload
            c.delete(ref)
        except gismo.GismoError:
            ok = False
        times.append((time.perf_counter() - t0) * 1e3)
        errors += not ok
    return times, errors


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) >= 100 else max(values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ops", type=int, default=3000)
    ap.add_argument("--newcomers", type=int, default=20)
    ap.add_argument("--nofile", type=int, default=64)
    ap.add_argument("--out", default="bench/results/hostile.json")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="gsh-", dir="/tmp")
    pool = f"/dev/shm/gismo-hostile-{os.getpid()}.pool"
    region = 32 * MiB
    create_pool_file(pool, "hostile", region)
    sock = os.path.join(tmp, "agent.sock")
    env = {
        contract.ENV_POOL: "hostile", contract.ENV_DEVICE: pool, contract.ENV_SLICE_OFFSET: "0",
        contract.ENV_SLICE_SIZE: str(region), contract.ENV_REGION: "0", contract.ENV_REGION_SIZE: str(region),
        contract.ENV_SOCKET: sock,
    }  # fmt: skip
    agent = start_agent(env, os.path.join(tmp, "agent.log"), args.nofile)
    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    proc = None
    try:
        c = gismo.connect(sock)
        timed_pairs(c, 200)  # warm up
        calm, calm_err = timed_pairs(c, args.ops)
        proc = ctx.Process(target=flood, args=(sock, ready, stop), daemon=True)
        proc.start()
        ready.wait(120)
        time.sleep(1.0)
        stormy, storm_err = timed_pairs(c, args.ops)
        newcomers, new_err = [], 0
        errors_seen: list[str] = []
        for _ in range(args.newcomers):
            t0 = time.perf_counter()
            try:
                n = gismo.connect(sock)
                ref = n.put(b"new")
                new_err += bytes(n.get(ref)) != b"new"
                n.close()
            except gismo.GismoError as exc:
                new_err += 1
                errors_seen.append(f"{type(exc).__name__}: {exc}"[:160])
            newcomers.append((time.perf_counter() - t0) * 1e3)
        st = c.stats()
        c.close()
    finally:
        stop.set()
        if proc is not None:
            proc.join(30)
        agent.terminate()
        agent.wait(30)
        with open(os.path.join(tmp, "agent.log"), errors="replace") as f:
            log_lines = len(f.read().splitlines())
        os.unlink(pool)
        shutil.rmtree(tmp, ignore_errors=True)
    p99 = pct(stormy, 99)
    result = {
        "meta": {"ops": args.ops, "object_bytes": 4096, "hostile_connections": HOSTILE,
                 "agent_nofile": args.nofile, "cpus": os.cpu_count(), "loadavg_1m": os.getloadavg()[0],
                 "agent_log_lines": log_lines,
                 "dropped_by_reason": st.get("dropped", {})},
        "calm": {"p50_ms": pct(calm, 50), "p99_ms": pct(calm, 99), "errors": calm_err},
        "hostile": {"p50_ms": pct(stormy, 50), "p99_ms": p99, "errors": storm_err},
        "newcomers_under_flood": {"connect_put_get_p50_ms": statistics.median(newcomers),
                                  "max_ms": max(newcomers), "errors": new_err,
                                  "first_errors": sorted(set(errors_seen))[:5]},
        "targets": {
            "hostile_p99_ms": {"value": p99, "target": P99_TARGET_MS, "met": p99 <= P99_TARGET_MS},
            "hostile_errors": {"value": storm_err, "target": 0, "met": storm_err == 0},
            "newcomer_errors": {"value": new_err, "target": 0, "met": new_err == 0},
        },
    }  # fmt: skip
    print(json.dumps(result, indent=2))
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
