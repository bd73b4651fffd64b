"""Ray pods as KubeRay v1.7 builds them for a RayCluster, and as the API server hands them to the
mutating webhooks: the shapes every injection and webhook test runs on.

Written from KubeRay v1.7's documented and observable behaviour (its pod builder's output for the
samples in tests/fixtures/kuberay), not from its code; :mod:`gismo_operator.testing.kuberay_sim`
re-exports :func:`pod_for` and :func:`pods_for`. What it builds:

Head pod
- ``generateName`` ``<cluster>-head-``: the prefix cut to 50 characters, then lowercased;
- labels: the template's, then KubeRay's own (``ray.io/is-ray-node: yes``, ``ray.io/cluster``,
  ``ray.io/node-type``, ``ray.io/group`` = ``headgroup``, ``ray.io/identifier`` =
  ``<cluster>-head`` cut from the front to 63 characters, ``app.kubernetes.io/name: kuberay``,
  ``app.kubernetes.io/created-by: kuberay-operator``); template labels may override all but
  node-type, group and cluster;
- annotation ``ray.io/ft-enabled`` (head only), ``ray.io/overwrite-container-cmd`` copied from the
  cluster, and ``ray.io/external-storage-namespace`` for Redis-backed GCS fault tolerance;
- with ``enableInTreeAutoscaling``: an ``autoscaler`` container appended after the Ray container
  (500m/512Mi unless ``autoscalerOptions.resources``, fieldRef env, ``/bin/bash -c --`` command),
  the ``ray-logs`` emptyDir at /tmp/ray in the Ray and autoscaler containers, the service account
  ``<cluster>`` (or the template's), ``no-monitor`` in the start flags; autoscaler v2 also sets
  ``RAY_enable_autoscaler_v2=true`` and ``restartPolicy: Never``.
Worker pods
- ``generateName`` ``<cluster>-<group>-worker-`` (same cut and lowercasing);
- a ``wait-gcs-ready`` init container (the Ray image, a copy of the Ray container's env, mounts and
  securityContext, 200m/256Mi requests = limits) that polls the head's GCS;
- ``replicas`` clamped into ``[minReplicas, maxReplicas]`` (CRD defaults 0, 0, 2^31-1), 0 when the
  group is suspended, times ``numOfHosts``.
Both
- ``containers[0]`` is the Ray container: its command becomes ``/bin/bash -c --`` with a generated
  ``ulimit -n ...; ray start ...`` (unless it already runs ``ray start`` or the overwrite annotation
  is set); env appended: ``FQ_RAY_IP``/``RAY_IP`` (workers), ``RAY_CLUSTER_NAME`` /
  ``RAY_CLUSTER_NAMESPACE`` / ``RAY_CLOUD_INSTANCE_ID`` / ``RAY_NODE_TYPE_NAME`` as fieldRefs,
  ``KUBERAY_GEN_RAY_START_CMD``, ``RAY_PORT``, ``RAY_ADDRESS``, usage-stats and disk-usage flags;
  every init container gets ``FQ_RAY_IP``/``RAY_IP``; a ``metrics`` port 8080 if none is named so;
- the ``shared-mem`` emptyDir (medium Memory) at /dev/shm, sized by the Ray container's memory limit
  (else its request; no limit when neither), unless /dev/shm is already mounted or the start flags
  set ``plasma-directory``;
- liveness and readiness probes on the Ray container when it has none (exec ``wget`` health checks
  before Ray 2.53, HTTP ``/api/healthz`` on 52365 from 2.53);
- a controller ownerReference to the RayCluster.
The API server then applies its defaults and built-in admission before any webhook sees the pod:
``default`` service account and its projected token volume mounted in every container, restart,
DNS and scheduler defaults, image pull policies, termination-message fields, the not-ready /
unreachable tolerations, priority 0.

The Redis cleanup Job's pod (``ray.io/node-type: redis-cleanup``, owned by a Job) also carries
``ray.io/is-ray-node: yes``: :func:`redis_cleanup_pod` builds it, so tests can check it gets no region.
Feature-gated extras (history-server collector, TLS, token auth, multi-host indexing) are not built:
they are off by default in KubeRay v1.7.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
from collections.abc import Mapping
from typing import Any

from gismo.contract import AGENT_TERMINATION_LOG
from gismo_operator.constants import LABEL_CLUSTER, LABEL_IS_RAY_NODE, LABEL_NODE_TYPE

Body = dict[str, Any]

KUBERAY_VERSION = "v1.7.0"
MAX_PREFIX = 50  # 63 - len("-worker-") - 5 random characters
HEAD_PORT = 6379
METRICS_PORT = 8080
DASHBOARD_PORT = 8265
DASHBOARD_AGENT_PORT = 52365
BASH = ["/bin/bash", "-c", "--"]
SA_TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
INT32_MAX = 2**31 - 1

LABEL_GROUP = "ray.io/group"
_PROTECTED_LABELS = (LABEL_NODE_TYPE, LABEL_GROUP, LABEL_CLUSTER)


def generate_name(prefix: str, node_type: str) -> str:
    """KubeRay's pod generateName: ``prefix`` cut to 50 characters, ``-<node type>-``, lowercased."""
    return f"{prefix[:MAX_PREFIX]}-{node_type}-".lower()


