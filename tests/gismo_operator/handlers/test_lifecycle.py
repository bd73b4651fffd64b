"""Start-up configuration (kopf settings), login into the context, and the context itself."""

from __future__ import annotations

from pathlib import Path

import kopf
import pytest

from gismo_operator.context import OperatorContext, current, install
from gismo_operator.handlers import lifecycle
from gismo_operator.settings import Settings
from gismo_operator.webhook import devcert
from gismo_operator.webhook.kopf_overrides import FastAdmissionServer


def test_kopf_settings(tmp_path: Path) -> None:
    devcert.generate(["localhost"]).write(tmp_path)
    tuned: list[kopf.OperatorSettings] = []
    runtime = OperatorContext(settings=Settings(tls_dir=tmp_path, namespace="ops"), tune=tuned.append)
    settings = kopf.OperatorSettings()
    lifecycle.apply_settings(settings, runtime)
    assert settings.persistence.finalizer == "gismo.io/finalizer"
    assert settings.admission.managed is None  # the chart owns the webhook configurations
    assert isinstance(settings.admission.server, FastAdmissionServer)
    assert isinstance(settings.admission.server.inner, kopf.WebhookServer)
    assert tuned == [settings]

    dev = OperatorContext(settings=Settings(namespace="ops"), dev=True)
    lifecycle.apply_settings(settings, dev)
    assert settings.admission.managed == "gismo.io"


async def test_login_makes_the_contexts_client_with_the_event_namespace() -> None:
    info = kopf.ConnectionInfo(server="https://127.0.0.1:1", default_namespace="default")
    logins: list[str] = []

    async def login() -> kopf.ConnectionInfo:
        logins.append("login")
        return info

    ctx = OperatorContext(settings=Settings(namespace="ops"), login_source=login)
    with pytest.raises(RuntimeError, match="not logged in"):
        ctx.client()
    assert await ctx.login() is info
    first = ctx.client()
    assert first.server == "https://127.0.0.1:1" and first.event_namespace == "ops"
    await ctx.login()  # a fresh login replaces the client
    assert ctx.client() is not first and logins == ["login", "login"]
    await ctx.close()


def test_contexts_share_nothing() -> None:
    """Tests get a fresh context; no cache of one is seen through another."""
    a, b = OperatorContext(settings=Settings()), OperatorContext(settings=Settings())
    a.remember_pool({"metadata": {"name": "p"}}, "p")
    a.settled["uid"] = (1,)
    a.allocation_locks["p"]
    assert (b.pools, b.settled, dict(b.allocation_locks), b.api) == ({}, {}, {}, None)
    assert install(b) is b and current() is b
