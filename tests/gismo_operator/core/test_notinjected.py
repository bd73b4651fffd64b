"""Which Ray pods the webhook never handled (pure)."""

from __future__ import annotations

from typing import Any

from gismo_operator.core import notinjected
from gismo_operator.injection import mark_skipped


def pod(name: str, cluster: str = "rc", namespace: str = "ray", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}",
                     "labels": {"ray.io/is-ray-node": "yes", "ray.io/cluster": cluster}},
        "spec": {"containers": [{"name": "ray-head"}]},
    }  # fmt: skip
    for key, value in extra.items():
        body.setdefault(key, {}).update(value) if isinstance(value, dict) else body.update({key: value})
    return body


def test_only_live_unhandled_pods_of_clusters_with_a_slice() -> None:
    injected = pod("injected")
    injected["spec"]["initContainers"] = [{"name": "gismo-agent"}]
    deleting = pod("deleting")
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    pods = [
        pod("b-missed"), pod("a-missed"), injected, mark_skipped(pod("skipped"), "slice full"), deleting,
        pod("done", status={"phase": "Succeeded"}), pod("other-cluster", cluster="x"),
        pod("other-ns", namespace="elsewhere"),
    ]  # fmt: skip
    found = notinjected.not_injected(pods, [("ray", "rc"), ("ray", "quiet")])
    assert [p["metadata"]["name"] for p in found[("ray", "rc")]] == ["a-missed", "b-missed"]
    assert found[("ray", "quiet")] == []
    assert ("ray", "x") not in found  # no slice: the cluster was told why by its own Events


def test_status_and_messages_name_the_pods() -> None:
    names = [f"p{i:02}" for i in range(25)]
    status = notinjected.slice_status(names, [f"uid-{n}" for n in reversed(names)])
    assert status["podsNotInjected"] == 25 and status["podsNotInjectedNames"] == names[:20]
    assert status["podsNotInjectedReported"] == [f"uid-{n}" for n in names]  # sorted: a stable status
    assert "25 Ray pod(s)" in notinjected.cluster_message(
        names
    ) and "and 5 more" in notinjected.cluster_message(names)
    assert "p00" in notinjected.pod_message("p00", "rc") and "failurePolicy" in notinjected.pod_message(
        "p00", "rc"
    )


def test_what_the_status_says_was_reported_survives_the_operator() -> None:
    names = ["a", "b"]
    status = notinjected.slice_status(names, ["uid-a", "uid-b"])
    assert notinjected.already_reported(status, names) == ({"uid-a", "uid-b"}, True)
    # Another set of pods (one more, one fewer): the cluster's Event is due again; the uids still count.
    assert notinjected.already_reported(status, ["a", "b", "c"]) == ({"uid-a", "uid-b"}, False)
    assert notinjected.already_reported(status, ["a"])[1] is False
    assert notinjected.already_reported({}, names) == (set(), False)  # a slice never reported on
    assert notinjected.already_reported(status, []) == ({"uid-a", "uid-b"}, False)  # none: nothing to tell
    bad = {"podsNotInjectedReported": [1, None, "uid-x"], "podsNotInjected": "2"}
    assert notinjected.already_reported(bad, names) == ({"uid-x"}, False)  # edited status: what is valid
    many = notinjected.slice_status(names, [f"u{i:05}" for i in range(notinjected.MAX_REPORTED + 5)])
    assert len(many["podsNotInjectedReported"]) == notinjected.MAX_REPORTED  # bounded
