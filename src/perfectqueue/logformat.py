"""Log lines for the service and the worker: readable text (the default) or one JSON object a line.

Both formats carry the context of the work in hand — the request id, queue and task id a service
request is about — from :data:`log_context`, a mutable mapping per request (or per task) that code
deeper down (a store call running in a worker thread, whose context is a copy) can add to.

JSON lines have ``timestamp`` (UTC, ISO 8601, milliseconds), ``level``, ``logger``, ``message``,
``pid``, the context's keys, a line's ``extra`` fields (``method``, ``status``, ``duration_ms``…), and
``error`` (the traceback) when one is attached.

What a request carries (its path, its queue and task names...) reaches the log, so neither format
lets a value break a line or reorder what a terminal shows: text lines show every control character
of a message or a context value as an escape (``\\n``, ``\\x1b``, ``\\u2028``, the bidirectional
controls such as ``\\u202e``; a backslash as ``\\\\``), and keep only a traceback on lines of its
own; JSON lines carry them as ``\\uXXXX`` escapes (DEL, C1, U+2028, U+2029 and the bidirectional
controls too, which ``json.dumps`` leaves raw).
"""

from __future__ import annotations

import json
import logging
import re
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

_BIDI = "\\u061c\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069"
"""The bidirectional controls (Trojan Source): a terminal would show the text around them reordered."""
_UNSAFE = re.compile(f"[\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029{_BIDI}\\\\]")
_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_TRACE_UNSAFE = re.compile(f"[\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f\\u2028\\u2029{_BIDI}]")
"""In a traceback, which keeps its line breaks (and tabs) and backslashes (paths, source lines)."""
_JSON_UNSAFE = re.compile(f"[\\x7f-\\x9f\\u2028\\u2029{_BIDI}]")
"""What ``json.dumps`` leaves raw but a line reader (``str.splitlines``) or a terminal acts on."""

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
    """``time level logger: message [request_id=… queue=… task_id=…]``, one line (see :func:`escape`)
    but for a traceback on the lines after it."""

    def __init__(self, fmt: str = TEXT_FORMAT) -> None:
        super().__init__(fmt)

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        line = escape(self.formatMessage(record)) + _suffix(getattr(record, "context", None) or {})
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        stack = self.formatStack(record.stack_info) if record.stack_info else None
        return "\n".join(
            [line, *(_TRACE_UNSAFE.sub(_escaped, text) for text in (record.exc_text, stack) if text)]
        )


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
        return _JSON_UNSAFE.sub(_json_escaped, json.dumps(entry, default=str, ensure_ascii=False))


def escape(text: str) -> str:
    """``text`` with each control character (C0, DEL, C1, U+2028, U+2029, the bidirectional
    controls) as a visible escape —
    ``\\n``, ``\\r``, ``\\t``, ``\\x1b``, ``\\u2028`` — and each backslash doubled, so that
    it stays on one line and reads back unambiguously."""
    return _UNSAFE.sub(_escaped, text)


def formatter(kind: LogFormat, text_format: str = TEXT_FORMAT) -> logging.Formatter:
    return JsonFormatter() if kind == "json" else TextFormatter(text_format)


def check_format(value: Any) -> LogFormat:
    """``value`` if it names a format, else ValueError."""
    if value not in FORMATS:
        raise ValueError(f"log_format must be 'text' or 'json', not {value!r}")
    return "json" if value == "json" else "text"


def _context_order(key: str) -> tuple[int, str]:
    return (CONTEXT_KEYS.index(key) if key in CONTEXT_KEYS else len(CONTEXT_KEYS), key)


def _suffix(fields: dict[str, Any]) -> str:
    if not fields:
        return ""
    pairs = " ".join(f"{escape(str(k))}={escape(str(fields[k]))}" for k in sorted(fields, key=_context_order))
    return f" [{pairs}]"


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def _json_escaped(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"
