"""Logging setup: human text (default) or one JSON object per line (``LOG_FORMAT=json``).

Why here and not kopf's ``--log-format``: the operator runs via ``kopf.run`` from our own entry point,
so it configures the root logger itself. kopf's per-object loggers attach ``k8s_ref`` (the object),
``k8s_skip`` and ``settings`` to records; text lines get a ``[namespace/name]`` prefix, JSON lines an
``object`` field, and the rest is never serialized (``settings`` is not JSON). Anything else that is
not JSON-serializable is rendered with ``str`` rather than breaking the log line.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)-8s %(name)s: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"
_KOPF_ATTRS = {"k8s_skip", "k8s_ref", "settings"}


def _object_name(record: logging.LogRecord) -> str | None:
    ref = getattr(record, "k8s_ref", None)
    if not isinstance(ref, dict):
        return None
    namespace, name = ref.get("namespace"), ref.get("name")
    return f"{namespace}/{name}" if namespace else str(name)


class TextFormatter(logging.Formatter):
    """Plain lines; records about a Kubernetes object are prefixed with ``[namespace/name]``."""

    def format(self, record: logging.LogRecord) -> str:
        name = _object_name(record)
        if name is not None:
            record = logging.makeLogRecord(record.__dict__)
            record.msg = f"[{name}] {record.msg}"
        return super().format(record)


class JsonLineFormatter(JsonFormatter):
    """One JSON object per record: ``time``, ``level``, ``name``, ``message``, ``object``, extras."""

    def __init__(self) -> None:
        super().__init__(
            JSON_FIELDS,
            rename_fields={"levelname": "level", "asctime": "time"},
            reserved_attrs=[*RESERVED_ATTRS, *_KOPF_ATTRS],
            json_default=str,
        )

    def add_fields(
        self, log_record: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_record, record, message_dict)
        name = _object_name(record)
        if name is not None:
            log_record["object"] = name


def configure(log_format: str = "text", level: str = "INFO", stream: TextIO | None = None) -> None:
    """Route every logger to ``stream`` (default stderr) in ``log_format`` (``text`` | ``json``) at ``level``.

    Replaces existing root handlers, so calling it twice does not duplicate lines.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonLineFormatter())
    elif log_format == "text":
        handler.setFormatter(TextFormatter(TEXT_FORMAT))
    else:
        raise ValueError(f"log_format: expected 'text' or 'json', got {log_format!r}")
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiohttp's access log is one line per API call: noise at INFO.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