def _trim_front(value: str, limit: int) -> str:
    # KubeRay keeps the end of an over-long name and replaces a leading punctuation mark with "r".
    if len(value) > limit:
        value = value[len(value) - limit :]
    if value and not value[0].isalnum():
        value = "r" + value[1:]
    return value


def _service_account_name(name: str) -> str:
    value = _trim_front(name, 50)
    if value and value[0].isdigit():
        value = "r" + value[1:]
    return value


def desired_workers(group: Mapping[str, Any]) -> int:
    """Pods KubeRay runs for a worker group: replicas clamped to [min, max], times numOfHosts."""
    if group.get("suspend"):
        return 0
    low = int(group.get("minReplicas", 0) or 0)
    high = int(group.get("maxReplicas", INT32_MAX) if group.get("maxReplicas") is not None else INT32_MAX)
    replicas = group.get("replicas", 0)
    count = low if replicas is None or int(replicas) < low else min(int(replicas), high)
    return count * int(group.get("numOfHosts", 1) or 1)


def _quantity_value(q: Any) -> int:
    """A Kubernetes quantity rounded up to an integer (as resource.Quantity.Value() does)."""
    s = str(q).strip()
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
             "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
             "E": 1e18}  # fmt: skip
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", s)
    if not match or (match.group(2) and match.group(2) not in units):
        raise ValueError(f"not a quantity: {q!r}")
    value = float(match.group(1)) * units.get(match.group(2), 1)
    whole = int(value)
    return whole if whole == value else whole + 1


def _fqdn(cluster: Mapping[str, Any]) -> str:
    meta = cluster["metadata"]
    head = cluster["spec"]["headGroupSpec"]
    name = ((head.get("headService") or {}).get("metadata") or {}).get("name") or f"{meta['name']}-head-svc"
    return f"{name}.{meta.get('namespace', 'default')}.svc.cluster.local"


def _head_port(cluster: Mapping[str, Any]) -> str:
    return str((cluster["spec"]["headGroupSpec"].get("rayStartParams") or {}).get("port", HEAD_PORT))


def _autoscaling(cluster: Mapping[str, Any]) -> bool:
    return bool(cluster["spec"].get("enableInTreeAutoscaling"))


def _autoscaler_version(cluster: Mapping[str, Any]) -> str | None:
    version = (cluster["spec"].get("autoscalerOptions") or {}).get("version")
    return str(version) if version else None


