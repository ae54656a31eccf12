"""Structured logs: one JSON object per line, so log pipelines can filter on fields.

Every record carries ``time``, ``level``, ``logger`` and ``message``; anything passed through
``extra=`` (``event_id``, ``account_id``, ``stage``, ...) becomes a top-level field, and a
traceback becomes ``exc_info``. Error records always carry ``event_id`` and ``account_id``
(``null`` when the caller had none), so an on-call person can search for every error about one
account without knowing which module logged it.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter

_HANDLER_NAME = "unmask-json"
ERROR_FIELDS = ("event_id", "account_id")
"""Fields present on every record at ERROR or above (``null`` when unknown)."""


class UnmaskJsonFormatter(JsonFormatter):
    """JSON formatter with stable field names and the error fields filled in."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            datefmt="%Y-%m-%dT%H:%M:%S%z",
            json_ensure_ascii=False,
        )

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord,
                   message_dict: dict[str, Any]) -> None:
        super().add_fields(log_data, record, message_dict)
        if record.levelno >= logging.ERROR:
            for name in ERROR_FIELDS:
                log_data.setdefault(name, getattr(record, name, None))


def configure_logging(level: str | int, stream: TextIO | None = None) -> logging.Handler:
    """Send every log record of the process to ``stream`` (stderr) as JSON lines at ``level``.

    Replaces the handler of an earlier call (idempotent) and leaves other handlers alone (a
    test runner's capture); returns the installed handler.
    Raises ``ValueError`` for an unknown level name.
    """
    resolved = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(resolved, int):
        raise ValueError(f"unknown log level {level!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(UnmaskJsonFormatter())
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == _HANDLER_NAME:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(resolved)
    return handler
