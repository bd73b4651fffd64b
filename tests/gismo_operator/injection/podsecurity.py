"""The Kubernetes Pod Security Standards (baseline and restricted, as of v1.37) as a table of checks.

Derived from the "Pod Security Standards" page of the Kubernetes documentation
(kubernetes.io/docs/concepts/security/pod-security-standards/): one row per control, with the level
that introduces it, the fields it reads and what the page allows. ``violations(pod, level)``
returns the controls a pod fails, each with the offending field, the way PodSecurity admission
words a refusal. Tests use it on what Gismo adds to a pod: a pod that passed before injection must
pass after it.

Controls not listed read nothing Gismo could set (Windows HostProcess, AppArmor/SELinux/procMount/
sysctls are covered below only as far as a container or pod securityContext can carry them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

BASELINE = "baseline"
RESTRICTED = "restricted"
LEVELS = ("privileged", BASELINE, RESTRICTED)

Pod = Mapping[str, Any]

# Baseline: capabilities a container may add (the docs' list).
BASELINE_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
    "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
})  # fmt: skip
SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
})  # fmt: skip
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
# Restricted: the only volume types allowed.
RESTRICTED_VOLUMES = frozenset({
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
    "secret", "image",
})  # fmt: skip
_VOLUME_META = frozenset({"name"})


def containers(pod: Pod) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(field path, container) for every container, init container and ephemeral container."""
    spec = pod.get("spec") or {}
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for i, c in enumerate(spec.get(kind) or []):
            yield f"spec.{kind}[{i}]", c


def _sc(c: Mapping[str, Any]) -> Mapping[str, Any]:
    return c.get("securityContext") or {}


def _psc(pod: Pod) -> Mapping[str, Any]:
    return (pod.get("spec") or {}).get("securityContext") or {}


def _host_namespaces(pod: Pod) -> list[str]:
    spec = pod.get("spec") or {}
    return [f"spec.{k}" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k)]


def _host_process(pod: Pod) -> list[str]:
    out = []
    if (_psc(pod).get("windowsOptions") or {}).get("hostProcess"):
        out.append("spec.securityContext.windowsOptions.hostProcess")
    out += [f"{p}.securityContext.windowsOptions.hostProcess" for p, c in containers(pod)
            if (_sc(c).get("windowsOptions") or {}).get("hostProcess")]  # fmt: skip
    return out


def _privileged(pod: Pod) -> list[str]:
    return [f"{p}.securityContext.privileged" for p, c in containers(pod) if _sc(c).get("privileged")]


def _baseline_capabilities(pod: Pod) -> list[str]:
    return [
        f"{p}.securityContext.capabilities.add: {cap}"
        for p, c in containers(pod)
        for cap in ((_sc(c).get("capabilities") or {}).get("add") or [])
        if cap not in BASELINE_CAPABILITIES
    ]


def _host_path(pod: Pod) -> list[str]:
    vols = (pod.get("spec") or {}).get("volumes") or []
    return [f"spec.volumes[{i}].hostPath" for i, v in enumerate(vols) if "hostPath" in v]


def _host_ports(pod: Pod) -> list[str]:
    return [
        f"{p}.ports[{j}].hostPort"
        for p, c in containers(pod)
        for j, port in enumerate(c.get("ports") or [])
        if port.get("hostPort")
    ]


def _apparmor(pod: Pod) -> list[str]:
    bad = []
    profiles = [("spec.securityContext.appArmorProfile", _psc(pod).get("appArmorProfile"))]
    profiles += [
        (f"{p}.securityContext.appArmorProfile", _sc(c).get("appArmorProfile")) for p, c in containers(pod)
    ]
    for where, prof in profiles:
        if prof and prof.get("type") not in ("RuntimeDefault", "Localhost"):
            bad.append(where)
    for key, value in ((pod.get("metadata") or {}).get("annotations") or {}).items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
            value == "runtime/default" or value.startswith("localhost/")
        ):
            bad.append(f"metadata.annotations[{key}]")
    return bad


def _selinux(pod: Pod) -> list[str]:
    bad = []
    options = [("spec.securityContext.seLinuxOptions", _psc(pod).get("seLinuxOptions"))]
    options += [
        (f"{p}.securityContext.seLinuxOptions", _sc(c).get("seLinuxOptions")) for p, c in containers(pod)
    ]
    for where, opt in options:
        if not opt:
            continue
        if opt.get("type", "") not in SELINUX_TYPES:
            bad.append(f"{where}.type")
        if opt.get("user") or opt.get("role"):
            bad.append(f"{where}.user/role")
    return bad


def _proc_mount(pod: Pod) -> list[str]:
    return [f"{p}.securityContext.procMount" for p, c in containers(pod)
            if _sc(c).get("procMount") not in (None, "Default")]  # fmt: skip