def _ft_enabled(cluster: Mapping[str, Any]) -> bool:
    annotations = cluster["metadata"].get("annotations") or {}
    return annotations.get("ray.io/ft-enabled", "").lower() == "true" or bool(
        cluster["spec"].get("gcsFaultToleranceOptions")
    )


def _field_env(name: str, path: str) -> Body:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}


def _has_env(env: list[Body], name: str) -> bool:
    return any(e.get("name") == name for e in env)


def _labels(
    cluster: Mapping[str, Any], node_type: str, group: str, template_labels: Mapping[str, str]
) -> Body:
    name = cluster["metadata"]["name"]
    labels = {
        LABEL_IS_RAY_NODE: "yes",
        LABEL_CLUSTER: name,
        LABEL_NODE_TYPE: node_type,
        LABEL_GROUP: group,
        "ray.io/identifier": _trim_front(f"{name}-{node_type}", 63),
        "app.kubernetes.io/name": "kuberay",
        "app.kubernetes.io/created-by": "kuberay-operator",
    }
    for key, value in template_labels.items():
        if key not in _PROTECTED_LABELS:
            labels[key] = value
    return labels


def _start_params(params: Mapping[str, Any], node_type: str, fqdn: str, port: str) -> dict[str, str]:
    out = {k: str(v) for k, v in params.items()}
    if node_type == "worker":
        out.setdefault("address", f"{fqdn}:{port}")
    else:
        out.setdefault("dashboard-host", "0.0.0.0")
    out.setdefault("metrics-export-port", str(METRICS_PORT))
    out["block"] = "true"
    out.setdefault("dashboard-agent-listen-port", str(DASHBOARD_AGENT_PORT))
    return out


def _ray_start(node_type: str, params: dict[str, str], resources: Mapping[str, Any]) -> str:
    limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
    if "num-cpus" not in params:
        cpu = limits.get("cpu") or requests.get("cpu")
        if cpu is not None and _quantity_value(cpu):
            params["num-cpus"] = str(_quantity_value(cpu))
    if "memory" not in params and limits.get("memory") is not None:
        params["memory"] = str(_quantity_value(limits["memory"]))
    if "num-gpus" not in params and limits.get("nvidia.com/gpu") is not None:
        params["num-gpus"] = str(_quantity_value(limits["nvidia.com/gpu"]))
    flags = ""
    for key in sorted(params):
        value = params[key]
        if value.lower() in ("true", "false") and key not in (
            "log-color",
            "include-dashboard",
            "include-log-monitor",
        ):
            flags += f" --{key} " if value.lower() == "true" else ""
        else:
            flags += f" --{key}={value} "
    return f"ray start --head {flags}" if node_type == "head" else f"ray start {flags}"


def _probe(kind: str, node_type: str, params: Mapping[str, str], ray_version: str) -> Body:
    head = node_type == "head"
    agent_port = int(params.get("dashboard-agent-listen-port", DASHBOARD_AGENT_PORT))
    if _version_at_least(ray_version, (2, 53, 0)):
        action: Body = {"httpGet": {"path": "/api/healthz", "port": agent_port}}
    else:
        checks = [
            f"wget --tries 1 -T 2 -q -O- http://localhost:{agent_port}/api/local_raylet_healthz"
            " | grep success"
        ]
        if head:
            dash = int(params.get("dashboard-port", DASHBOARD_PORT))
            checks.append(
                f"wget --tries 1 -T 10 -q -O- http://localhost:{dash}/api/gcs_healthz | grep success"
            )
        action = {"exec": {"command": ["bash", "-c", " && ".join(checks)]}}
    if kind == "liveness":
        timing = {"initialDelaySeconds": 30, "timeoutSeconds": 5 if head else 2, "periodSeconds": 5,
                  "successThreshold": 1, "failureThreshold": 120}  # fmt: skip
    else:
        timing = {"initialDelaySeconds": 10, "timeoutSeconds": 5 if head else 2, "periodSeconds": 5,
                  "successThreshold": 1, "failureThreshold": 10}  # fmt: skip
    return {**action, **timing}


