"""Log lines for the service and the worker: readable text (the default) or one JSON object a line.

Both formats carry the context of the work in hand — the request id, queue and task id a service
request is about — from :data:`log_context`, a mutable mapping per request (or per task) that code
deeper down (a store call running in a worker thread, whose context is a copy) can add to.

JSON lines have ``timestamp`` (UTC, ISO 8601, milliseconds), ``level``, ``logger``, ``message``,
``pid``, the context's keys, a line's ``extra`` fields (``method``, ``status``, ``duration_ms``…), and
``error`` (the traceback) when one is attached.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["text", "json"]
FORMATS: tuple[LogFormat, ...] = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONTEXT_KEYS = ("request_id", "queue", "task_id")

log_context: ContextVar[dict[str, Any] | None] = ContextVar("perfectqueue_log_context", default=None)
"""The current request's (or task's) fields; ``None`` outside of one."""

_RECORD_KEYS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "context"}


def set_context(**values: Any) -> None:
    """Add ``values`` to the current context (no-op outside of one); ``None`` values are skipped."""
    current = log_context.get()
    if current is not None:
        current.update({k: v for k, v in values.items() if v is not None})


@contextmanager
def context(**values: Any) -> Iterator[dict[str, Any]]:
    """A new context for the lines logged inside the ``with`` block."""
    fields = {k: v for k, v in values.items() if v is not None}
    token = log_context.set(fields)
    try:
        yield fields
    finally:
        log_context.reset(token)


class ContextFilter(logging.Filter):
    """Copies the current context onto each record (as ``record.context``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = log_context.get()
        record.context = dict(current) if current else {}
        return True


class TextFormatter(logging.Formatter):
    """``time level logger: message [request_id=… queue=… task_id=…]``."""

    def __init__(self, fmt: str = TEXT_FORMAT) -> None:
        super().__init__(fmt)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields: dict[str, Any] = getattr(record, "context", None) or {}
        if not fields:
            return line
        suffix = " ".join(f"{k}={fields[k]}" for k in sorted(fields, key=_context_order))
        first, newline, rest = line.partition("\n")
        return f"{first} [{suffix}]{newline}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        entry.update(getattr(record, "context", None) or {})
        entry.update({k: v for k, v in record.__dict__.items() if k not in _RECORD_KEYS})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["error"] = record.exc_text
        return json.dumps(entry, default=str, ensure_ascii=False)


def formatter(kind: LogFormat, text_format: str = TEXT_FORMAT) -> logging.Formatter:
    return JsonFormatter() if kind == "json" else TextFormatter(text_format)


def check_format(value: Any) -> LogFormat:
    """``value`` if it names a format, else ValueError."""
    if value not in FORMATS:
        raise ValueError(f"log_format must be 'text' or 'json', not {value!r}")
    return "json" if value == "json" else "text"


def _context_order(key: str) -> tuple[int, str]:
    return (CONTEXT_KEYS.index(key) if key in CONTEXT_KEYS else len(CONTEXT_KEYS), key)