def _baseline_seccomp(pod: Pod) -> list[str]:
    bad = []
    if (_psc(pod).get("seccompProfile") or {}).get("type") == "Unconfined":
        bad.append("spec.securityContext.seccompProfile.type")
    bad += [f"{p}.securityContext.seccompProfile.type" for p, c in containers(pod)
            if (_sc(c).get("seccompProfile") or {}).get("type") == "Unconfined"]  # fmt: skip
    return bad


def _sysctls(pod: Pod) -> list[str]:
    return [f"spec.securityContext.sysctls: {s.get('name')}" for s in _psc(pod).get("sysctls") or []
            if s.get("name") not in SAFE_SYSCTLS]  # fmt: skip


def _volume_types(pod: Pod) -> list[str]:
    bad = []
    for i, v in enumerate((pod.get("spec") or {}).get("volumes") or []):
        kinds = set(v) - _VOLUME_META
        if not kinds <= RESTRICTED_VOLUMES:
            bad.append(f"spec.volumes[{i}]: {', '.join(sorted(kinds - RESTRICTED_VOLUMES))}")
    return bad


def _privilege_escalation(pod: Pod) -> list[str]:
    return [f"{p}.securityContext.allowPrivilegeEscalation" for p, c in containers(pod)
            if _sc(c).get("allowPrivilegeEscalation") is not False]  # fmt: skip


def _run_as_non_root(pod: Pod) -> list[str]:
    pod_level = _psc(pod).get("runAsNonRoot")
    bad = []
    for p, c in containers(pod):
        value = _sc(c).get("runAsNonRoot", pod_level)
        if value is not True:
            bad.append(f"{p}.securityContext.runAsNonRoot")
    if pod_level is False:
        bad.append("spec.securityContext.runAsNonRoot")
    return bad


def _run_as_user(pod: Pod) -> list[str]:
    bad = ["spec.securityContext.runAsUser"] if _psc(pod).get("runAsUser") == 0 else []
    bad += [f"{p}.securityContext.runAsUser" for p, c in containers(pod) if _sc(c).get("runAsUser") == 0]
    return bad


def _restricted_seccomp(pod: Pod) -> list[str]:
    ok = ("RuntimeDefault", "Localhost")
    pod_type = (_psc(pod).get("seccompProfile") or {}).get("type")
    bad = []
    for p, c in containers(pod):
        own = (_sc(c).get("seccompProfile") or {}).get("type")
        if (own or pod_type) not in ok:
            bad.append(f"{p}.securityContext.seccompProfile.type")
    return bad


def _restricted_capabilities(pod: Pod) -> list[str]:
    bad = []
    for p, c in containers(pod):
        caps = _sc(c).get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            bad.append(f"{p}.securityContext.capabilities.drop")
        bad += [
            f"{p}.securityContext.capabilities.add: {cap}"
            for cap in caps.get("add") or []
            if cap != "NET_BIND_SERVICE"
        ]
    return bad


@dataclass(frozen=True)
class Control:
    name: str
    level: str  # the lowest level that enforces it
    check: Callable[[Pod], list[str]]


CONTROLS: tuple[Control, ...] = (
    Control("HostProcess", BASELINE, _host_process),
    Control("Host Namespaces", BASELINE, _host_namespaces),
    Control("Privileged Containers", BASELINE, _privileged),
    Control("Capabilities (baseline)", BASELINE, _baseline_capabilities),
    Control("HostPath Volumes", BASELINE, _host_path),
    Control("Host Ports", BASELINE, _host_ports),
    Control("AppArmor", BASELINE, _apparmor),
    Control("SELinux", BASELINE, _selinux),
    Control("/proc Mount Type", BASELINE, _proc_mount),
    Control("Seccomp (baseline)", BASELINE, _baseline_seccomp),
    Control("Sysctls", BASELINE, _sysctls),
    Control("Volume Types", RESTRICTED, _volume_types),
    Control("Privilege Escalation", RESTRICTED, _privilege_escalation),
    Control("Running as Non-root", RESTRICTED, _run_as_non_root),
    Control("Running as Non-root user", RESTRICTED, _run_as_user),
    Control("Seccomp (restricted)", RESTRICTED, _restricted_seccomp),
    Control("Capabilities (restricted)", RESTRICTED, _restricted_capabilities),
)


def violations(pod: Pod, level: str) -> set[tuple[str, str]]:
    """(control, field) pairs the pod fails at ``level`` (baseline or restricted)."""
    if level not in (BASELINE, RESTRICTED):
        raise ValueError(f"level {level!r}: baseline or restricted")
    enforced = (BASELINE,) if level == BASELINE else (BASELINE, RESTRICTED)
    return {(ctl.name, where) for ctl in CONTROLS if ctl.level in enforced for where in ctl.check(pod)}
