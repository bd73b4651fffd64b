"""Benchmark: a healthy client's put+get latency with and without 1,000 hostile connections.

Three processes: the agent (open-file limit ``--nofile``, default 64, as in
tests/agent/daemon/test_bounds.py) serving a 32 MiB region of a /dev/shm pool file; this process, the
healthy client, connected beforehand; and a separate hostile process (spawned, so neither the agent
nor the client shares its interpreter) holding 1,000 connections against the agent, a quarter of each
class, each one re-opened as soon as the agent drops it:

- ``idle``: connect and say nothing;
- ``parked``: send the first 4 KiB of a request that announces 1 MiB, then stall (a slow loris);
- ``garbage``: send frames of random bytes (unknown ops, malformed bodies) and, one in eight, a
  length prefix past the limit (the agent says why and closes that connection);
- ``churn``: connect and close at once, over and over.

The timed cycle is ``put`` + ``get`` + ``delete`` of a 4 KiB object: one agent round trip (DELETE,
which carries the put's seal notice; put takes its reservation from the client's stash and get maps
the object, neither talks to the agent) plus one CREATE_MANY refill every <= 256 puts. It is timed
``--ops`` times calm and as many under the flood, in ``--rounds`` alternating calm and hostile phases
(the hostile process is started and stopped for each, so the machine's own load weighs on both
alike), and ``--newcomers`` fresh clients connect under the flood; percentiles pool the rounds.
Not a test: it prints numbers and writes JSON with a top-level ``targets`` object, the load average
before and after, the agent's CPU share per phase and the rates the hostile process achieved.

    .venv/bin/python bench/hostile.py [--out bench/results/hostile.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import resource
import selectors
import shutil
import socket
import statistics
import tempfile
import time
from typing import Any

import gismo
from _agent import AGENT_COMMAND, start_agent
from gismo import contract
from gismo.daemon import protocol
from gismo.testing.poolfile import create_pool_file

MiB = 1 << 20
HOSTILE = 1000
CLASSES = ("idle", "parked", "garbage", "churn")
#: The hostile process's pace (``--tick``): one turn per TICK_S, in which every dropped connection is
#: re-opened, every garbage connection sends one frame and every churn slot connects and closes once
#: (250 slots: up to 5,000 connects and 5,000 garbage frames a second). ``--tick 0``: as fast as one
#: process can, which on a 2-core machine mostly measures how the kernel shares the CPU with it.
TICK_S = 0.05
#: Targets (issue 10): the healthy client's p99 under the flood, and no failures anywhere.
P99_TARGET_MS = 10.0
P99_RATIO_TARGET = 5.0  # hostile p99 / calm p99: the flood costs a healthy client little


def _garbage_frame(rng: random.Random) -> bytes:
    """One hostile frame: mostly a valid length around random bytes (an unknown op or a body of the
    wrong shape: an error reply, the connection stays), one in eight an impossible length."""
    if rng.random() < 0.125:
        return protocol.LEN.pack(protocol.MAX_FRAME + 1 + rng.randrange(1 << 20)) + rng.randbytes(8)
    body = rng.randbytes(rng.randrange(1, 64))
    return protocol.LEN.pack(len(body) + 1) + bytes([rng.randrange(256)]) + body


def flood(path: str, tick: float, ready: Any, stop: Any, counts: Any) -> None:
    """The hostile process: HOSTILE connections, CLASSES in equal shares; counts[i] is how many
    connects (0), garbage frames (1) and re-opens of dropped connections (2) it made."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, HOSTILE + 256), hard))
    rng = random.Random(10)
    per = HOSTILE // len(CLASSES)
    kinds = [k for k in CLASSES for _ in range(per)]
    parked = protocol.LEN.pack(protocol.MAX_FRAME) + bytes([protocol.CREATE]) + bytes(4096 - 5)
    sel = selectors.DefaultSelector()
    conns: list[socket.socket | None] = [None] * len(kinds)
    connects = frames = reopens = 0

    def close(i: int) -> None:
        s = conns[i]
        if s is not None:
            sel.unregister(s)
            s.close()
            conns[i] = None

    def open_(i: int) -> None:
        nonlocal connects
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(path)
        except OSError:  # the agent's backlog is full: try again next turn
            s.close()
            return
        connects += 1
        if kinds[i] == "churn":
            s.close()
            return
        if kinds[i] == "parked":
            try:
                s.send(parked)
            except OSError:
                s.close()
                return
        conns[i] = s
        sel.register(s, selectors.EVENT_READ, i)

    signalled = False
    while not stop.is_set():
        t0 = time.monotonic()
        for i, kind in enumerate(kinds):
            s = conns[i]
            if s is None:
                if kind != "churn" and signalled:
                    reopens += 1
                open_(i)
            elif kind == "garbage":
                try:
                    s.send(_garbage_frame(rng))
                    frames += 1
                except OSError:  # closed by the agent, or its buffer is full: the reply reader sees it
                    pass
        if not signalled:
            ready.set()
            signalled = True
        counts[0], counts[1], counts[2] = connects, frames, reopens
        while True:
            left = tick - (time.monotonic() - t0)
            for key, _mask in sel.select(max(0.0, left)):
                i = key.data
                try:
                    if not conns[i].recv(65536):  # type: ignore[union-attr]
                        close(i)
                except BlockingIOError:
                    pass
                except OSError:
                    close(i)
            if left <= 0:
                break
    for i in range(len(kinds)):
        close(i)


