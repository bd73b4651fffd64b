"""Log formats: JSON lines survive kopf's record extras and exceptions; text lines name the object."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from gismo_operator import logs


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    yield out
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def test_json_lines(stream: io.StringIO) -> None:
    logs.configure("json", "info", stream)
    log = logging.getLogger("gismo_operator.test")
    log.info(
        "hello %s", "pool0", extra={"k8s_ref": {"name": "pool0"}, "settings": object(), "k8s_skip": False}
    )
    log.warning("odd extra", extra={"thing": object()})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    log.debug("hidden")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [r["message"] for r in lines] == ["hello pool0", "odd extra", "failed"]
    assert lines[0]["level"] == "INFO" and lines[0]["object"] == "pool0"
    assert "settings" not in lines[0] and "k8s_skip" not in lines[0]
    assert isinstance(lines[1]["thing"], str)
    assert "ValueError: boom" in lines[2]["exc_info"]


def test_text_lines(stream: io.StringIO) -> None:
    logs.configure("text", "INFO", stream)
    logging.getLogger("x").info("created", extra={"k8s_ref": {"namespace": "ray", "name": "rc"}})
    assert "[ray/rc] created" in stream.getvalue()


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="log_format: expected 'text' or 'json', got 'xml'"):
        logs.configure("xml")
