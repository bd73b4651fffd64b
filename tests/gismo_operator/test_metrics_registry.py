"""Metrics helpers and the handler-module registry."""

from __future__ import annotations

from pathlib import Path

import kopf
import pytest
from prometheus_client import REGISTRY

from gismo_operator import metrics, registry


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_webhook_timer_outcomes() -> None:
    before = {
        o: sample("gismo_webhook_duration_seconds_count", webhook="t", outcome=o)
        for o in ("allowed", "denied", "error")
    }
    with metrics.webhook_timer("t"):
        pass
    with pytest.raises(kopf.AdmissionError), metrics.webhook_timer("t"):
        raise kopf.AdmissionError("no")
    with pytest.raises(KeyError), metrics.webhook_timer("t"):
        raise KeyError("x")
    for outcome in ("allowed", "denied", "error"):
        assert (
            sample("gismo_webhook_duration_seconds_count", webhook="t", outcome=outcome)
            == before[outcome] + 1
        )


def test_allocation_counters_and_pool_gauges() -> None:
    before = sample("gismo_allocations_total", kind="region", result="full")
    metrics.count_allocation("region", "full")
    assert sample("gismo_allocations_total", kind="region", result="full") == before + 1
    metrics.count_release("slice")
    assert sample("gismo_releases_total", kind="slice") >= 1
    metrics.set_pool("mp", capacity=10, allocated=4, free=6, slices=1)
    assert sample("gismo_pool_free_bytes", pool="mp") == 6
    metrics.forget_pool("mp")
    assert REGISTRY.get_sample_value("gismo_pool_free_bytes", {"pool": "mp"}) is None
    metrics.forget_pool("mp")  # twice is fine


def test_registry_fails_naming_a_listed_module_that_does_not_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    listed = (*registry.HANDLER_MODULES, "gismo_operator.handlers.not_written_yet")
    monkeypatch.setattr(registry, "HANDLER_MODULES", listed)
    with pytest.raises(registry.MissingHandlerModule, match=r"gismo_operator\.handlers\.not_written_yet"):
        registry.load_handlers()
    # A module in a package that does not exist either.
    monkeypatch.setattr(registry, "HANDLER_MODULES", ("gismo_test_absent_parent.child",))
    with pytest.raises(registry.MissingHandlerModule, match=r"gismo_test_absent_parent\.child"):
        registry.load_handlers()


def test_registry_loads_every_listed_module_in_order() -> None:
    import sys

    assert registry.load_handlers() == list(registry.HANDLER_MODULES)
    assert all(name in sys.modules for name in registry.HANDLER_MODULES)
    assert "gismo_operator.handlers.raypods" in registry.HANDLER_MODULES  # the pod webhook


def test_registry_does_not_hide_errors_inside_a_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "gismo_test_ext.py").write_text("import a_dependency_that_does_not_exist\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "HANDLER_MODULES", ("gismo_test_ext",))
    with pytest.raises(ModuleNotFoundError, match="a_dependency_that_does_not_exist"):
        registry.load_handlers()
