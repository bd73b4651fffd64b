"""Generate the Python stubs of the kubelet device-plugin API (``make protos``).

The stubs are committed (``agent/gismo/node/proto/api_pb2*.py(i)``) so that installing ``gismo[node]``
needs no code generator; this script is the one way they are made, and
tests/agent/node/test_protos.py checks that the committed files equal a fresh run of it.

    python scripts/gen_protos.py            # rewrite the committed stubs
    python scripts/gen_protos.py OUT_DIR    # write them under OUT_DIR/gismo/node/proto/ instead
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROTO_DIR = Path("gismo") / "node" / "proto"
PROTO = REPO / "agent" / PROTO_DIR / "api.proto"
OUTPUTS = ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py", "api_pb2_grpc.pyi")


def header(name: str) -> str:
    from importlib.metadata import version

    return (
        f"# {name}: generated code, committed. Do not edit: `make protos` regenerates it from api.proto\n"
        f"# (grpcio-tools {version('grpcio-tools')}, mypy-protobuf {version('mypy-protobuf')}).\n"
    )


def generate(out_root: Path) -> list[Path]:
    """Write the stubs under ``out_root / gismo/node/proto``; return their paths."""
    from grpc_tools import protoc

    plugin = shutil.which("protoc-gen-mypy", path=str(Path(sys.executable).parent))
    grpc_plugin = shutil.which("protoc-gen-mypy_grpc", path=str(Path(sys.executable).parent))
    if plugin is None or grpc_plugin is None:
        raise SystemExit("protoc-gen-mypy not found beside this Python: pip install mypy-protobuf")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / PROTO_DIR
        src.mkdir(parents=True)
        shutil.copyfile(PROTO, src / "api.proto")
        out = Path(tmp) / "out"
        out.mkdir()
        args = [
            "grpc_tools.protoc",
            f"-I{tmp}",
            f"--plugin=protoc-gen-mypy={plugin}",
            f"--plugin=protoc-gen-mypy_grpc={grpc_plugin}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            f"--mypy_out={out}",
            f"--mypy_grpc_out={out}",
            str(PROTO_DIR / "api.proto"),
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        dest = out_root / PROTO_DIR
        dest.mkdir(parents=True, exist_ok=True)
        written = []
        for name in OUTPUTS:
            text = (out / PROTO_DIR / name).read_text()
            (dest / name).write_text(header(name) + text)
            written.append(dest / name)
    return written


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "agent"
    for path in generate(root):
        print(path)
