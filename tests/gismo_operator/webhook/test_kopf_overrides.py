"""Every override of kopf internals: the event-only diff-base storage and the fast admission path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import kopf
import pytest

from gismo_operator import kube
from gismo_operator.webhook import kopf_overrides


def test_event_only_kinds_have_no_change_handlers() -> None:
    """kopf's change detection is skipped for EVENT_ONLY_KINDS: a create/update/delete/resume
    handler, daemon or timer on one of them would silently never see a change. Fail loudly."""
    from gismo_operator import registry

    registry.load_handlers()
    by_kind = {(r.api_version, r.kind): r for r in (kube.SLICES, kube.PODS, kube.POOLS, kube.RAYCLUSTERS)}
    event_only = {by_kind[k] for k in kopf_overrides.EVENT_ONLY_KINDS}
    assert len(event_only) == len(kopf_overrides.EVENT_ONLY_KINDS)
    kopf_registry = kopf.get_default_registry()
    handlers = [*kopf_registry._changing.get_all_handlers(), *kopf_registry._spawning.get_all_handlers()]
    assert handlers, "expected the GismoPool change handlers"
    for handler in handlers:
        selector = handler.selector
        assert selector is not None
        names = {selector.any_name, selector.plural, selector.kind, selector.singular} - {None}
        for resource in event_only:
            same_group = (selector.group, selector.version) == (resource.group, resource.version)
            assert not (same_group and names & {resource.plural, resource.kind}), (
                f"{handler.id} is a change handler on {resource.kind}, listed in EVENT_ONLY_KINDS"
            )


def test_event_only_kinds_skip_the_essence() -> None:
    storage = kopf_overrides.EventOnlyDiffBaseStorage(prefix="gismo.io", key="last-handled-configuration")
    a_slice = {
        "apiVersion": "gismo.io/v1alpha1",
        "kind": "GismoSlice",
        "metadata": {"name": "s", "namespace": "ray", "labels": {"a": "b"}},
        "spec": {"pool": "p", "regions": [{"index": 0, "state": "Reserved"}]},
    }
    assert storage.build(body=kopf.Body(a_slice)) == {}
    pool = {
        "apiVersion": "gismo.io/v1alpha1",
        "kind": "GismoPool",
        "metadata": {"name": "p", "labels": {"a": "b"}},
        "spec": {"capacity": "1Gi"},
        "status": {"free": "1Gi"},
    }
    essence = storage.build(body=kopf.Body(pool))
    assert essence == {"spec": {"capacity": "1Gi"}, "metadata": {"labels": {"a": "b"}}}
    no_kind = {k: v for k, v in a_slice.items() if k != "kind"}
    assert storage.build(body=kopf.Body(no_kind))["spec"] == a_slice["spec"]  # unknown: kopf's own


async def test_fast_admission_answers_first_and_falls_back_to_kopf(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path answers its own webhook id; None from it, or another id, goes to kopf's fn."""
    calls: list[str] = []

    async def fast(review: Any) -> Any:
        calls.append("fast")
        return {"fast": True} if review.get("take") else None

    async def kopf_fn(request: Any, *, webhook: str | None = None, **_: Any) -> Any:
        calls.append(f"kopf:{webhook}")
        return {"kopf": True}

    async def inner(fn: Any) -> AsyncIterator[Any]:  # a server: calls fn per request, yields configs
        assert await fn({"take": True}, webhook="fast-one") == {"fast": True}
        assert await fn({"take": False}, webhook="fast-one") == {"kopf": True}
        assert await fn({"take": True}, webhook="other", headers={}) == {"kopf": True}
        yield {"url": "https://example"}

    monkeypatch.setattr(kopf_overrides, "_fast_admissions", {})
    kopf_overrides.fast_admission("fast-one")(fast)
    server = kopf_overrides.FastAdmissionServer(inner)
    async with server as entered:
        configs = [c async for c in entered(kopf_fn)]
    assert configs == [{"url": "https://example"}]
    assert calls == ["fast", "fast", "kopf:fast-one", "kopf:other"]
