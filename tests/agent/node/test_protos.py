"""The committed kubelet API stubs are what `make protos` makes from the committed api.proto, and the
proto is kept with its license and NOTICE."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
PROTO_DIR = REPO / "agent" / "gismo" / "node" / "proto"


def _generator() -> object:
    spec = importlib.util.spec_from_file_location("gen_protos", REPO / "scripts" / "gen_protos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_protos"] = module
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_match_a_fresh_generation(tmp_path: Path) -> None:
    gen = _generator()
    written = gen.generate(tmp_path)  # type: ignore[attr-defined]
    assert [p.name for p in written] == ["api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py", "api_pb2_grpc.pyi"]
    for fresh in written:
        committed = PROTO_DIR / fresh.name
        assert committed.read_text() == fresh.read_text(), f"{committed} is stale: run `make protos`"
        assert committed.read_text().startswith(f"# {fresh.name}: generated code, committed.")


def test_the_proto_is_kept_with_its_license_and_notice() -> None:
    proto = (PROTO_DIR / "api.proto").read_text()
    assert "package v1beta1;" in proto and "service DevicePlugin" in proto
    assert "Apache License" in (PROTO_DIR / "LICENSE").read_text()
    notice = (PROTO_DIR / "NOTICE").read_text()
    assert "Kubernetes v1.36.2" in notice and "deviceplugin/v1beta1/api.proto" in notice


def test_the_service_names_are_the_kubelets() -> None:
    from gismo.node.proto import api_pb2

    services = api_pb2.DESCRIPTOR.services_by_name
    assert services["DevicePlugin"].full_name == "v1beta1.DevicePlugin"
    assert services["Registration"].full_name == "v1beta1.Registration"
