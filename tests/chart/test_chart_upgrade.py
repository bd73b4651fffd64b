"""The generated webhook certificate is stable across upgrades: the chart looks up the live Secret and
reuses it. Run with the real helm against a fake API server (helm template --dry-run=server), so
helm's ``lookup`` really queries an API."""

from __future__ import annotations

from pathlib import Path

from chartkit import NAMESPACE, RELEASE, Doc, find, helm, parse, template_args
from fakekube import fake_kube

SECRET_PATH = f"/api/v1/namespaces/{NAMESPACE}/secrets/gismo-webhook-tls"


def _render_against(kubeconfig: Path) -> list[Doc]:
    result = helm(*template_args("--dry-run=server", "--disable-openapi-validation"), kubeconfig=kubeconfig)
    assert result.returncode == 0, result.stderr
    return parse(result.stdout)


def _as_installed(doc: Doc) -> Doc:
    """The object as helm leaves it in the cluster: with its release ownership annotations."""
    meta = {
        **doc["metadata"],
        "annotations": {"meta.helm.sh/release-name": RELEASE, "meta.helm.sh/release-namespace": NAMESPACE},
    }
    return {**doc, "metadata": meta}


def _ca_bundles(docs: list[Doc]) -> set[str]:
    return {
        hook["clientConfig"]["caBundle"]
        for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
        for hook in find(docs, kind)["webhooks"]
    }


def test_upgrade_reuses_the_live_certificate(tmp_path: Path) -> None:
    with fake_kube() as kube:
        kubeconfig = kube.kubeconfig(tmp_path, NAMESPACE)

        # First install: no Secret in the cluster, the chart generates one.
        first = _render_against(kubeconfig)
        assert SECRET_PATH in kube.requests, "the chart did not look up its Secret"
        secret = find(first, "Secret", "gismo-webhook-tls")
        assert _ca_bundles(first) == {secret["data"]["ca.crt"]}

        # Upgrade: the Secret is live; the same certificate and caBundle are rendered again.
        kube.objects[SECRET_PATH] = _as_installed(secret)
        second = _render_against(kubeconfig)
        assert find(second, "Secret", "gismo-webhook-tls")["data"] == secret["data"]
        assert _ca_bundles(second) == {secret["data"]["ca.crt"]}


def test_incomplete_live_secret_is_replaced(tmp_path: Path) -> None:
    with fake_kube() as kube:
        kubeconfig = kube.kubeconfig(tmp_path, NAMESPACE)
        secret = find(_render_against(kubeconfig), "Secret", "gismo-webhook-tls")
        broken = {**secret, "data": {k: v for k, v in secret["data"].items() if k != "ca.crt"}}
        kube.objects[SECRET_PATH] = _as_installed(broken)
        again = find(_render_against(kubeconfig), "Secret", "gismo-webhook-tls")
        assert set(again["data"]) == {"ca.crt", "tls.crt", "tls.key"}
        assert again["data"]["tls.crt"] != secret["data"]["tls.crt"]


def test_without_a_cluster_each_render_makes_a_new_certificate() -> None:
    """Why the lookup matters: helm's genCA makes a new CA on every render."""
    one = find(parse(helm(*template_args()).stdout), "Secret")
    two = find(parse(helm(*template_args()).stdout), "Secret")
    assert one["data"]["ca.crt"] != two["data"]["ca.crt"]
