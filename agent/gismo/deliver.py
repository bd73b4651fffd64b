"""Client delivery: copy the ``gismo`` package (sources and its abi3 extension) into a folder that
another container imports from.

Why: a stock Ray image has no ``gismo``. As the OpenTelemetry Operator does for Python
auto-instrumentation, the injected agent sidecar copies the package into an ``emptyDir`` volume
shared with the Ray container before that container starts (the native sidecar's startup probe
holds it back until the agent answers, and the agent delivers first), and the webhook appends
that folder to the Ray container's ``PYTHONPATH``. ``gismo.testing.LocalCluster`` starts its
agents the same way and gives its raylets the same ``PYTHONPATH``, so every Ray test imports the
delivered copy.

What is copied: the ``.py`` files and ``py.typed`` of the package this process runs, and the
stable-ABI extensions (``*.abi3.so``: the cache-flush extension ``gismo.memory._cacheflush``, built
with the limited API of 3.10, so it loads in whatever CPython >= 3.10 the Ray container runs).
Nothing built for one interpreter (``.cpython-3XX-*.so``, bytecode) is copied. Without the flush
extension the client refuses memory whose coherence is ``flush`` (gismo.memory.coherence), so it
must travel with the client. Its only import needs are numpy (in every Ray image) and, for Arrow
objects, pyarrow when present.

The copy is atomic: written beside the target, then renamed over it, so a Ray process never
imports a half-copied package (a restarted agent re-delivers over the previous copy).
Cost: a few hundred KiB copied once per pod start.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

PACKAGE = "gismo"
#: Copied file kinds: source, the typing marker and stable-ABI extensions; nothing built for one
#: interpreter.
COPIED_SUFFIXES = (".py", ".typed", ".abi3.so")


def package_dir() -> Path:
    """The folder of the ``gismo`` package this process imported."""
    return Path(__file__).resolve().parent


def _ignore(folder: str, names: list[str]) -> set[str]:
    keep = set()
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isdir(path):
            if name != "__pycache__" and not name.startswith("."):
                keep.add(name)
        elif name.endswith(COPIED_SUFFIXES):
            keep.add(name)
    return set(names) - keep


def deliver(dest: str | os.PathLike[str], source: str | os.PathLike[str] | None = None) -> Path:
    """Copy the package (default: this one) to ``dest/gismo``, replacing a previous delivery.

    Returns the delivered package folder. ``dest`` is created if missing; put ``dest`` (not
    ``dest/gismo``) on ``PYTHONPATH``.
    """
    src = Path(source) if source is not None else package_dir()
    if not (src / "__init__.py").is_file():
        raise FileNotFoundError(f"{src} is not a Python package (no __init__.py)")
    root = Path(dest)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".gismo-delivery-", dir=root))
    try:
        shutil.copytree(src, staging / PACKAGE, ignore=_ignore)
        target = root / PACKAGE
        if target.exists():
            old = staging / "previous"
            os.rename(target, old)  # both inside dest: same filesystem, so renames are atomic
        os.rename(staging / PACKAGE, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
