"""Fail closed: memory whose coherence is ``flush`` is never served with no-op flushes.

A no-op flush on non-coherent memory serves stale bytes (wrong, not slow). Without a working
``gismo.memory._cacheflush`` (not built, not loadable in the delivered copy, or a CPU without a flush
instruction) the mapping refuses; the agent then serves degraded naming the reason, and a client's
connect fails with it, so gismo.ray falls back to Ray's store and records why. The missing extension
is injected (``cacheflush=None`` / the module's ``_cacheflush``), the rest is the real code.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from storefix import Pool

import gismo
import gismo.ray as gray
from gismo.config import load
from gismo.contract import ENV_TEST_MEMORY
from gismo.daemon import server
from gismo.memory import coherence
from gismo.memory.coherence import CoherenceUnavailable
from gismo.memory.mapping import SliceMapping

RS = 1 << 20
NOT_BUILT = "gismo.memory._cacheflush is not built or not loadable here"


class _NoInstruction:
    """An extension built for a CPU it cannot flush on (method() says "none")."""

    def method(self) -> str:
        return "none"


@pytest.fixture
def pool_file(tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.delenv(ENV_TEST_MEMORY, raising=False)  # real strategies, not the test model
    path = os.path.join(str(tmp_path), "pool")
    with open(path, "wb") as f:
        f.truncate(3 * RS)
    yield path


def test_flush_memory_without_the_extension_is_refused(pool_file: str) -> None:
    with pytest.raises(CoherenceUnavailable, match=NOT_BUILT):
        SliceMapping(pool_file, 0, 3 * RS, RS, 0, coherence="flush", cacheflush=None)
    with pytest.raises(CoherenceUnavailable, match="no cache flush instruction"):
        SliceMapping(pool_file, 0, 3 * RS, RS, 0, coherence="flush", cacheflush=_NoInstruction())
    # famfs and devdax default to flush: the default is refused the same way.
    with pytest.raises(CoherenceUnavailable, match=NOT_BUILT):
        SliceMapping(pool_file, 0, 3 * RS, RS, 0, backend="famfs", cacheflush=None)


def test_hardware_memory_needs_no_extension(pool_file: str) -> None:
    m = SliceMapping(pool_file, 0, 3 * RS, RS, 0, coherence="hardware", cacheflush=None)
    assert m.coherence == "hardware"
    m.close()


def test_with_the_extension_flush_is_real(pool_file: str) -> None:
    m = SliceMapping(pool_file, 0, 3 * RS, RS, 0, coherence="flush")
    assert m.coherence == f"flush:{coherence.extension_method()}"
    m.close()


def test_the_agent_serves_degraded_naming_the_reason(pool_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent's start path: the refusal reaches serve_degraded (never a silent no-op agent)."""
    pool = Pool(regions=2, region_size=4 * RS)
    served: list[str] = []
    try:
        monkeypatch.setattr(coherence, "_cacheflush", None)
        monkeypatch.setattr(server, "serve_degraded", lambda sock, reason, retry: served.append(reason) or 3)
        cfg = load(environ=pool.env(0, coherence="flush"))
        assert server.run(cfg, degraded_retry_s=60) == 3
    finally:
        pool.close()
    assert len(served) == 1 and NOT_BUILT in served[0], served


def test_a_client_without_the_extension_refuses_and_gismo_ray_falls_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The agent (another process, extension built) serves `flush` memory; this client cannot flush."""
    monkeypatch.delenv(ENV_TEST_MEMORY, raising=False)
    pool = Pool(regions=2, region_size=4 * RS)
    try:
        agent = pool.agent(0, coherence="flush")
        assert agent.stats()["coherence"].startswith("flush:")
        monkeypatch.setattr(coherence, "_cacheflush", None)
        with pytest.raises(CoherenceUnavailable, match=NOT_BUILT):
            gismo.connect(agent.socket)
        monkeypatch.setenv("GISMO_SOCKET", agent.socket)
        gray.reset()
        assert gray._client() is None
        stats: dict[str, Any] = gray.stats()
        assert NOT_BUILT in stats["agent_error"]
    finally:
        gray.reset()
        pool.close()