def _version_at_least(text: str, want: tuple[int, int, int]) -> bool:
    parts = re.findall(r"\d+", text or "")
    if len(parts) < 2:
        return False
    got = tuple(int(p) for p in [*parts, "0", "0"][:3])
    return got >= want


def _wait_gcs_ready(ray: Mapping[str, Any], fqdn: str, port: str) -> Body:
    script = (
        "\n\t\t\t\t\tSECONDS=0\n\t\t\t\t\twhile true; do\n"
        f"\t\t\t\t\t\tif ray health-check --address {fqdn}:{port} > /dev/null 2>&1; then\n"
        '\t\t\t\t\t\t\techo "GCS is ready."\n\t\t\t\t\t\t\tbreak\n\t\t\t\t\t\tfi\n'
        '\t\t\t\t\t\techo "$SECONDS seconds elapsed: Waiting for GCS to be ready."\n'
        "\t\t\t\t\t\tsleep 5\n\t\t\t\t\tdone\n\t\t\t\t"
    )
    container: Body = {
        "name": "wait-gcs-ready",
        "image": ray["image"],
        "command": list(BASH),
        "args": [script],
        "env": copy.deepcopy(ray.get("env") or []),
        "volumeMounts": copy.deepcopy(ray.get("volumeMounts") or []),
        "resources": {
            "limits": {"cpu": "200m", "memory": "256Mi"},
            "requests": {"cpu": "200m", "memory": "256Mi"},
        },
    }
    if ray.get("imagePullPolicy"):
        container["imagePullPolicy"] = ray["imagePullPolicy"]
    if ray.get("securityContext") is not None:
        container["securityContext"] = copy.deepcopy(ray["securityContext"])
    return container


def _autoscaler(cluster: Mapping[str, Any], image: str) -> Body:
    start = "ray kuberay-autoscaler --cluster-name $(RAY_CLUSTER_NAME) "
    start += "--cluster-namespace $(RAY_CLUSTER_NAMESPACE)"
    container: Body = {
        "name": "autoscaler",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "env": [
            _field_env("RAY_CLUSTER_NAME", f"metadata.labels['{LABEL_CLUSTER}']"),
            _field_env("RAY_CLUSTER_NAMESPACE", "metadata.namespace"),
            _field_env("RAY_HEAD_POD_NAME", "metadata.name"),
            {"name": "KUBERAY_CRD_VER", "value": "v1"},
            {"name": "KUBERAY_GEN_AUTOSCALER_START_CMD", "value": start},
        ],
        "command": list(BASH),
        "args": [start],
        "resources": {
            "limits": {"cpu": "500m", "memory": "512Mi"},
            "requests": {"cpu": "500m", "memory": "512Mi"},
        },
    }
    options = cluster["spec"].get("autoscalerOptions") or {}
    for key in ("resources", "image", "imagePullPolicy", "command", "args"):
        if options.get(key):
            container[key] = copy.deepcopy(options[key])
    for key in ("env", "envFrom", "volumeMounts"):
        if options.get(key):
            container[key] = [*container.get(key, []), *copy.deepcopy(options[key])]
    if options.get("securityContext") is not None:
        container["securityContext"] = copy.deepcopy(options["securityContext"])
    return container


def _add_empty_dir(spec: Body, container: Body, name: str, path: str, memory: bool) -> None:
    mounts = container.setdefault("volumeMounts", [])
    if any(m.get("mountPath") == path for m in mounts):
        return
    if not any(v.get("name") == name for v in spec.get("volumes") or []):
        empty: Body = {}
        if memory:
            empty["medium"] = "Memory"
            resources = container.get("resources") or {}
            size = (resources.get("limits") or {}).get("memory") or (resources.get("requests") or {}).get(
                "memory"
            )
            if size is not None:
                empty["sizeLimit"] = size
        spec.setdefault("volumes", []).append({"name": name, "emptyDir": empty})
    mounts.append({"name": name, "mountPath": path})


