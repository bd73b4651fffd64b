"""Start-up configuration: the webhook server for production and --dev, and kopf settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kopf
import pytest

from gismo_operator import kube
from gismo_operator.handlers import lifecycle as startup
from gismo_operator.settings import Settings
from gismo_operator.webhook import devcert


def test_missing_certificate_is_a_clear_error(tmp_path: Path) -> None:
    runtime = startup.Runtime(settings=Settings(tls_dir=tmp_path))
    with pytest.raises(startup.StartupError, match=f"{tmp_path}/tls.crt is missing.*GISMO_OPERATOR_TLS_DIR"):
        startup.build_webhook_server(runtime)


def test_production_server_uses_the_mounted_certificate(tmp_path: Path) -> None:
    devcert.generate(["gismo-webhook.gismo-system.svc"]).write(tmp_path)
    settings = Settings(tls_dir=tmp_path, webhook_port=9443, webhook_host="gismo-webhook.gismo-system.svc")
    server = startup.build_webhook_server(startup.Runtime(settings=settings))
    assert (server.addr, server.port, server.host) == ("0.0.0.0", 9443, "gismo-webhook.gismo-system.svc")
    assert server.certfile == tmp_path / "tls.crt" and server.pkeyfile == tmp_path / "tls.key"
    assert server.cafile == tmp_path / "ca.crt"


def test_dev_server_generates_a_certificate() -> None:
    server = startup.build_webhook_server(startup.Runtime(settings=Settings(webhook_port=10443), dev=True))
    assert (server.addr, server.port, server.host) == ("127.0.0.1", 10443, "127.0.0.1")
    assert server.certfile is not None and Path(server.certfile).read_bytes().startswith(
        b"-----BEGIN CERTIFICATE"
    )
    assert server.cafile is not None and Path(server.cafile).is_file()


def test_kopf_settings(tmp_path: Path) -> None:
    devcert.generate(["localhost"]).write(tmp_path)
    tuned: list[kopf.OperatorSettings] = []
    runtime = startup.Runtime(settings=Settings(tls_dir=tmp_path, namespace="ops"), tune=tuned.append)
    settings = kopf.OperatorSettings()
    try:
        startup.apply_settings(settings, runtime)
        assert settings.persistence.finalizer == "gismo.io/finalizer"
        assert settings.admission.managed is None  # the chart owns the webhook configurations
        assert isinstance(settings.admission.server, startup.FastAdmissionServer)
        assert isinstance(settings.admission.server.inner, kopf.WebhookServer)
        assert tuned == [settings]

        dev = startup.Runtime(settings=Settings(namespace="ops"), dev=True)
        startup.apply_settings(settings, dev)
        assert settings.admission.managed == "gismo.io"
    finally:
        kube.set_event_namespace(None)


def test_event_only_kinds_have_no_change_handlers() -> None:
    """kopf's change detection is skipped for EVENT_ONLY_KINDS: a create/update/delete/resume
    handler, daemon or timer on one of them would silently never see a change. Fail loudly."""
    from gismo_operator import registry

    registry.load_handlers()
    by_kind = {(r.api_version, r.kind): r for r in (kube.SLICES, kube.PODS, kube.POOLS, kube.RAYCLUSTERS)}
    event_only = {by_kind[k] for k in startup.EVENT_ONLY_KINDS}
    assert len(event_only) == len(startup.EVENT_ONLY_KINDS)
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
    storage = startup.EventOnlyDiffBaseStorage(prefix="gismo.io", key="last-handled-configuration")
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

    monkeypatch.setattr(startup, "_fast_admissions", {})
    startup.fast_admission("fast-one")(fast)
    server = startup.FastAdmissionServer(inner)
    async with server as entered:
        configs = [c async for c in entered(kopf_fn)]
    assert configs == [{"url": "https://example"}]
    assert calls == ["fast", "fast", "kopf:fast-one", "kopf:other"]
