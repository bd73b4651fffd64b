"""Client delivery (gismo.deliver, `gismo deliver`, `gismo agent --deliver-to`): what is copied, that the
copy imports with numpy alone, and that a re-delivery replaces the previous copy whole."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from gismo.deliver import PACKAGE, deliver, package_dir


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


KEPT = (".py", ".typed", ".abi3.so")


def test_python_sources_and_abi3_extensions_are_delivered(tmp_path: Path) -> None:
    src = tmp_path / "src" / PACKAGE
    shutil.copytree(package_dir(), src, ignore=shutil.ignore_patterns("__pycache__"))
    # What an installed gismo may also hold: an extension built for one Python, bytecode.
    (src / "memory" / "_flush.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\x7fELF")
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "client.cpython-311.pyc").write_bytes(b"\0")
    target = deliver(tmp_path / "dest", source=src)
    assert target == tmp_path / "dest" / PACKAGE
    delivered = files(target)
    assert "__init__.py" in delivered and "rdt.py" in delivered and "py.typed" in delivered
    assert "memory/_cacheflush.abi3.so" in delivered  # the flush extension travels with the client
    assert not [f for f in delivered if not f.endswith(KEPT)]
    assert files(target) == {f for f in files(src) if f.endswith(KEPT) and "__pycache__" not in f}


def test_redelivery_replaces_the_previous_copy(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    first = deliver(dest)
    (first / "stale.py").write_text("raise SystemExit('stale')\n")
    deliver(dest)
    assert not (dest / PACKAGE / "stale.py").exists()
    assert sorted(p.name for p in dest.iterdir()) == [PACKAGE]  # no staging folder left behind


def test_the_delivered_copy_imports_with_numpy_alone(tmp_path: Path) -> None:
    """An isolated interpreter (-I -S: no site-packages, no editable install) whose path holds the
    delivered folder and a folder with numpy only: the client and its Ray-free parts import, and the
    delivered cache-flush extension loads (so `flush` memory is served, not refused)."""
    deliver(tmp_path / "client")
    only_numpy = tmp_path / "numpy-only"
    only_numpy.mkdir()
    numpy_dir = Path(np.__file__).parent
    for entry in numpy_dir.parent.iterdir():  # numpy and its vendored libraries (numpy.libs)
        if entry.name == "numpy" or entry.name.startswith("numpy.libs"):
            os.symlink(entry, only_numpy / entry.name)
    code = (
        "import sys; sys.path[:0] = sys.argv[1:]\n"
        "import gismo, gismo.client, gismo.contract, gismo.config, gismo.deliver\n"
        "from gismo.memory import coherence\n"
        "assert gismo.__file__.startswith(sys.argv[1]), gismo.__file__\n"
        "assert coherence._cacheflush.__file__.startswith(sys.argv[1]), 'the delivered flush extension'\n"
        "assert coherence.extension_method() not in (None, 'none')\n"
        "for name in ('ray', 'prometheus_client', 'pyarrow'):\n"
        "    assert name not in sys.modules, name\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, str(tmp_path / "client"), str(only_numpy)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_the_agent_delivers_before_anything_else(tmp_path: Path) -> None:
    """`gismo agent --deliver-to DIR` delivers even when its configuration is unusable (no GISMO_*):
    the Ray container imports from DIR whatever the agent does after (refuse, or answer degraded)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GISMO_")}
    env["GISMO_SOCKET"] = str(tmp_path / "agent.sock")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gismo.cli", "agent", "--deliver-to", str(tmp_path / "c")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # the delivery's own line comes before anything the agent says
    finally:
        proc.kill()
        proc.wait()
    assert '"event": "delivered"' in first
    assert (tmp_path / "c" / PACKAGE / "__init__.py").is_file()
