"""``gismo node`` on the command line: a bad config exits 2 with the field named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gismo.cli import main


def test_bad_config_exits_2_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "node.json"
    f.write_text(json.dumps({"pools": [{"name": "p", "backend": {"type": "shm", "path": "/etc/x"}}]}))
    assert main(["node", "--config", str(f)]) == 2
    assert "pools[0].backend.path: /etc/x must be under /dev/shm" in capsys.readouterr().err


def test_missing_config_exits_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("GISMO_NODE_CONFIG", raising=False)
    assert main(["node"]) == 2
    assert "GISMO_NODE_CONFIG" in capsys.readouterr().err