def timed_cycles(c: gismo.Client, ops: int) -> tuple[list[float], int]:
    """``ops`` put+get+delete cycles of 4 KiB: (milliseconds each, cycles that failed)."""
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


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) >= 100 else max(values)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Phase:
    """The cycles of one kind of phase (calm or hostile), pooled over the rounds, and the CPU the
    agent and the hostile process used meanwhile."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.round_p99: list[float] = []
        self.errors = 0
        self.wall = self.agent_cpu = self.hostile_cpu = 0.0

    def run(self, c: gismo.Client, ops: int, agent_pid: int, hostile_pid: int = 0) -> None:
        cpu0, h0, t0 = cpu_s(agent_pid), cpu_s(hostile_pid) if hostile_pid else 0.0, time.monotonic()
        times, errors = timed_cycles(c, ops)
        self.wall += time.monotonic() - t0
        self.agent_cpu += cpu_s(agent_pid) - cpu0
        if hostile_pid:
            self.hostile_cpu += cpu_s(hostile_pid) - h0
        self.times += times
        self.round_p99.append(pct(times, 99))
        self.errors += errors

    def summary(self) -> dict[str, Any]:
        t = self.times
        return {"p50_ms": pct(t, 50), "p99_ms": pct(t, 99), "max_ms": max(t), "errors": self.errors,
                "p99_ms_per_round": self.round_p99, "seconds": self.wall,
                "agent_cpu_share": self.agent_cpu / self.wall,
                "hostile_process_cpu_share": self.hostile_cpu / self.wall}  # fmt: skip


def newcomer(sock: str) -> tuple[float, str]:
    """A fresh client's connect + put + get (milliseconds) and its error ('' if none)."""
    t0 = time.perf_counter()
    err = ""
    try:
        n = gismo.connect(sock)
        ref = n.put(b"new")
        if bytes(n.get(ref)) != b"new":
            err = "wrong bytes"
        n.close()
    except gismo.GismoError as exc:
        err = f"{type(exc).__name__}: {exc}"[:160]
    return (time.perf_counter() - t0) * 1e3, err


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ops", type=int, default=3000, help="cycles timed calm, and as many under the flood")
    ap.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="calm and hostile phases alternate this many times (the machine's own load "
        "then weighs on both alike)",
    )
    ap.add_argument("--newcomers", type=int, default=21)
    ap.add_argument("--nofile", type=int, default=64)
    ap.add_argument("--tick", type=float, default=TICK_S, help="the hostile process's turn (s); 0: flat out")
    ap.add_argument("--profile-agent", metavar="PATH", help="run the agent under cProfile, stats to PATH")
    ap.add_argument("--out", default="bench/results/hostile.json")
    args = ap.parse_args()
    load_before = os.getloadavg()
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
    command = AGENT_COMMAND
    if args.profile_agent:
        command = ("-m", "cProfile", "-o", os.path.abspath(args.profile_agent), *AGENT_COMMAND)
    agent = start_agent(env, os.path.join(tmp, "agent.log"), nofile=args.nofile, command=command)
    ctx = multiprocessing.get_context("spawn")
    calm_phase, hostile_phase = Phase(), Phase()
    newcomers: list[float] = []
    errors_seen: list[str] = []
    flood_counts, flood_wall = [0, 0, 0], 0.0
    proc = None
    try:
        c = gismo.connect(sock)
        timed_cycles(c, 200)  # warm up
        for _ in range(args.rounds):
            calm_phase.run(c, args.ops // args.rounds, agent.pid)
            ready, stop = ctx.Event(), ctx.Event()
            counts = ctx.Array("q", 3)
            proc = ctx.Process(target=flood, args=(sock, args.tick, ready, stop, counts), daemon=True)
            proc.start()
            if not ready.wait(120):
                raise SystemExit("the hostile process did not start")
            time.sleep(1.0)  # let the agent reach its file limit and the flood its pace
            counts0, t_flood = list(counts), time.monotonic()
            hostile_phase.run(c, args.ops // args.rounds, agent.pid, proc.pid or 0)
            for _ in range(args.newcomers // args.rounds):
                ms, err = newcomer(sock)
                newcomers.append(ms)
                if err:
                    errors_seen.append(err)
            flood_wall += time.monotonic() - t_flood
            flood_counts = [t + b - a for t, a, b in zip(flood_counts, counts0, counts, strict=True)]
            stop.set()
            proc.join(30)
            proc = None
            time.sleep(0.5)  # the agent closes what the flood left
        rates = [n / flood_wall for n in flood_counts]
        st = c.stats()
        c.close()
    finally:
        if proc is not None:
            proc.kill()
            proc.join(30)
        agent.terminate()
        agent.wait(60)
        with open(os.path.join(tmp, "agent.log"), errors="replace") as f:
            log_lines = len(f.read().splitlines())
        os.unlink(pool)
        shutil.rmtree(tmp, ignore_errors=True)
    calm, hostile = calm_phase.summary(), hostile_phase.summary()
    del calm["hostile_process_cpu_share"]
    new_err = len(errors_seen)
    p99, calm_p99 = hostile["p99_ms"], calm["p99_ms"]
    ratio = p99 / calm_p99
    result = {
        "meta": {"ops": args.ops, "rounds": args.rounds,
                 "cycle": "put+get+delete of 4 KiB: one agent round trip",
                 "object_bytes": 4096, "hostile_connections": HOSTILE, "hostile_classes": list(CLASSES),
                 "agent_nofile": args.nofile, "hostile_tick_s": args.tick, "cpus": os.cpu_count(),
                 "nice": os.nice(0),
                 "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                 "hostile_per_s": {"connects": rates[0], "garbage_frames": rates[1],
                                   "reopened_after_drop": rates[2]},
                 "agent_cpu_us_per_hostile_connect": hostile["agent_cpu_share"] / rates[0] * 1e6
                 if rates[0] else None,
                 "agent_log_lines": log_lines, "dropped_by_reason": st.get("dropped", {})},
        "calm": calm,
        "hostile": hostile,
        "newcomers_under_flood": {"connect_put_get_p50_ms": statistics.median(newcomers),
                                  "max_ms": max(newcomers), "errors": new_err,
                                  "first_errors": sorted(set(errors_seen))[:5]},
        "targets": {
            "calm_p50_ms": {"value": calm["p50_ms"], "target": 1.0, "met": calm["p50_ms"] <= 1.0},
            "calm_p99_ms": {"value": calm_p99, "target": P99_TARGET_MS, "met": calm_p99 <= P99_TARGET_MS},
            "hostile_p99_ms": {"value": p99, "target": P99_TARGET_MS, "met": p99 <= P99_TARGET_MS},
            "hostile_to_calm_p99_ratio": {"value": ratio, "target": P99_RATIO_TARGET,
                                          "met": ratio <= P99_RATIO_TARGET},
            "hostile_errors": {"value": hostile["errors"], "target": 0, "met": hostile["errors"] == 0},
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
