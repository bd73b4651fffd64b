"""Every override of kopf internals, in one module (what to re-check on a kopf upgrade).

- :class:`EventOnlyDiffBaseStorage`: kopf's annotation diff-base storage, minus the essence
  building for kinds watched with ``@kopf.on.event`` only.
- :class:`FastAdmissionServer` and :func:`fast_admission`: AdmissionReviews answered before
  kopf's per-request machinery, for the webhooks that register a fast path.

Module-level state: :data:`_fast_admissions`, the fast-path table. Like kopf's own handler
registry, it is filled by decorators when the handler modules are imported
(:mod:`gismo_operator.registry`) and never changed afterwards; it holds functions, not data.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, cast

import kopf

from gismo_operator.core.models import API_VERSION, SLICE_KIND

#: Kinds (apiVersion, kind) the operator watches only with ``@kopf.on.event`` handlers: no
#: create/update/delete/resume handler, daemon or timer. kopf's change detection is never used
#: for them, so :class:`EventOnlyDiffBaseStorage` skips building their "essence". A unit test
#: (tests/gismo_operator/webhook/test_kopf_overrides.py) fails if a change handler is ever
#: registered for one of them.
EVENT_ONLY_KINDS: frozenset[tuple[str, str]] = frozenset({(API_VERSION, SLICE_KIND), ("v1", "Pod")})


class EventOnlyDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's annotation diff-base storage, minus the work for event-only kinds.

    On every watch event of every resource, kopf builds the object's "essence" (a deep copy of the
    body minus metadata and status) and deep-copies it once more, to detect changes for
    create/update handlers. A GismoSlice changes at every admission (its ``spec.regions`` lists
    every region), so those two deep copies were a large part of an admission's CPU cost, for a
    result nothing uses. For :data:`EVENT_ONLY_KINDS` the essence is empty; other kinds (and a
    body without apiVersion/kind) get kopf's own.
    """

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        if (body.get("apiVersion"), body.get("kind")) in EVENT_ONLY_KINDS:
            return cast(kopf.BodyEssence, {})
        return super().build(body=body, extra_fields=extra_fields)


#: An admission answered without kopf's per-request machinery: given the AdmissionReview (decoded),
#: the response review, or None to let kopf answer it (anything the fast path does not cover).
FastAdmission = Callable[[Mapping[str, Any]], Awaitable[dict[str, Any] | None]]

_fast_admissions: dict[str, FastAdmission] = {}


def fast_admission(webhook_id: str) -> Callable[[FastAdmission], FastAdmission]:
    """Register a fast path for the webhook served at ``/<webhook_id>`` (decorator).

    The kopf handler of the same id stays registered (kopf still manages the webhook
    configuration in --dev, and answers whatever the fast path hands back with None).
    """

    def register(fn: FastAdmission) -> FastAdmission:
        _fast_admissions[webhook_id] = fn
        return fn

    return register


class FastAdmissionServer:
    """Wraps kopf's webhook server (or any server/tunnel) so registered fast paths answer first.

    Why: kopf answers each AdmissionReview through its generic machinery (a memo, body and patch
    wrappers with reference cycles, a diff, a cause, handler selection and state, outcome
    bookkeeping, an INFO log line per request), several times the cost of the pod webhook's own
    work at hundreds of admissions per second, and its cyclic objects feed the garbage collector
    pauses that made the latency tail. Same server, port, TLS and ``/<handler id>`` paths.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __aenter__(self) -> FastAdmissionServer:
        if isinstance(self.inner, contextlib.AbstractAsyncContextManager):
            await self.inner.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        if isinstance(self.inner, contextlib.AbstractAsyncContextManager):
            return await self.inner.__aexit__(*exc)
        return None

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        async def serve(request: Any, *, webhook: str | None = None, **kwargs: Any) -> Any:
            fast = _fast_admissions.get(webhook or "")
            if fast is not None and isinstance(request, Mapping):
                answer = await fast(request)
                if answer is not None:
                    return answer
            return await fn(request, webhook=webhook, **kwargs)

        async for client_config in self.inner(serve):
            yield client_config
