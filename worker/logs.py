"""The worker's log: stderr, or the ``log`` file, reopened on SIGUSR2 (after a logrotate).

Every line is ``time level logger pid: message``; a task's lines are ``key=value`` pairs
(``event=finish id=… type=… duration=0.123``) so that they can be grepped and parsed.
"""

from __future__ import annotations

import logging
import os
import sys

from ..logformat import ContextFilter, LogFormat, formatter

FORMAT = "%(asctime)s %(levelname)s %(name)s pid=%(process)d: %(message)s"
_MARK = "_perfectqueue_worker"


class ReopenableFileHandler(logging.FileHandler):
    """A file handler whose file can be closed and opened again by path (log rotation)."""

    def reopen(self) -> None:
        self.acquire()
        try:
            if self.stream is not None:
                self.stream.close()
            self.stream = self._open()
        finally:
            self.release()


def configure(path: str | None, log_format: LogFormat = "text") -> logging.Handler:
    """Send the root logger to ``path`` (append) or stderr in ``log_format`` ('text': the lines
    above; 'json': one object per line), replacing the handler set before."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _MARK, False) or _is_stderr(h)]:
        root.removeHandler(old)
        old.close()
    handler: logging.Handler
    if path:
        handler = ReopenableFileHandler(os.path.abspath(path), encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    setattr(handler, _MARK, True)
    handler.addFilter(ContextFilter())
    handler.setFormatter(formatter(log_format, FORMAT))
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    return handler


def reopen() -> None:
    """Reopen the worker's log file, if it writes to one."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, ReopenableFileHandler):
            handler.reopen()


def flush() -> None:
    """Flush every handler (before a fork, so no buffered line is written twice)."""
    for handler in logging.getLogger().handlers:
        handler.flush()


def fields(**values: object) -> str:
    """``key=value`` pairs for a structured line (values with spaces are quoted)."""
    return " ".join(f"{key}={_value(value)}" for key, value in values.items())


def _value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    text = str(value)
    return repr(text) if (" " in text or not text) else text


def _is_stderr(handler: logging.Handler) -> bool:
    return type(handler) is logging.StreamHandler and getattr(handler, "stream", None) is sys.stderr
