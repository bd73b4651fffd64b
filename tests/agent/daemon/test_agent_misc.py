"""Agent surface: metrics and probes, the CLI, config errors, batch delete, reservation cleanup."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
from storefix import Pool

import gismo
from gismo import config
from gismo.testing import wait_until


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_probes_and_cli(pool: Pool) -> None:
    port = _free_port()
    a = pool.agent(0, metrics_port=port)
    c = gismo.connect(a.socket)
    try:
        refs = [c.put(np.arange(1000)) for _ in range(3)]
        for r in refs:
            del_view = c.get(r)
            del del_view
        c.note_fallback(2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as r:
            assert r.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
            assert r.status == 200
        c.stats()  # flushes this client's queued notices to the agent
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
        for name in ("gismo_bytes_used", "gismo_bytes_free", "gismo_objects", "gismo_puts_total",
                     "gismo_gets_total", "gismo_fallbacks_total"):  # fmt: skip
            assert name in text, name
        line = next(x for x in text.splitlines() if x.startswith("gismo_objects{"))
        assert line.endswith(" 3.0")
        assert next(x for x in text.splitlines() if x.startswith("gismo_gets_total{")).endswith(" 3.0")
        assert next(x for x in text.splitlines() if x.startswith("gismo_fallbacks_total{")).endswith(" 2.0")
        env = {**os.environ, "GISMO_SOCKET": a.socket}
        out = subprocess.run(
            [sys.executable, "-m", "gismo.cli", "stats"], env=env, capture_output=True, text=True
        )
        assert out.returncode == 0 and json.loads(out.stdout)["objects"] == 3
        out = subprocess.run(
            [sys.executable, "-m", "gismo.cli", "health", "--socket", a.socket], capture_output=True
        )
        assert out.returncode == 0
        bad = os.path.join(pool.dir, "nothing.sock")
        out = subprocess.run(
            [sys.executable, "-m", "gismo.cli", "health", "--socket", bad], capture_output=True
        )
        assert out.returncode == 1
    finally:
        c.close()


def test_config_errors_name_the_variable(pool: Pool) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GISMO_")}
    env.update(pool.env(0))
    env["GISMO_REGION"] = "9"
    # A configuration the agent refuses is not an exit (Ray would then wait on the sidecar): the agent
    # answers degraded, refuses every client with the reason, and `gismo health` says why.
    proc = subprocess.Popen(
        [sys.executable, "-m", "gismo.cli", "agent"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        event = json.loads(proc.stdout.readline())
        assert event["event"] == "degraded" and "GISMO_REGION=9" in event["reason"]
        probe = subprocess.run(  # the sidecar's startup probe passes: Ray starts
            [sys.executable, "-m", "gismo.cli", "health", "--answering"],
            env=env,
            capture_output=True,
            text=True,
        )
        assert probe.returncode == 0, probe.stderr
        health = subprocess.run(  # but the agent does not serve its region, and says why
            [sys.executable, "-m", "gismo.cli", "health"], env=env, capture_output=True, text=True
        )
        assert health.returncode == 1
        assert json.loads(health.stdout)["degraded"] == event["reason"]
        with pytest.raises(gismo.AgentUnavailable, match=r"agent degraded: .*GISMO_REGION=9"):
            gismo.connect(env["GISMO_SOCKET"])
    finally:
        proc.terminate()
        proc.wait(30)
    with pytest.raises(config.ConfigError, match="GISMO_REGION_OFFSET"):
        config.load(environ=pool.env(1) | {"GISMO_REGION_OFFSET": "12345"}).validate()
    cfg = config.load(environ=pool.env(1) | {"GISMO_REGION_OFFSET": str(pool.region_size)}).validate()
    assert cfg.region == 1  # slice-relative offsets are accepted as well as absolute ones
    assert config.parse_size("64Mi") == 64 << 20 and config.parse_size("2G") == 2 * 10**9
    with pytest.raises(gismo.AgentUnavailable):
        gismo.connect(os.path.join(pool.dir, "nothing.sock"))


def test_delete_many_and_stash_released_on_disconnect(pool: Pool) -> None:
    a = pool.agent(0)
    c = gismo.connect(a.socket)
    refs = [c.put(b"x" * 100) for _ in range(10)]
    st = c.stats()
    assert st["reserved"] > 0 and st["bytes_reserved"] > 0  # pre-reserved small-object stash
    assert st["bytes_used"] == 10 * 256  # sealed objects only (100 B + header, in the 256 B class)
    assert st["bytes_used"] + st["bytes_reserved"] + st["bytes_free"] == st["data_size"]
    assert c.delete_many(refs[:6]) == 6
    assert c.delete_many(refs[:8]) == 2  # already-deleted ones are skipped
    c.close()
    st = wait_until(lambda: (s := a.stats())["clients"] == 1 and s, "disconnect")
    assert st["reserved"] == 0 and st["bytes_reserved"] == 0 and st["objects"] == 2
    c = gismo.connect(a.socket)
    try:
        assert [bytes(c.get(r)) for r in refs[8:]] == [b"x" * 100] * 2
        with pytest.raises(gismo.StoreFull):
            c.put(np.zeros(pool.region_size, np.uint8))
        assert c.stats()["store_full"] == 1
    finally:
        c.close()


def test_pin_table_exhausted_falls_back_to_a_checked_copy(pool: Pool) -> None:
    a = pool.agent(0, pin_entries=64)  # one lease of 64 pins for the whole region
    c = gismo.connect(a.socket)
    other = gismo.connect(a.socket)  # holds no lease: the only one went to c
    try:
        refs = [c.put(np.full(100, i)) for i in range(70)]
        held = [c.get(r) for r in refs[:64]]  # every pin entry in use
        assert c.pins == 64
        extra = c.get(refs[64])  # no pin left: a copy, checked against the slot's seqlock
        assert np.array_equal(extra, np.full(100, 64)) and extra.flags.owndata is False
        assert not np.shares_memory(extra, np.frombuffer(c.map.ro, np.uint8))
        assert np.array_equal(other.get(refs[65]), np.full(100, 65))
        del held
        assert c.pins == 0
        view = c.get(refs[66])
        assert np.shares_memory(view, np.frombuffer(c.map.ro, np.uint8))  # views again once pins free up
        del view
    finally:
        other.close()
        c.close()


def test_second_agent_on_a_region_is_refused(pool: Pool) -> None:
    pool.agent(0)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GISMO_")}
    env.update(pool.env(0))
    env["GISMO_SOCKET"] = os.path.join(pool.dir, "second.sock")
    out = subprocess.run(
        [sys.executable, "-m", "gismo.cli", "agent", "--degraded-retry-s", "0"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and "already served by another agent" in out.stderr
    assert pool.agents[0].stats()["objects"] == 0  # the first one is untouched and still serving


def test_client_refuses_to_be_used_across_fork(pool: Pool) -> None:
    a = pool.agent(0)
    c = gismo.connect(a.socket)
    try:
        ref = c.put(np.arange(10))
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: must not write into the parent's stash or pin lease
            code = 0
            try:
                for attempt in (lambda: c.put(b"x"), lambda: c.get(ref)):
                    try:
                        attempt()
                        code = 1  # the child used the parent's client
                    except gismo.GismoError as exc:  # only the fork refusal itself, not any Gismo error
                        if type(exc) is not gismo.GismoError or "call gismo.connect() after fork" not in str(
                            exc
                        ):
                            code = 2
            except BaseException:
                code = 3  # anything else: never let the forked child run on into pytest
            finally:
                os.write(w, bytes([code]))
                os._exit(0)
        os.waitpid(pid, 0)
        assert os.read(r, 1) == b"\0"
        os.close(r)
        os.close(w)
        assert np.array_equal(c.get(ref), np.arange(10))  # the parent is unaffected
    finally:
        c.close()