def _ray_env(ray: Body, cluster: Mapping[str, Any], node_type: str, fqdn: str, port: str, start: str) -> None:
    env = ray.setdefault("env", [])
    ip = "127.0.0.1"
    if node_type == "worker":
        ip = fqdn
        env += [{"name": "FQ_RAY_IP", "value": fqdn}, {"name": "RAY_IP", "value": fqdn.split(".")[0]}]
    env += [
        _field_env("RAY_CLUSTER_NAME", f"metadata.labels['{LABEL_CLUSTER}']"),
        _field_env("RAY_CLUSTER_NAMESPACE", "metadata.namespace"),
        _field_env("RAY_CLOUD_INSTANCE_ID", "metadata.name"),
        _field_env("RAY_NODE_TYPE_NAME", f"metadata.labels['{LABEL_GROUP}']"),
        {"name": "KUBERAY_GEN_RAY_START_CMD", "value": start},
    ]
    for name, value in (
        ("RAY_PORT", port),
        ("RAY_ADDRESS", f"{ip}:{port}"),
        ("RAY_USAGE_STATS_KUBERAY_IN_USE", "1"),
    ):
        if not _has_env(env, name):
            env.append({"name": name, "value": value})
    if node_type == "head":
        env.append(
            {
                "name": "RAY_USAGE_STATS_EXTRA_TAGS",
                "value": f"kuberay_version={KUBERAY_VERSION};kuberay_crd=RayCluster",
            }
        )
    if not _has_env(env, "RAY_DASHBOARD_ENABLE_K8S_DISK_USAGE"):
        env.append({"name": "RAY_DASHBOARD_ENABLE_K8S_DISK_USAGE", "value": "1"})


