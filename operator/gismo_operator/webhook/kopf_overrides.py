"""Every override of kopf internals, in one module (what to re-check on a kopf upgrade).

- :class:`EventOnlyDiffBaseStorage`: kopf's annotation diff-base storage, minus the essence
  building for kinds watched with ``@kopf.on.event`` only.
- :class:`FastAdmissionServer` and :func:`fast_admission`: AdmissionReviews answered before
  kopf's per-request machinery, for the webhooks that register a fast path.
- :class:`GismoWebhookServer`: kopf's HTTPS server with its per-request ``_serve`` replaced, so every
  request gets an AdmissionReview answer (malformed ones: allowed, with the reason).

Module-level state: :data:`_fast_admissions`, the fast-path table. Like kopf's own handler
registry, it is filled by decorators when the handler modules are imported
(:mod:`gismo_operator.registry`) and never changed afterwards; it holds functions, not data.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, cast

import aiohttp.web
import kopf
from kopf._core.engines import admission as kopf_admission  # its resource-lookup error

from gismo_operator.core.models import API_VERSION, SLICE_KIND
from gismo_operator.webhook import review

logger = logging.getLogger(__name__)

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


class GismoWebhookServer(kopf.WebhookServer):
    """kopf's HTTPS webhook server, answering every request with an AdmissionReview.

    kopf answers a body that is not JSON with 400, and one it cannot handle (``request`` null or a
    list, ``object`` a string, JSON nested deeper than the decoder's recursion limit, an unknown
    resource) with 400, 404 or 500. Here each of those is an ``allowed: true`` answer naming the
    reason (:mod:`gismo_operator.webhook.review`), and so is any error of a handler: with
    failurePolicy Ignore, "allowed without Gismo" is what the API server would do anyway, said
    explicitly and at once.
    """

    @staticmethod
    async def _serve(fn: Any, request: aiohttp.web.Request) -> aiohttp.web.Response:
        webhook = request.match_info.get("id")
        try:
            text = await request.text()
        except aiohttp.web.HTTPException as exc:  # e.g. a body above aiohttp's client_max_size
            return aiohttp.web.json_response(review.allow(None, f"unreadable request body ({exc.reason})"))
        data, why = review.parse(text)
        if why is None:
            why = review.problem(data, webhook)
        if why is not None:
            logger.warning("admission request to /%s answered without Gismo: %s", webhook, why)
            return aiohttp.web.json_response(review.allow(data, why))
        headers = dict(request.headers)
        sslpeer = request.transport.get_extra_info("peercert") if request.transport else None
        try:
            response = await fn(data, webhook=webhook, sslpeer=sslpeer, headers=headers)
            return aiohttp.web.json_response(response)
        except kopf_admission.UnknownResourceError:  # only right after start-up, before discovery
            return aiohttp.web.json_response(review.allow(data, review.NOT_DISCOVERED))
        except Exception as exc:  # never a 500: say why and let the object through unchanged
            logger.exception("admission request to /%s failed; answered without Gismo", webhook)
            return aiohttp.web.json_response(review.allow(data, f"operator error: {type(exc).__name__}"))
