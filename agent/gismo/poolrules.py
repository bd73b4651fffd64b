"""What a valid pool is: the one rule the CRD schema, the webhooks, the injection and the agent share.

A pool that breaks this rule would break every Ray pod that uses it (the agent refuses to start, or
the API server refuses the pod's nodeAffinity), so every boundary refuses it the same way: the
GismoPool model (and through it the CRD schema and the validating webhook), the injection plan, and
the agent's Config. Each check returns ``(field, rule)`` problems; a boundary spells the field its
own way (``spec.regionSize`` in the API, ``GISMO_REGION_SIZE`` in the agent) and the rule text is
the same everywhere (:func:`message`).

The region-size minimum is not written down here: it is the smallest region the agent's own layout
(:mod:`gismo.memory.layout`) can lay its default tables and one data page into.

Pure standard library plus the layout module; importable on every Python that Ray supports.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from .contract import BACKEND_DEVDAX, PAGE
from .errors import CorruptRegion
from .memory.layout import Geometry

#: DAX devices map in 2 MiB pages: offsets and region sizes must be multiples of it.
DEVDAX_ALIGN: Final = 2 << 20
#: Folders file-backed pools may live under unless the chart allows more (the operator's
#: ``FILE_BACKEND_PREFIXES`` setting, the agent's ``GISMO_FILE_PREFIXES``).
DEFAULT_FILE_PREFIXES: Final = ("/dev/shm",)
#: Where DAX character devices live: ``/dev/dax<region>.<device>``.
DEVDAX_PATTERN: Final = r"^/dev/dax[0-9]+\.[0-9]+$"
#: Longest backend path accepted (Linux PATH_MAX less the terminating NUL).
MAX_PATH: Final = 4095

# Kubernetes label syntax (apimachinery validation.IsQualifiedName / IsValidLabelValue).
MAX_LABEL_NAME: Final = 63
MAX_LABEL_PREFIX: Final = 253
LABEL_NAME_PATTERN: Final = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
#: A label value: empty, or a label name.
LABEL_VALUE_PATTERN: Final = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
DNS_SUBDOMAIN_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

#: An absolute, normalized path without control characters, as one regular expression, so the CRD
#: schema can say it too: one or more ``/segment`` where a segment is not empty, ``.`` or ``..`` and
#: holds no ``/``, no C0 control character (NUL, newline, ...) and no DEL.
_C = r"/\x00-\x1f\x7f"
_SEGMENT = rf"(?:[^.{_C}][^{_C}]*|\.[^.{_C}][^{_C}]*|\.\.[^{_C}]+)"
NORMAL_PATH_PATTERN: Final = rf"^(?:/{_SEGMENT})+$"

_LABEL_NAME = re.compile(LABEL_NAME_PATTERN)
_LABEL_VALUE = re.compile(LABEL_VALUE_PATTERN)
_DNS_SUBDOMAIN = re.compile(DNS_SUBDOMAIN_PATTERN)
_NORMAL_PATH = re.compile(NORMAL_PATH_PATTERN)
_DEVDAX = re.compile(DEVDAX_PATTERN)

#: A problem: (field, rule). Fields are the API's names (``regionSize``, ``backend.path``,
#: ``nodeSelector``); :data:`AGENT_FIELDS` gives the agent's.
Problem = tuple[str, str]
AGENT_FIELDS: Final = {"regionSize": "GISMO_REGION_SIZE", "backend.path": "GISMO_DEVICE"}


class PoolRuleError(ValueError):
    """A pool breaks the rule; the message is ``field: rule`` for each problem."""


def message(problems: Iterable[Problem], fields: Mapping[str, str] | None = None, prefix: str = "") -> str:
    """``field: rule; field: rule`` with each field renamed through ``fields`` and prefixed."""
    names = fields or {}
    return "; ".join(f"{prefix}{names.get(field, field)}: {rule}" for field, rule in problems)


@functools.lru_cache(maxsize=1)
def min_region_size() -> int:
    """The smallest region (a multiple of PAGE) the agent's layout fits its default tables into.

    Derived by asking the layout itself, so a change of the default tables moves the minimum too.
    """
    size = PAGE
    while True:
        try:
            Geometry.compute(0, size)
        except CorruptRegion:
            size += PAGE
            continue
        return size


def region_alignment(backend: str) -> int:
    """The multiple region sizes (and slice offsets) of a backend must be."""
    return DEVDAX_ALIGN if backend == BACKEND_DEVDAX else PAGE


def min_region_size_for(backend: str) -> int:
    """The smallest region size a pool of ``backend`` may have (the layout's minimum, aligned)."""
    align = region_alignment(backend)
    return -(-min_region_size() // align) * align


def region_size_problems(region_size: int, backend: str) -> list[Problem]:
    """Region sizes the agent can serve: a positive multiple of the backend's page, at least the
    minimum its own tables need."""
    align = region_alignment(backend)
    low = min_region_size_for(backend)
    if region_size <= 0 or region_size % align or region_size < low:
        kind = "devdax (2 MiB pages)" if backend == BACKEND_DEVDAX else "file backends"
        return [(
            "regionSize",
            f"{region_size} bytes is not a region the agent can serve: for {kind} it must be a "
            f"multiple of {align} bytes and at least {low} bytes (the agent's tables plus one data page)",
        )]  # fmt: skip
    return []


def label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a Kubernetes label key (``[prefix/]name``), or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and not prefix:
        return f"label key {key!r} has an empty prefix"
    if not name or len(name) > MAX_LABEL_NAME or not _LABEL_NAME.match(name):
        return (
            f"label key {key!r}: the name part must be 1-{MAX_LABEL_NAME} characters of [-A-Za-z0-9_.], "
            "starting and ending with an alphanumeric character"
        )
    if slash and (len(prefix) > MAX_LABEL_PREFIX or not _DNS_SUBDOMAIN.match(prefix)):
        return (
            f"label key {key!r}: the prefix must be a DNS subdomain of at most {MAX_LABEL_PREFIX} characters"
        )
    return None


def label_value_problem(value: str) -> str | None:
    """Why ``value`` is not a Kubernetes label value, or None."""
    if len(value) > MAX_LABEL_NAME or not _LABEL_VALUE.match(value):
        return (
            f"label value {value!r} must be empty or 1-{MAX_LABEL_NAME} characters of [-A-Za-z0-9_.], "
            "starting and ending with an alphanumeric character"
        )
    return None


def node_selector_problems(selector: Mapping[str, str]) -> list[Problem]:
    """Every key and value of a nodeSelector must be of Kubernetes label syntax (it becomes the Ray
    pods' nodeAffinity, which the API server checks)."""
    out: list[Problem] = []
    for key, value in selector.items():
        for why in (label_key_problem(key), label_value_problem(value)):
            if why:
                out.append(("nodeSelector", why))
    return out


def normalize_prefixes(prefixes: Iterable[str]) -> tuple[str, ...]:
    """Allowed folders, checked: absolute and normalized like a backend path (``/`` itself is not a
    folder anyone should share as a pool). Raises PoolRuleError naming the bad one."""
    out = []
    for prefix in prefixes:
        if not _NORMAL_PATH.match(prefix) or len(prefix) > MAX_PATH:
            raise PoolRuleError(f"file backend prefix {prefix!r} is not an absolute, normalized folder path")
        out.append(prefix)
    if not out:
        raise PoolRuleError("at least one file backend prefix is needed")
    return tuple(out)


def path_problems(backend: str, path: str, file_prefixes: Sequence[str] | None) -> list[Problem]:
    """Backend paths: absolute, normalized (no ``.``, ``..``, ``//`` or trailing ``/``), without
    control characters; devdax at ``/dev/daxN.M``; file backends strictly inside one of
    ``file_prefixes`` (None: the prefix part is left to a boundary that knows the setting)."""
    if len(path) > MAX_PATH or not _NORMAL_PATH.match(path):
        return [(
            "backend.path",
            f"{path!r} must be an absolute, normalized path (no '.', '..', '//' or trailing '/') "
            f"without control characters, at most {MAX_PATH} characters",
        )]  # fmt: skip
    if backend == BACKEND_DEVDAX:
        if not _DEVDAX.match(path):
            return [("backend.path", f"{path!r}: a devdax backend is a DAX device, /dev/dax<N>.<M>")]
        return []
    if file_prefixes is not None and not any(path.startswith(p + "/") for p in file_prefixes):
        allowed = ", ".join(f"{p}/" for p in file_prefixes)
        return [
            ("backend.path", f"{path!r}: a file backend must lie under one of the allowed folders: {allowed}")
        ]
    return []


def pool_problems(
    *,
    backend: str,
    path: str,
    region_size: int,
    node_selector: Mapping[str, str] | None = None,
    file_prefixes: Sequence[str] | None = None,
) -> list[Problem]:
    """Every way a pool breaks the rule (empty: it is one every boundary accepts)."""
    return (
        region_size_problems(region_size, backend)
        + path_problems(backend, path, file_prefixes)
        + node_selector_problems(node_selector or {})
    )
