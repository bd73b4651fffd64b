"""The entry point end to end: ``python -m gismo_operator --dev`` as a real process against kmock.

Checks what `make run` promises: it logs in from a kubeconfig, registers its own
ValidatingWebhookConfiguration (named gismo.io) pointing at 127.0.0.1 with the generated CA, serves
the webhook over HTTPS with that CA, and exposes liveness and metrics. Also: bad settings exit 2.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import kmock as kmock_lib
import pytest
import yaml
from operator_harness import VERBS, Cluster, free_port

from gismo_operator import kube

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "gismopool.yaml"
VWC = kube.Resource(
    "admissionregistration.k8s.io",
    "v1",
    "validatingwebhookconfigurations",
    False,
    "ValidatingWebhookConfiguration",
)
MWC = kube.Resource(
    "admissionregistration.k8s.io",
    "v1",
    "mutatingwebhookconfigurations",
    False,
    "MutatingWebhookConfiguration",
)


@pytest.fixture
async def dev_operator(cluster: Cluster, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    for res in (VWC, MWC):
        cluster.kmock.resources[kmock_lib.resource(res.group, res.version, res.plural)] = (
            kmock_lib.ResourceInfo(kind=res.kind, namespaced=False, verbs=VERBS)
        )
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": cluster.api.server}}],
                "users": [{"name": "dev", "user": {"token": "dev-token"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "dev"}}],
                "current-context": "kmock",
            }
        )
    )
    ports = {"webhook": free_port(), "metrics": free_port(), "health": free_port()}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GISMO_OPERATOR_")},
        "KUBECONFIG": str(kubeconfig),
        "HOME": str(tmp_path),
        "GISMO_OPERATOR_WEBHOOK_PORT": str(ports["webhook"]),
        "GISMO_OPERATOR_METRICS_PORT": str(ports["metrics"]),
        "GISMO_OPERATOR_HEALTH_PORT": str(ports["health"]),
        "GISMO_OPERATOR_LOG_FORMAT": "json",
        "GISMO_OPERATOR_NAMESPACE": "gismo-system",
    }
    log = tmp_path / "operator.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gismo_operator", "--dev", env=env, stdout=out, stderr=out
        )
    try:
        yield {"proc": proc, "ports": ports, "log": log}
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout=30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def test_dev_mode_registers_and_serves_its_webhook(
    cluster: Cluster, dev_operator: dict[str, Any]
) -> None:
    proc, ports, log = dev_operator["proc"], dev_operator["ports"], dev_operator["log"]

    async def registered() -> dict[str, Any] | None:
        if proc.returncode is not None:
            pytest.fail(f"operator exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        vwc = await cluster.get(VWC, "gismo.io")
        hooks = (vwc or {}).get("webhooks") or []
        return (
            vwc
            if any(h.get("clientConfig", {}).get("url", "").endswith("/validate-gismopool") for h in hooks)
            else None
        )

    vwc = await cluster.wait_for(registered, "the operator to register its ValidatingWebhookConfiguration")
    (hook,) = [h for h in vwc["webhooks"] if h["clientConfig"]["url"].endswith("/validate-gismopool")]
    assert hook["clientConfig"]["url"] == f"https://127.0.0.1:{ports['webhook']}/validate-gismopool"
    assert any("gismopools" in rule["resources"] for rule in hook["rules"])
    ca = base64.b64decode(hook["clientConfig"]["caBundle"]).decode()

    # The API server's view: trust only the caBundle it was given, and send an AdmissionReview.
    context = ssl.create_default_context(cadata=ca)
    bad = yaml.safe_load(EXAMPLE.read_text())
    bad["spec"]["capacity"] = "10Gi"
    bad["spec"]["regionSize"] = "3Gi"
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "1234",
            "kind": {"group": "gismo.io", "version": "v1alpha1", "kind": "GismoPool"},
            "resource": {"group": "gismo.io", "version": "v1alpha1", "resource": "gismopools"},
            "name": "pool0",
            "operation": "CREATE",
            "userInfo": {"username": "tester"},
            "object": bad,
            "oldObject": None,
            "dryRun": False,
        },
    }
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:

        async def answer() -> dict[str, Any] | None:
            async with session.post(hook["clientConfig"]["url"], json=review) as response:
                if response.status == 404:
                    return None
                assert response.status == 200, await response.text()
                result: dict[str, Any] = (await response.json())["response"]
                return result

        response = await cluster.wait_for(answer, "the webhook to answer")
    assert response["uid"] == "1234"
    assert response["allowed"] is False
    assert "spec.capacity" in response["status"]["message"]

    async with aiohttp.ClientSession() as session:

        async def probe(url: str) -> str | None:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return await response.text()
            return None

        health = await cluster.wait_for(
            lambda: probe(f"http://127.0.0.1:{ports['health']}/healthz"), "the liveness endpoint"
        )
        assert '"api"' in health  # our probe handler reports
        metrics = await cluster.wait_for(
            lambda: probe(f"http://127.0.0.1:{ports['metrics']}/metrics"), "metrics"
        )
        assert "gismo_webhook_duration_seconds_count" in metrics
        assert 'webhook="validate-gismopool"' in metrics

    # JSON logs: every line the operator wrote parses as an object with a level.
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert lines
    bad_lines = [line for line in lines if not (line.startswith("{") and '"level"' in line)]
    assert bad_lines == [], "\n".join(bad_lines[:40])


async def test_bad_settings_exit_with_a_message(tmp_path: Path) -> None:
    env = {**os.environ, "GISMO_OPERATOR_WEBHOOK_PORT": "https", "GISMO_OPERATOR_LOG_FORMAT": "xml"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gismo_operator",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 2
    text = err.decode()
    assert "GISMO_OPERATOR_WEBHOOK_PORT: expected a port number, got 'https'" in text
    assert "GISMO_OPERATOR_LOG_FORMAT" in text
