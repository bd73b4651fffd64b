"""The rendered objects agree with each other and with docs/CONTRACTS.md: webhook Service, ports,
certificate Secret, volumes, webhook paths and rules, RBAC, security context, peering, pool."""

from __future__ import annotations

import base64
import datetime
from pathlib import Path

import pytest
import yaml
from chartkit import (
    CHART,
    KUBE_VERSION,
    MUTATE_RAYPOD,
    NAMESPACE,
    RELEASE,
    REPO,
    VALIDATE_GISMOPOOL,
    VALUE_SETS,
    VALUES_DIR,
    Doc,
    container,
    crd_documents,
    crd_schemas,
    env_of,
    find,
    find_all,
    helm,
    parse,
    render,
    render_with,
    validate_document,
)
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID

TLS_DIR = "/etc/gismo/tls"  # docs/CONTRACTS.md
WEBHOOK_KINDS = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")


def _webhooks(docs: list[Doc]) -> list[Doc]:
    return [hook for kind in WEBHOOK_KINDS for hook in find(docs, kind)["webhooks"]]


def _named_port(c: Doc, name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert name in ports, f"container has no port named {name}: {ports}"
    return int(ports[name])


def _labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --------------------------------------------------------------------------------------------------
# Webhook Service, ports and certificate agree with the Deployment


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_webhook_service_reaches_the_webhook_port(value_set: str) -> None:
    docs = render(value_set)
    deployment = find(docs, "Deployment")
    pod = deployment["spec"]["template"]
    op = container(deployment)
    env = env_of(op)
    webhook_port = _named_port(op, "webhook")
    assert int(env["GISMO_OPERATOR_WEBHOOK_PORT"]) == webhook_port

    assert _labels_match(deployment["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"])
    for hook in _webhooks(docs):
        ref = hook["clientConfig"]["service"]
        assert "url" not in hook["clientConfig"]
        assert ref["namespace"] == NAMESPACE
        service = find(docs, "Service", ref["name"])
        assert _labels_match(service["spec"]["selector"], pod["metadata"]["labels"]), (
            "Service selects no operator pod"
        )
        (port,) = [p for p in service["spec"]["ports"] if p["port"] == ref["port"]]
        assert port["targetPort"] in ("webhook", webhook_port)
        assert env["GISMO_OPERATOR_WEBHOOK_HOST"] == f"{ref['name']}.{NAMESPACE}.svc"


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_certificate_secret_is_mounted_where_the_operator_reads_it(value_set: str) -> None:
    docs = render(value_set)
    deployment = find(docs, "Deployment")
    op = container(deployment)
    assert env_of(op)["GISMO_OPERATOR_TLS_DIR"] == TLS_DIR
    (mount,) = [m for m in op["volumeMounts"] if m["mountPath"] == TLS_DIR]
    assert mount.get("readOnly") is True
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    secret_name = volumes[mount["name"]]["secret"]["secretName"]

    secrets = [s for s in find_all(docs, "Secret") if s["metadata"]["name"] == secret_name]
    certificates = [c for c in find_all(docs, "Certificate") if c["spec"]["secretName"] == secret_name]
    if value_set in ("cert-manager", "everything"):
        assert secrets == [], "cert-manager mode must not render the Secret cert-manager writes"
        (certificate,) = certificates
        service_host = env_of(op)["GISMO_OPERATOR_WEBHOOK_HOST"]
        assert service_host in certificate["spec"]["dnsNames"]
        assert "server auth" in certificate["spec"]["usages"]
    else:
        assert certificates == []
        (secret,) = secrets
        assert secret["type"] == "kubernetes.io/tls"
        assert set(secret["data"]) == {"ca.crt", "tls.crt", "tls.key"}


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_metrics_and_health_ports(value_set: str) -> None:
    docs = render(value_set)
    deployment = find(docs, "Deployment")
    op = container(deployment)
    env = env_of(op)
    assert _named_port(op, "metrics") == int(env["GISMO_OPERATOR_METRICS_PORT"])
    health = _named_port(op, "health")
    assert health == int(env["GISMO_OPERATOR_HEALTH_PORT"])
    for probe in ("livenessProbe", "startupProbe"):
        assert op[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert op["readinessProbe"]["tcpSocket"] == {"port": "webhook"}
    metrics_services = [s for s in find_all(docs, "Service") if s["metadata"]["name"].endswith("-metrics")]
    (service,) = metrics_services
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert _labels_match(service["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"])
    for monitor in find_all(docs, "ServiceMonitor"):
        assert _labels_match(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
        assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
        assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_default_ports_are_the_contract_ports() -> None:
    op = container(find(render(), "Deployment"))
    assert (_named_port(op, "webhook"), _named_port(op, "metrics"), _named_port(op, "health")) == (
        9443,
        8080,
        8081,
    )


def test_custom_ports_follow_values() -> None:
    docs = render("everything")
    op = container(find(docs, "Deployment"))
    assert (_named_port(op, "webhook"), _named_port(op, "metrics"), _named_port(op, "health")) == (
        10443,
        9090,
        9091,
    )
    for hook in _webhooks(docs):
        assert hook["clientConfig"]["service"]["port"] == 8443


# --------------------------------------------------------------------------------------------------
# The generated certificate


def _load_cert(b64: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(base64.b64decode(b64))


def test_generated_certificate_matches_the_ca_bundle_and_the_service() -> None:
    docs = render("default")
    secret = find(docs, "Secret")
    ca_b64 = secret["data"]["ca.crt"]
    for hook in _webhooks(docs):
        assert hook["clientConfig"]["caBundle"] == ca_b64, f"{hook['name']}: caBundle is not the Secret's CA"

    ca = _load_cert(ca_b64)
    leaf = _load_cert(secret["data"]["tls.crt"])
    # The serving certificate is signed by the CA in caBundle.
    assert leaf.issuer == ca.subject
    ca_key = ca.public_key()
    assert isinstance(ca_key, rsa.RSAPublicKey)
    assert leaf.signature_hash_algorithm is not None
    ca_key.verify(
        leaf.signature, leaf.tbs_certificate_bytes, padding.PKCS1v15(), leaf.signature_hash_algorithm
    )
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True

    # ... for every name the API server may use for the webhook Service.
    host = env_of(container(find(docs, "Deployment")))["GISMO_OPERATOR_WEBHOOK_HOST"]
    service = host.split(".")[0]
    names = set(
        leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName
        )
    )
    assert {service, f"{service}.{NAMESPACE}", host, f"{host}.cluster.local"} <= names
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku

    # The key in the Secret belongs to the certificate.
    key = load_pem_private_key(base64.b64decode(secret["data"]["tls.key"]), password=None)
    assert key.public_key().public_numbers() == leaf.public_key().public_numbers()  # type: ignore[union-attr]

    now = datetime.datetime.now(datetime.UTC)
    for cert in (ca, leaf):
        assert cert.not_valid_before_utc <= now + datetime.timedelta(minutes=5)
        assert cert.not_valid_after_utc > now + datetime.timedelta(days=3000)


def test_cert_manager_injects_the_ca() -> None:
    docs = render("cert-manager")
    certificate = next(c for c in find_all(docs, "Certificate") if not c["spec"].get("isCA"))
    for kind in WEBHOOK_KINDS:
        config = find(docs, kind)
        annotation = config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
        assert annotation == f"{NAMESPACE}/{certificate['metadata']['name']}"
        for hook in config["webhooks"]:
            assert "caBundle" not in hook["clientConfig"]
    # Default: a self-signed root signs a CA, the CA Issuer signs the serving certificate.
    issuers = {i["metadata"]["name"]: i["spec"] for i in find_all(docs, "Issuer")}
    ca_issuer = issuers[certificate["spec"]["issuerRef"]["name"]]
    (ca_cert,) = [c for c in find_all(docs, "Certificate") if c["spec"].get("isCA")]
    assert ca_issuer == {"ca": {"secretName": ca_cert["spec"]["secretName"]}}
    assert issuers[ca_cert["spec"]["issuerRef"]["name"]] == {"selfSigned": {}}


def test_cert_manager_with_an_existing_issuer_creates_no_issuer() -> None:
    docs = render("everything")
    assert find_all(docs, "Issuer") == []
    (certificate,) = find_all(docs, "Certificate")
    assert certificate["spec"]["issuerRef"] == {
        "name": "company-ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }
    assert "gismo-op-webhook.gismo-system.svc.k8s.example.internal" in certificate["spec"]["dnsNames"]
    assert certificate["spec"]["privateKey"] == {
        "algorithm": "ECDSA",
        "size": 256,
        "rotationPolicy": "Always",
    }


# --------------------------------------------------------------------------------------------------
# Webhook configurations


def _pool_crd() -> Doc:
    return next(c for c in crd_documents() if c["metadata"]["name"] == "gismopools.gismo.io")


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_webhook_paths_are_the_handler_ids(value_set: str) -> None:
    docs = render(value_set)
    mutating = find(docs, "MutatingWebhookConfiguration")["webhooks"]
    validating = find(docs, "ValidatingWebhookConfiguration")["webhooks"]
    assert [h["clientConfig"]["service"]["path"] for h in mutating] == [f"/{MUTATE_RAYPOD}"]
    assert [h["clientConfig"]["service"]["path"] for h in validating] == [f"/{VALIDATE_GISMOPOOL}"]
    assert [h["name"] for h in mutating] == [f"{MUTATE_RAYPOD}.gismo.io"]
    assert [h["name"] for h in validating] == [f"{VALIDATE_GISMOPOOL}.gismo.io"]


def test_default_webhook_settings() -> None:
    docs = render("default")
    (pod_hook,) = find(docs, "MutatingWebhookConfiguration")["webhooks"]
    (pool_hook,) = find(docs, "ValidatingWebhookConfiguration")["webhooks"]
    for hook in (pod_hook, pool_hook):
        assert hook["failurePolicy"] == "Ignore"
        assert hook["timeoutSeconds"] == 10
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["matchPolicy"] == "Equivalent"

    assert pod_hook["objectSelector"] == {"matchLabels": {"ray.io/is-ray-node": "yes"}}
    assert pod_hook["rules"] == [
        {
            "operations": ["CREATE"],
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    assert pod_hook["reinvocationPolicy"] == "Never"
    # The pod webhook writes the assignment (not on dry-run); the pool webhook only answers.
    assert pod_hook["sideEffects"] == "NoneOnDryRun"
    assert pool_hook["sideEffects"] == "None"

    crd = _pool_crd()
    served = [v["name"] for v in crd["spec"]["versions"] if v["served"]]
    assert pool_hook["rules"] == [
        {
            "operations": ["CREATE", "UPDATE"],
            "apiGroups": [crd["spec"]["group"]],
            "apiVersions": served,
            "resources": [crd["spec"]["names"]["plural"]],
            "scope": crd["spec"]["scope"],
        }
    ]
    assert "objectSelector" not in pool_hook


def test_webhook_settings_follow_values() -> None:
    docs = render("everything")
    (pod_hook,) = find(docs, "MutatingWebhookConfiguration")["webhooks"]
    (pool_hook,) = find(docs, "ValidatingWebhookConfiguration")["webhooks"]
    assert (pod_hook["failurePolicy"], pool_hook["failurePolicy"]) == ("Fail", "Fail")
    assert (pod_hook["timeoutSeconds"], pool_hook["timeoutSeconds"]) == (30, 30)
    assert pod_hook["sideEffects"] == "None"
    assert pool_hook["sideEffects"] == "None"
    assert pod_hook["namespaceSelector"]["matchExpressions"][0]["values"] == ["kube-system"]


# --------------------------------------------------------------------------------------------------
# RBAC: exactly these rules, whatever the values

EXPECTED_RULES: list[tuple[str, str, list[str]]] = [
    ("gismo.io", "gismopools", ["get", "list", "watch", "patch"]),
    ("gismo.io", "gismopools/status", ["patch"]),
    ("gismo.io", "gismoslices", ["get", "list", "watch", "create", "patch", "delete"]),
    ("gismo.io", "gismoslices/status", ["patch"]),
    ("gismo.io", "gismoregions", ["get", "list", "create", "patch", "delete"]),
    ("ray.io", "rayclusters", ["list", "watch"]),
    ("", "pods", ["list", "watch"]),
    ("", "events", ["create"]),
    ("", "nodes", ["list"]),
    ("", "namespaces", ["get"]),
    ("apiextensions.k8s.io", "customresourcedefinitions", ["list", "watch"]),
    ("kopf.dev", "clusterkopfpeerings", ["list", "watch", "patch"]),
]


def _rules(docs: list[Doc]) -> list[tuple[str, str, list[str]]]:
    out = []
    for rule in find(docs, "ClusterRole")["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, "one group and resource per rule, no names"
        (group,) = rule["apiGroups"]
        (resource,) = rule["resources"]
        out.append((group, resource, rule["verbs"]))
    return out


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_cluster_role_has_exactly_the_operator_rules(value_set: str) -> None:
    docs = render(value_set)
    assert _rules(docs) == EXPECTED_RULES
    assert find_all(docs, "Role") == [] and find_all(docs, "RoleBinding") == []


def test_cluster_role_grants_nothing_dangerous() -> None:
    rules = _rules(render())
    for group, resource, verbs in rules:
        assert "*" not in (group, resource) and "*" not in verbs
        assert resource not in ("secrets", "pods/exec", "pods/status") and not resource.startswith(
            "rayclusters/"
        )
        if group == "ray.io":
            assert set(verbs) <= {"get", "list", "watch"}, "the operator never writes RayClusters"
        assert group not in ("admissionregistration.k8s.io", "rbac.authorization.k8s.io")
    # Our own and kopf's resources in the rules are the ones the chart's CRDs define.
    plurals = {(c["spec"]["group"], c["spec"]["names"]["plural"]) for c in crd_documents()}
    for group, resource, _ in rules:
        if group in ("gismo.io", "kopf.dev"):
            assert (group, resource.split("/")[0]) in plurals


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_binding_gives_the_role_to_the_deployment_service_account(value_set: str) -> None:
    docs = render(value_set)
    role = find(docs, "ClusterRole")
    binding = find(docs, "ClusterRoleBinding")
    account = find(docs, "ServiceAccount")
    deployment = find(docs, "Deployment")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
    ]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]


def test_rbac_and_service_account_can_be_left_out() -> None:
    docs = render_with(
        "--set",
        "rbac.create=false",
        "--set",
        "serviceAccount.create=false",
        "--set",
        "serviceAccount.name=mine",
    )
    assert find_all(docs, "ClusterRole") == [] and find_all(docs, "ServiceAccount") == []
    assert find(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "mine"


# --------------------------------------------------------------------------------------------------
# Pod security: the "restricted" Pod Security Standard


def _check_restricted(pod_spec: Doc) -> None:
    """The checks of the "restricted" Pod Security Standard (v1.30+), applied to a pod spec."""
    for host in ("hostNetwork", "hostPID", "hostIPC", "hostUsers"):
        assert pod_spec.get(host) in (None, False) or (host == "hostUsers" and pod_spec[host] is False), host
    allowed_volumes = {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
    for volume in pod_spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        assert kinds <= allowed_volumes, f"volume {volume['name']}: {kinds}"
    pod_sc = pod_spec.get("securityContext", {})
    assert pod_sc.get("runAsUser", 1) != 0
    for c in pod_spec.get("initContainers", []) + pod_spec["containers"]:
        sc = c.get("securityContext", {})
        assert sc.get("privileged") in (None, False)
        assert sc.get("allowPrivilegeEscalation") is False, c["name"]
        assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, c["name"]
        assert sc.get("runAsUser", 1) != 0
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], c["name"]
        assert set(sc.get("capabilities", {}).get("add", [])) <= {"NET_BIND_SERVICE"}
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
        assert seccomp.get("type") in ("RuntimeDefault", "Localhost"), c["name"]
        assert not c.get("ports") or all("hostPort" not in p for p in c["ports"])


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_operator_pod_meets_the_restricted_standard(value_set: str) -> None:
    pod_spec = find(render(value_set), "Deployment")["spec"]["template"]["spec"]
    _check_restricted(pod_spec)
    op = pod_spec["containers"][0]
    assert op["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod_spec["securityContext"]["runAsUser"] == 10001  # USER of images/operator/Dockerfile
    assert op["resources"]["requests"]["memory"] and op["resources"]["limits"]["memory"]


def test_restricted_check_can_fail() -> None:
    pod_spec = find(render(), "Deployment")["spec"]["template"]["spec"]
    pod_spec["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    with pytest.raises(AssertionError):
        _check_restricted(pod_spec)


# --------------------------------------------------------------------------------------------------
# Replicas, peering, images, names, the pool


def test_single_replica_runs_standalone() -> None:
    docs = render("default")
    deployment = find(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert env_of(container(deployment))["GISMO_OPERATOR_PEERING"] == ""
    assert find_all(docs, "ClusterKopfPeering") == [] and find_all(docs, "PodDisruptionBudget") == []


@pytest.mark.parametrize(
    ("value_set", "replicas", "peering"), [("ha", 2, RELEASE), ("everything", 3, "gismo-peering")]
)
def test_replicas_peer_through_the_chart_peering_object(value_set: str, replicas: int, peering: str) -> None:
    docs = render(value_set)
    deployment = find(docs, "Deployment")
    env = env_of(container(deployment))
    assert deployment["spec"]["replicas"] == replicas
    assert env["GISMO_OPERATOR_PEERING"] == peering
    assert find(docs, "ClusterKopfPeering")["metadata"]["name"] == peering
    assert env["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}  # kopf's peer identity
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pdb = find(docs, "PodDisruptionBudget")
    assert _labels_match(
        pdb["spec"]["selector"]["matchLabels"], deployment["spec"]["template"]["metadata"]["labels"]
    )


def test_ha_replicas_prefer_different_nodes() -> None:
    spec = find(render("ha"), "Deployment")["spec"]["template"]["spec"]
    (term,) = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"


def test_peering_can_be_forced_with_one_replica() -> None:
    docs = render_with("--set", "peering.enabled=true")
    assert find(docs, "ClusterKopfPeering")["metadata"]["name"] == RELEASE
    assert find_all(docs, "PodDisruptionBudget") == []


def test_images() -> None:
    op = container(find(render("default"), "Deployment"))
    assert op["image"] == "gismo-operator:0.1.0"
    assert env_of(op)["GISMO_OPERATOR_DEFAULT_AGENT_IMAGE"] == "gismo-agent:0.1.0"
    op = container(find(render("everything"), "Deployment"))
    assert op["image"] == "registry.example.com/gismo/gismo-operator@sha256:" + "0123456789abcdef" * 4
    assert op["imagePullPolicy"] == "Always"
    assert (
        env_of(op)["GISMO_OPERATOR_DEFAULT_AGENT_IMAGE"] == "registry.example.com/gismo/gismo-agent:0.1.0-rc1"
    )


def test_names_stay_within_kubernetes_limits() -> None:
    """The longest release name helm allows (53) and namespace (63), with every optional object."""
    args = ["template", "r" * 53, str(CHART), "-n", "n" * 63, "--kube-version", KUBE_VERSION]
    args += ["-f", str(VALUES_DIR / "everything.yaml"), "-f", str(VALUES_DIR / "pool.yaml")]
    args += ["--set", "fullnameOverride=", "--set", "webhook.certificate.certManager.issuerRef=null"]
    result = helm(*args)
    assert result.returncode == 0, result.stderr
    docs = parse(result.stdout)
    assert {"Issuer", "ClusterKopfPeering", "GismoPool", "ServiceMonitor"} <= {d["kind"] for d in docs}
    for doc in docs:
        assert len(doc["metadata"]["name"]) <= 63, doc["metadata"]["name"]


def test_pool_from_values() -> None:
    pool = find(render("pool"), "GismoPool")
    assert pool["metadata"]["name"] == "cxl0"
    assert pool["spec"]["capacity"] == "64Gi" and pool["spec"]["regionSize"] == "1Gi"
    assert pool["spec"]["backend"] == {"type": "devdax", "path": "/dev/dax0.0"}
    assert pool["spec"]["namespaceSelector"] == {"matchLabels": {"gismo.io/allowed": "true"}}
    assert pool["spec"]["agent"]["image"] == "registry.example.com/gismo-agent:0.1.0"


def test_example_pool_can_be_created_from_values(tmp_path: Path) -> None:
    """examples/gismopool.yaml's spec, given as pool.spec, renders the same GismoPool."""
    example = yaml.safe_load((REPO / "examples" / "gismopool.yaml").read_text())
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {"pool": {"create": True, "name": example["metadata"]["name"], "spec": example["spec"]}}
        )
    )
    pool = find(render_with("-f", str(values)), "GismoPool")
    assert pool["metadata"]["name"] == example["metadata"]["name"]
    assert pool["spec"] == example["spec"]
    validate_document(pool, crd_schemas())