def _owner(cluster: Mapping[str, Any], kind: str = "RayCluster", name: str | None = None) -> Body:
    meta = cluster["metadata"]
    return {
        "apiVersion": "ray.io/v1" if kind == "RayCluster" else "batch/v1",
        "kind": kind,
        "name": name or meta["name"],
        "uid": meta.get("uid", "") if kind == "RayCluster" else f"{meta.get('uid', '')}-job",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def build_pod(cluster: Mapping[str, Any], node_type: str, group: Mapping[str, Any] | None = None) -> Body:
    """The pod KubeRay sends to the API server (before the API server's defaults)."""
    meta = cluster["metadata"]
    name, namespace = meta["name"], meta.get("namespace", "default")
    spec_all = cluster["spec"]
    fqdn, port = _fqdn(cluster), _head_port(cluster)
    ray_version = str(spec_all.get("rayVersion", ""))
    if node_type == "head":
        source: Mapping[str, Any] = spec_all["headGroupSpec"]
        group_name, prefix = "headgroup", name
    else:
        assert group is not None
        source, group_name, prefix = group, group["groupName"], f"{name}-{group['groupName']}"
    template = copy.deepcopy(source["template"])
    tmeta, spec = template.get("metadata") or {}, template["spec"]
    params = {k: str(v) for k, v in (source.get("rayStartParams") or {}).items()}
    ray = spec["containers"][0]
    annotations = dict(tmeta.get("annotations") or {})
    if (meta.get("annotations") or {}).get("ray.io/overwrite-container-cmd", "").lower() == "true":
        annotations["ray.io/overwrite-container-cmd"] = "true"

    if node_type == "worker":
        # Copied from the Ray container as the user wrote it, before KubeRay adds anything to it.
        spec["initContainers"] = [*(spec.get("initContainers") or []), _wait_gcs_ready(ray, fqdn, port)]
    labels = _labels(
        cluster, node_type, group_name, {**(tmeta.get("labels") or {}), **(source.get("labels") or {})}
    )
    params = _start_params(params, node_type, fqdn, port)
    autoscaling = _autoscaling(cluster)
    version = _autoscaler_version(cluster)
    if node_type == "head" and autoscaling:
        params["no-monitor"] = "true"
        spec["serviceAccountName"] = _service_account_name(spec.get("serviceAccountName") or name)
        spec["containers"].append(_autoscaler(cluster, ray["image"]))
        if version == "v2":
            ray.setdefault("env", []).append({"name": "RAY_enable_autoscaler_v2", "value": "true"})
            spec["restartPolicy"] = "Never"
        elif version == "v1":
            ray.setdefault("env", []).append({"name": "RAY_enable_autoscaler_v2", "value": "false"})
    if node_type == "worker" and autoscaling and version == "v2":
        spec["restartPolicy"] = "Never"
    if node_type == "head":
        annotations["ray.io/ft-enabled"] = "true" if _ft_enabled(cluster) else "false"
    if _ft_enabled(cluster):
        env = ray.setdefault("env", [])
        if node_type == "worker" and not _has_env(env, "RAY_gcs_rpc_server_reconnect_timeout_s"):
            env.append({"name": "RAY_gcs_rpc_server_reconnect_timeout_s", "value": "600"})
        options = spec_all.get("gcsFaultToleranceOptions") or {}
        if node_type == "head" and options.get("redisAddress"):
            storage = options.get("externalStorageNamespace") or (meta.get("annotations") or {}).get(
                "ray.io/external-storage-namespace", meta.get("uid", "")
            )
            annotations["ray.io/external-storage-namespace"] = storage
            if not _has_env(env, "RAY_external_storage_namespace"):
                env.append({"name": "RAY_external_storage_namespace", "value": storage})
            env.append({"name": "RAY_REDIS_ADDRESS", "value": options["redisAddress"]})
    ports = ray.setdefault("ports", [])
    if not any(p.get("name") == "metrics" for p in ports):
        ports.append({"name": "metrics", "containerPort": METRICS_PORT})

    # What BuildPod adds: /dev/shm, ray-logs, the command, env, probes.
    if "plasma-directory" not in params:
        _add_empty_dir(spec, ray, "shared-mem", "/dev/shm", memory=True)
    if node_type == "head" and autoscaling:
        _add_empty_dir(spec, ray, "ray-logs", "/tmp/ray", memory=False)
        _add_empty_dir(spec, spec["containers"][-1], "ray-logs", "/tmp/ray", memory=False)
    written = "".join(f" {part} " for part in (ray.get("command") or []) + (ray.get("args") or []))
    start = _ray_start(node_type, params, ray.get("resources") or {})
    if annotations.get("ray.io/overwrite-container-cmd") != "true" and "ray start" not in written:
        generated = f"ulimit -n ${{RAY_START_ULIMIT_OPEN_FILES:-65536}}; {start}"
        ray["command"] = list(BASH)
        ray["args"] = [f"{written} && {generated}" if written else generated]
    for init in spec.get("initContainers") or []:
        init.setdefault("env", []).extend(
            [{"name": "FQ_RAY_IP", "value": fqdn}, {"name": "RAY_IP", "value": fqdn.split(".")[0]}]
        )
    _ray_env(ray, cluster, node_type, fqdn, port, start)
    ray.setdefault("livenessProbe", _probe("liveness", node_type, params, ray_version))
    ray.setdefault("readinessProbe", _probe("readiness", node_type, params, ray_version))

    metadata: Body = {
        "generateName": generate_name(prefix, node_type),
        "namespace": namespace,
        "labels": labels,
        "ownerReferences": [_owner(cluster)],
    }
    if annotations:  # an empty map is left out of the JSON KubeRay sends (omitempty)
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def _pull_policy(image: str) -> str:
    tail = image.rsplit("/", 1)[-1]
    return (
        "Always" if ("@" not in image and (":" not in tail or tail.endswith(":latest"))) else "IfNotPresent"
    )


def api_server_defaults(pod: Mapping[str, Any]) -> Body:
    """The pod as mutating webhooks receive it: with the API server's defaults and the built-in
    admission plugins (ServiceAccount, DefaultTolerationSeconds, Priority) already applied."""
    out = copy.deepcopy(dict(pod))
    spec = out["spec"]
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("securityContext", {})
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    tolerations = spec.setdefault("tolerations", [])
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        if not any(t.get("key") == key for t in tolerations):
            tolerations.append(
                {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            )
    token = f"kube-api-access-{secrets.token_hex(3)[:5]}"
    if spec.get("automountServiceAccountToken", True):
        spec.setdefault("volumes", []).append({
            "name": token,
            "projected": {
                "defaultMode": 420,
                "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt",
                                   "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{
                        "path": "namespace",
                        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                    }]}},
                ],
            },
        })  # fmt: skip
    for container in [*(spec.get("initContainers") or []), *spec["containers"]]:
        container.setdefault("imagePullPolicy", _pull_policy(container["image"]))
        # The API server's default path, which the agent sidecar's contract names too.
        container.setdefault("terminationMessagePath", AGENT_TERMINATION_LOG)
        container.setdefault("terminationMessagePolicy", "File")
        container.setdefault("resources", {})
        for port in container.get("ports") or []:
            port.setdefault("protocol", "TCP")
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            if probe in container:
                container[probe].setdefault("timeoutSeconds", 1)
                container[probe].setdefault("periodSeconds", 10)
                container[probe].setdefault("successThreshold", 1)
                container[probe].setdefault("failureThreshold", 3)
        if spec.get("automountServiceAccountToken", True):
            container.setdefault("volumeMounts", []).append(
                {"name": token, "mountPath": SA_TOKEN_PATH, "readOnly": True}
            )
    for volume in spec.get("volumes") or []:
        if "configMap" in volume:
            volume["configMap"].setdefault("defaultMode", 420)
    return out


