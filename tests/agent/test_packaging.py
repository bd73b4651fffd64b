"""The `gismo` distribution: what it depends on, and the Python versions it runs on.

The agent sidecar image and every Ray worker install `gismo`, so it needs numpy and
prometheus-client only and must import on every Python that Ray 2.60 supports (3.10+). vermin
checks the latter with the same command as `make lint`.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
# The console script beside this interpreter (vermin has no ``python -m`` entry point).
VERMIN = [str(Path(sys.executable).with_name("vermin")), "--config-file", str(REPO / "agent" / "vermin.ini")]


def _runtime_requirements(dist: str) -> dict[str, list[Requirement]]:
    """Required (not extra) dependencies by normalised name; one name may have per-Python pins."""
    out: dict[str, list[Requirement]] = {}
    for text in metadata.requires(dist) or []:
        r = Requirement(text)
        if r.marker is None or "extra" not in str(r.marker):
            out.setdefault(r.name.lower().replace("_", "-"), []).append(r)
    return out


def test_gismo_requires_only_numpy_and_prometheus_client_pinned() -> None:
    reqs = _runtime_requirements("gismo")
    assert set(reqs) == {"numpy", "prometheus-client"}
    assert all(str(r.specifier).startswith("==") for rs in reqs.values() for r in rs), reqs
    # Exactly one numpy pin applies on each Python from 3.10 to 3.14.
    for minor in range(10, 15):
        env = {"python_version": f"3.{minor}", "python_full_version": f"3.{minor}.0"}
        assert sum(r.marker is None or r.marker.evaluate(env) for r in reqs["numpy"]) == 1, minor
    assert metadata.metadata("gismo")["Requires-Python"] == ">=3.10"


def test_gismo_operator_depends_on_the_same_gismo() -> None:
    (gismo,) = _runtime_requirements("gismo-operator")["gismo"]
    assert str(gismo.specifier) == f"=={metadata.version('gismo')}"


def test_gismo_uses_nothing_newer_than_python_3_10() -> None:
    """A static check (vermin): no syntax, module or function of gismo needs Python 3.11+."""
    result = subprocess.run([*VERMIN, str(REPO / "agent" / "gismo")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_version_check_refuses_3_11_only_code(tmp_path: Path) -> None:
    (tmp_path / "newer.py").write_text("from __future__ import annotations\nimport tomllib\n")
    result = subprocess.run([*VERMIN, str(tmp_path)], capture_output=True, text=True)
    assert result.returncode != 0 and "tomllib" in result.stdout
