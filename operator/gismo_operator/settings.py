"""Operator settings from the environment (prefix ``GISMO_OPERATOR_``), checked once at start.

Why a frozen dataclass read once: every bad value is reported before the operator touches the
cluster, each message naming the variable and what it accepts, and the rest of the code gets
typed values instead of strings. Unknown ``GISMO_OPERATOR_*`` names are not errors (the chart
and other modules may add their own) but are returned by :func:`unknown_variables` for a warning.

The names and defaults are a contract with the chart (docs/CONTRACTS.md).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path

from gismo.contract import OPERATOR_ENV_PREFIX
from gismo.poolrules import DEFAULT_FILE_PREFIXES, PoolRuleError, normalize_prefixes
from gismo_operator.core.models import KUBE_QUANTITY_PATTERN
from gismo_operator.core.quantity import QuantityError, parse_bytes

PREFIX = OPERATOR_ENV_PREFIX  # gismo.contract: GISMO_OPERATOR_
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: Pod Security Standards levels (label ``pod-security.kubernetes.io/enforce``).
POD_SECURITY_LEVELS = ("privileged", "baseline", "restricted")
_SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


#: A reservation whose pod never appeared must be released within this many seconds
#: (docs/architecture.md, invariants). It expires after RESERVATION_TTL and the next sweep (every
#: SWEEP_INTERVAL, start to start) releases it, so their sum must not exceed this bound.
MAX_RESERVATION_LIFETIME = 60.0


class SettingsError(ValueError):
    """One or more environment variables hold bad values; the message names each of them."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """Typed operator settings. Ports may be 0 to disable that endpoint (metrics, health)."""

    webhook_port: int = 9443
    webhook_host: str | None = None
    tls_dir: Path = Path("/etc/gismo/tls")
    metrics_port: int = 8080
    health_port: int = 8081
    log_format: str = "text"
    log_level: str = "INFO"
    #: Defaults: 30 + 25 = 55 s, within :data:`MAX_RESERVATION_LIFETIME` with room for the sweep
    #: round itself (listing and writing before it reaches the slice).
    sweep_interval: float = 25.0
    reservation_ttl: float = 30.0
    namespace: str = "default"
    peering: str | None = None
    default_agent_image: str = "gismo-agent:dev"
    #: Folders file-backed pools (shm) may live under (``FILE_BACKEND_PREFIXES``, comma separated);
    #: the chart sets it, the injection passes it to the agent, which applies the same rule.
    file_backend_prefixes: tuple[str, ...] = DEFAULT_FILE_PREFIXES
    #: The agent's CPU and memory (requests = limits) when its pool names no resources. For file-backed
    #: pools the region's bytes are added to the memory: the agent allocates its region's pages of the
    #: tmpfs file, and the kernel charges them to the agent's container.
    agent_cpu: str = "200m"
    agent_memory: str = "128Mi"
    #: The Pod Security level of a namespace without the ``pod-security.kubernetes.io/enforce`` label
    #: (the cluster's PodSecurity admission default; "privileged" unless the cluster changed it).
    pod_security_default: str = "privileged"

    @property
    def tls_cert(self) -> Path:
        """The webhook server's certificate (``tls.crt`` in ``tls_dir``)."""
        return self.tls_dir / "tls.crt"

    @property
    def tls_key(self) -> Path:
        """The webhook server's private key (``tls.key`` in ``tls_dir``)."""
        return self.tls_dir / "tls.key"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read ``GISMO_OPERATOR_*`` from ``env`` (default: ``os.environ``); unset names keep defaults.

        Raises :class:`SettingsError` listing every bad variable at once, so one restart fixes all.
        """
        env = os.environ if env is None else env
        errors: list[str] = []
        values: dict[str, object] = {}

        def raw(name: str) -> str | None:
            value = env.get(PREFIX + name)
            return None if value is None or value.strip() == "" else value.strip()

        def port(name: str, attr: str, allow_zero: bool) -> None:
            text = raw(name)
            if text is None:
                return
            low = 0 if allow_zero else 1
            try:
                number = int(text)
            except ValueError:
                errors.append(f"{PREFIX}{name}: expected a port number, got {text!r}")
                return
            if not low <= number <= 65535:
                errors.append(f"{PREFIX}{name}: port must be between {low} and 65535, got {number}")
                return
            values[attr] = number

        failed: set[str] = set()

        def seconds(name: str, attr: str) -> None:
            text = raw(name)
            if text is None:
                return
            try:
                number = float(text)
            except ValueError:
                errors.append(f"{PREFIX}{name}: expected a number of seconds, got {text!r}")
                failed.add(name)
                return
            if not number > 0 or number != number or number == float("inf"):
                errors.append(f"{PREFIX}{name}: must be a positive number of seconds, got {text!r}")
                failed.add(name)
                return
            values[attr] = number

        def choice(name: str, attr: str, allowed: tuple[str, ...], upper: bool) -> None:
            text = raw(name)
            if text is None:
                return
            norm = text.upper() if upper else text.lower()
            if norm not in allowed:
                errors.append(f"{PREFIX}{name}: expected one of {', '.join(allowed)}, got {text!r}")
                return
            values[attr] = norm

        def quantity(name: str, attr: str, cpu: bool) -> None:
            text = raw(name)
            if text is None:
                return
            if cpu and not re.fullmatch(KUBE_QUANTITY_PATTERN, text):
                errors.append(f"{PREFIX}{name}: expected a CPU quantity such as 200m or 1, got {text!r}")
                return
            if not cpu:
                try:
                    parse_bytes(text)
                except QuantityError:
                    errors.append(f"{PREFIX}{name}: expected a byte quantity such as 128Mi, got {text!r}")
                    return
            values[attr] = text

        def string(name: str, attr: str) -> None:
            text = raw(name)
            if text is not None:
                values[attr] = text

        port("WEBHOOK_PORT", "webhook_port", allow_zero=False)
        port("METRICS_PORT", "metrics_port", allow_zero=True)
        port("HEALTH_PORT", "health_port", allow_zero=True)
        string("WEBHOOK_HOST", "webhook_host")
        string("PEERING", "peering")
        string("DEFAULT_AGENT_IMAGE", "default_agent_image")
        choice("LOG_FORMAT", "log_format", LOG_FORMATS, upper=False)
        choice("POD_SECURITY_DEFAULT", "pod_security_default", POD_SECURITY_LEVELS, upper=False)
        quantity("AGENT_CPU", "agent_cpu", cpu=True)
        quantity("AGENT_MEMORY", "agent_memory", cpu=False)
        choice("LOG_LEVEL", "log_level", LOG_LEVELS, upper=True)
        seconds("SWEEP_INTERVAL", "sweep_interval")
        seconds("RESERVATION_TTL", "reservation_ttl")

        if "SWEEP_INTERVAL" not in failed and "RESERVATION_TTL" not in failed:
            ttl = float(values.get("reservation_ttl", cls.reservation_ttl))  # type: ignore[arg-type]
            interval = float(values.get("sweep_interval", cls.sweep_interval))  # type: ignore[arg-type]
            if ttl + interval > MAX_RESERVATION_LIFETIME:
                errors.append(
                    f"{PREFIX}RESERVATION_TTL ({ttl:g}) + {PREFIX}SWEEP_INTERVAL ({interval:g}) = "
                    f"{ttl + interval:g} s, above {MAX_RESERVATION_LIFETIME:g} s: a reservation whose pod "
                    f"never appears expires after RESERVATION_TTL and is released by the next sweep, "
                    f"and that must happen within {MAX_RESERVATION_LIFETIME:g} s; lower one of them"
                )

        prefixes = raw("FILE_BACKEND_PREFIXES")
        if prefixes is not None:
            try:
                values["file_backend_prefixes"] = normalize_prefixes(
                    p.strip() for p in prefixes.split(",") if p.strip()
                )
            except PoolRuleError as exc:
                errors.append(f"{PREFIX}FILE_BACKEND_PREFIXES: {exc}")

        tls_dir = raw("TLS_DIR")
        if tls_dir is not None:
            if not tls_dir.startswith("/"):
                errors.append(f"{PREFIX}TLS_DIR: must be an absolute path, got {tls_dir!r}")
            else:
                values["tls_dir"] = Path(tls_dir)

        namespace = raw("NAMESPACE") or _service_account_namespace()
        if namespace is not None:
            if not _is_dns_label(namespace):
                errors.append(f"{PREFIX}NAMESPACE: not a valid namespace name: {namespace!r}")
            else:
                values["namespace"] = namespace

        if errors:
            raise SettingsError("invalid operator settings: " + "; ".join(errors))
        return cls(**values)  # type: ignore[arg-type]


def unknown_variables(env: Mapping[str, str] | None = None) -> list[str]:
    """``GISMO_OPERATOR_*`` names in ``env`` that no setting reads (likely typos), sorted."""
    env = os.environ if env is None else env
    known = {PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
    return sorted(name for name in env if name.startswith(PREFIX) and name not in known)


def _service_account_namespace() -> str | None:
    try:
        return _SA_NAMESPACE_FILE.read_text().strip() or None
    except OSError:
        return None


def _is_dns_label(text: str) -> bool:
    if not 0 < len(text) <= 63:
        return False
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789-")
    return set(text) <= allowed and text[0] != "-" and text[-1] != "-"
