"""The cheap JSON patch the webhook answers with: applying it yields exactly the injected pod."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_patch_injection import kuberay_pod, plan  # type: ignore[import-not-found]

from gismo_operator.injection import inject_pod
from gismo_operator.injection.diff import json_patch


def roundtrip(old: Any, new: Any) -> None:
    ops = json_patch(old, new)
    assert jsonpatch.apply_patch(copy.deepcopy(old), ops) == new


def test_patch_of_an_injection_applies_to_the_injected_pod_and_is_small() -> None:
    for native in (True, False):
        pod = kuberay_pod(initContainers=[{"name": "init", "image": "x"}])
        pod["metadata"]["annotations"] = {"a/b": "c"}
        new = inject_pod(pod, plan(agent=plan().agent.__class__(image="a", native_sidecar=native)))
        ops = json_patch(pod, new)
        assert jsonpatch.apply_patch(copy.deepcopy(pod), ops) == new
        paths = {op["path"] for op in ops}
        assert "/metadata/annotations/gismo.io~1region" in paths  # keys with '/' are escaped
        assert not any(op["path"] in ("", "/spec", "/spec/containers/0") for op in ops)


def test_equal_documents_need_no_operations() -> None:
    pod = kuberay_pod()
    assert json_patch(pod, copy.deepcopy(pod)) == []


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=3), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(
    old=st.dictionaries(st.text(max_size=3), json_values, max_size=5),
    new=st.dictionaries(st.text(max_size=3), json_values, max_size=5),
)
def test_any_two_documents_roundtrip(old: dict[str, Any], new: dict[str, Any]) -> None:
    roundtrip(old, new)
