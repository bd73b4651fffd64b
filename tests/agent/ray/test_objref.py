"""ObjRef is small and picklable (it travels in every task argument and return value)."""

from __future__ import annotations

import pickle

import pytest

import gismo
import gismo.ray as gray


def test_objref_pickles_small_and_round_trips() -> None:
    ref = gray.ObjRef(gismo.Ref(3, 17, 5, 4096, 1 << 30), None, "ab" * 28, 1 << 30)
    blob = pickle.dumps(ref)
    assert len(blob) < 400
    back = pickle.loads(blob)
    assert back == ref and back.in_gismo and back.fallback is None
    assert hash(back) == hash(ref)


def test_which_agent_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("GISMO_SOCKET", "GISMO_DEVICE"):
        monkeypatch.delenv(key, raising=False)
    assert gray._socket_path() is None  # no Gismo here: pure Ray
    monkeypatch.setenv("GISMO_DEVICE", "/dev/dax0.0")
    assert gray._socket_path() == "/run/gismo/agent.sock"  # the contract's default
    monkeypatch.setenv("GISMO_SOCKET", "")
    assert gray._socket_path() is None  # explicitly opted out
    monkeypatch.setenv("GISMO_SOCKET", "/tmp/x.sock")
    assert gray._socket_path() == "/tmp/x.sock"
