"""Every admission request gets an AdmissionReview answer from the real webhook server: malformed
ones, and kinds or operations a webhook does not serve, are allowed without Gismo with the reason
(never a 4xx/5xx, never a patch)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from operator_harness import OperatorHandle

from gismo_operator.webhook import review

UID = "0b6d3f5e-1c51-4a4e-9f5a-3d1c2b1a0e9f"


def request(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "uid": UID,
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "operation": "CREATE",
        "userInfo": {"username": "tester"},
        "object": {"metadata": {"labels": {"ray.io/is-ray-node": "yes"}}, "spec": {"containers": []}},
    }
    base.update(fields)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": base}


CASES: list[tuple[str, str, str, str]] = [
    ("null", "mutate-raypod", "null", "a JSON NoneType"),
    ("a list", "mutate-raypod", "[]", "a JSON list"),
    ("a string", "mutate-raypod", '"review"', "a JSON str"),
    ("not JSON", "mutate-raypod", "{", "not JSON"),
    ("deeply nested", "mutate-raypod", "[" * 200_000 + "]" * 200_000, "nested too deeply"),
    ("request null", "mutate-raypod", json.dumps({"request": None}), "no request object"),
    ("request a list", "mutate-raypod", json.dumps({"request": [1, 2]}), "no request object"),
    ("object a string", "mutate-raypod", json.dumps(request(object="pod")), "object is not an object"),
    ("uid a number", "mutate-raypod", json.dumps(request(uid=7)), "request.uid is not a string"),
    ("no object", "mutate-raypod", json.dumps(request(object=None)), "carries no object"),
    ("no userInfo", "mutate-raypod", json.dumps(request(userInfo=None)), "userInfo is missing"),
    ("wrong kind", "mutate-raypod",
     json.dumps(request(resource={"group": "", "version": "v1", "resource": "services"})), "not services"),
    ("wrong operation", "mutate-raypod", json.dumps(request(operation="UPDATE")), "not 'UPDATE'"),
    ("a subresource", "mutate-raypod", json.dumps(request(subResource="status")), "'status' subresource"),
    ("pool webhook given a pod", "validate-gismopool", json.dumps(request()), "serves gismopools"),
    ("pool webhook, DELETE", "validate-gismopool",
     json.dumps(request(operation="DELETE", resource={"group": "gismo.io", "version": "v1alpha1",
                                                       "resource": "gismopools"})), "not 'DELETE'"),
    ("unknown webhook", "nothing-here", json.dumps(request()), "no webhook is served at /nothing-here"),
]  # fmt: skip


@pytest.mark.parametrize(("webhook", "body", "why"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_malformed_reviews_are_answered(
    operator: OperatorHandle, webhook: str, body: str, why: str
) -> None:
    connector = aiohttp.TCPConnector(ssl=operator.ssl_context())
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(
            f"{operator.webhook_url}/{webhook}", data=body, headers={"Content-Type": "application/json"}
        ) as response,
    ):
        text = await response.text()
        assert response.status == 200, f"HTTP {response.status}: {text[:300]}"
        answer = json.loads(text)
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    result = answer["response"]
    assert result["allowed"] is True and "patch" not in result
    assert why in result["warnings"][0], result
    expected_uid = UID if '"uid": "' + UID in body else ""
    assert result["uid"] == expected_uid


def test_a_well_formed_review_has_no_problem() -> None:
    assert review.problem(request(), "mutate-raypod") is None
    assert review.parse("[" * 200_000)[1] is not None  # an unfinished document is still an answer
