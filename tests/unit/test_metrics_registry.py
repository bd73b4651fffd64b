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


def test_registry_skips_only_absent_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "EXTENSION_HANDLER_MODULES", ("gismo_operator.not_written_yet",))
    assert registry.load_handlers() == list(registry.CORE_HANDLER_MODULES)
    # A module in a package that does not exist yet either.
    monkeypatch.setattr(registry, "EXTENSION_HANDLER_MODULES", ("gismo_test_absent_parent.child",))
    assert registry.load_handlers() == list(registry.CORE_HANDLER_MODULES)


def test_registry_does_not_hide_errors_inside_a_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "gismo_test_ext.py").write_text("import a_dependency_that_does_not_exist\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "EXTENSION_HANDLER_MODULES", ("gismo_test_ext",))
    with pytest.raises(ModuleNotFoundError, match="a_dependency_that_does_not_exist"):
        registry.load_handlers()