def pod_for(cluster: Mapping[str, Any], node_type: str, group: Mapping[str, Any] | None = None) -> Body:
    """A Ray pod as the mutating webhooks see it: KubeRay's build plus the API server's defaults."""
    return api_server_defaults(build_pod(cluster, node_type, group))


def pods_for(cluster: Mapping[str, Any]) -> list[Body]:
    """The pods KubeRay creates at start: the head, then each worker group's clamped replica count."""
    pods = [pod_for(cluster, "head")]
    for group in cluster["spec"].get("workerGroupSpecs") or []:
        pods.extend(pod_for(cluster, "worker", group) for _ in range(desired_workers(group)))
    return pods


def redis_cleanup_pod(cluster: Mapping[str, Any]) -> Body:
    """The pod of KubeRay's Redis cleanup Job (GCS fault tolerance, on RayCluster deletion): built from
    the head pod, only the Ray container, ``ray.io/node-type: redis-cleanup``, owned by the Job."""
    head = build_pod(cluster, "head")
    meta, spec = head["metadata"], head["spec"]
    meta["labels"][LABEL_NODE_TYPE] = "redis-cleanup"
    job = _trim_front(f"{cluster['metadata']['name']}-redis-cleanup", 63)
    meta["generateName"] = f"{job}-"
    meta["ownerReferences"] = [_owner(cluster, "Job", job)]
    meta["labels"]["batch.kubernetes.io/job-name"] = job
    ray = spec["containers"][0]
    spec["containers"] = [ray]
    ray["args"] = ["python -c 'cleanup_redis_storage(...)'"]
    ray.pop("livenessProbe", None)
    ray.pop("readinessProbe", None)
    ray["resources"] = {
        "limits": {"cpu": "200m", "memory": "256Mi"},
        "requests": {"cpu": "200m", "memory": "256Mi"},
    }
    spec["restartPolicy"] = "Never"
    return api_server_defaults(head)


def dump(pod: Mapping[str, Any]) -> str:
    return json.dumps(pod, indent=1, sort_keys=True)
