"""Every admission request gets an AdmissionReview answer: the shape check and the "allowed, without
Gismo, because ..." answer for requests the handlers cannot take.

The API server only ever sends well-formed reviews, but the webhook port is reachable from the
cluster network, and a 500 (or a hang) is an answer the API server turns into failurePolicy. So a
review that is not a JSON object, has no ``request`` object, an ``object`` that is not an object, or
names a resource or operation a webhook does not serve, is answered ``allowed: true`` with the
reason as a warning: nothing is injected, nothing is refused. Pure functions; no kopf, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from gismo_operator.constants import WEBHOOK_MUTATE_RAYPOD, WEBHOOK_VALIDATE_POOL
from gismo_operator.core.models import GROUP, POOL_PLURAL, VERSION

ADMISSION_API: Final = "admission.k8s.io/v1"
#: Kubernetes truncates longer warnings; keep ours whole.
MAX_WARNING: Final = 256

#: The reason given while kopf has not yet discovered the resource (the first moments after start).
NOT_DISCOVERED: Final = "the operator has not discovered this resource yet (it is starting)"

#: What each webhook serves: (group, version, resource) and operations.
SERVES: Final[Mapping[str, tuple[tuple[str, str, str], frozenset[str]]]] = {
    WEBHOOK_MUTATE_RAYPOD: (("", "v1", "pods"), frozenset({"CREATE"})),
    WEBHOOK_VALIDATE_POOL: ((GROUP, VERSION, POOL_PLURAL), frozenset({"CREATE", "UPDATE"})),
}


def parse(text: str) -> tuple[Any, str | None]:
    """The decoded body, or None and why it cannot be decoded (never raises)."""
    try:
        return json.loads(text), None
    except RecursionError:
        return None, "the AdmissionReview is nested too deeply to decode"
    except ValueError as exc:
        return None, f"the AdmissionReview is not JSON ({exc.__class__.__name__})"


def problem(review: Any, webhook: str | None) -> str | None:
    """Why ``review`` is not a request webhook ``webhook`` handles; None when it is one."""
    if not isinstance(review, Mapping):
        return f"the AdmissionReview is a JSON {type(review).__name__}, not an object"
    request = review.get("request")
    if not isinstance(request, Mapping):
        return "the AdmissionReview has no request object"
    if not isinstance(request.get("uid", ""), str):
        return "request.uid is not a string"
    for key in ("object", "oldObject"):
        if request.get(key) is not None and not isinstance(request.get(key), Mapping):
            return f"request.{key} is not an object"
    if request.get("object") is None and request.get("oldObject") is None:
        return "the request carries no object"
    if not isinstance(request.get("userInfo"), Mapping):
        return "request.userInfo is missing"
    serves = SERVES.get(webhook or "")
    if serves is None:
        return f"no webhook is served at /{webhook}"
    (group, version, plural), operations = serves
    resource = request.get("resource")
    if not isinstance(resource, Mapping) or (
        resource.get("group"),
        resource.get("version"),
        resource.get("resource"),
    ) != (group, version, plural):
        return f"webhook {webhook} serves {plural}.{group or 'core'}/{version}, not {_describe(resource)}"
    if request.get("subResource"):
        return f"webhook {webhook} does not handle the {request.get('subResource')!r} subresource"
    if request.get("operation") not in operations:
        return f"webhook {webhook} handles {', '.join(sorted(operations))}, not {request.get('operation')!r}"
    return None


def _describe(resource: Any) -> str:
    if not isinstance(resource, Mapping):
        return "a request without a resource"
    return f"{resource.get('resource')}.{resource.get('group') or 'core'}/{resource.get('version')}"


def uid_of(review: Any) -> str:
    """The request's uid when there is a usable one (the API server matches answers by it)."""
    if isinstance(review, Mapping) and isinstance(review.get("request"), Mapping):
        uid = review["request"].get("uid")
        if isinstance(uid, str):
            return uid
    return ""


def allow(review: Any, reason: str) -> dict[str, Any]:
    """The answer "allowed, without Gismo": nothing patched, the reason as a warning."""
    return {
        "apiVersion": ADMISSION_API,
        "kind": "AdmissionReview",
        "response": {
            "uid": uid_of(review),
            "allowed": True,
            "warnings": [f"Gismo did not act on this request: {reason}"[:MAX_WARNING]],
        },
    }
