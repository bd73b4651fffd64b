"""Logging setup: human text (default) or one JSON object per line (``LOG_FORMAT=json``).

Why here and not kopf's ``--log-format``: the operator runs via ``kopf.run`` from our own entry point,
so it configures the root logger itself. kopf's per-object loggers put the object reference in
``record.k8s_ref``; the JSON formatter keeps it as a field so log pipelines can filter by object.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)-8s %(name)s: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure(log_format: str = "text", level: str = "INFO") -> None:
    """Route every logger to stderr in ``log_format`` (``text`` | ``json``) at ``level``.

    Replaces existing root handlers, so calling it twice does not duplicate lines.
    """
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter(JSON_FIELDS, rename_fields={"levelname": "level", "asctime": "time"})
        )
    elif log_format == "text":
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    else:
        raise ValueError(f"log_format: expected 'text' or 'json', got {log_format!r}")
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiohttp's access log is one line per API call: noise at INFO.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
