"""The service's log: text or JSON lines (``log_format``), a request id on every line of a request.

Each request gets an id — the caller's ``X-Request-ID`` when it is a sane token, else a new one —
echoed in the response's ``X-Request-ID`` header and attached (with the queue, and the task id once
a store call names it) to every line logged while the request runs. One access line per request
replaces uvicorn's: ``POST /v1/queues/q/finish 204 3.2ms``, with ``method``, ``path``, ``status``
and ``duration_ms`` as fields of its JSON line.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..logformat import ContextFilter, LogFormat, context, formatter
from .asgi import header
from .httpmetrics import HttpMetrics

access_log = logging.getLogger("perfectqueue.access")

REQUEST_ID_HEADER = b"x-request-id"
REQUEST_ID = re.compile(r"[A-Za-z0-9._:+=/@-]{1,128}")
_MARK = "_perfectqueue_service"


def configure(log_format: LogFormat, level: str = "info") -> None:
    """Send the root logger (uvicorn's loggers propagate to it) to stderr in ``log_format``."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    handler = logging.StreamHandler(sys.stderr)
    setattr(handler, _MARK, True)
    handler.addFilter(ContextFilter())
    handler.setFormatter(formatter(log_format))
    root.addHandler(handler)
    root.setLevel(level.upper())


def request_id_of(scope: Scope) -> str:
    """The caller's X-Request-ID if it is 1 to 128 token characters, else a new random id."""
    given = header(scope, REQUEST_ID_HEADER)
    return given if given is not None and REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


class RequestLog:
    """Pure ASGI: the request id (header in, header out, log context), the access line and the
    HTTP metrics, from one wrapper of each request."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != REQUEST_ID_HEADER]
                message = {**message, "headers": [*headers, (REQUEST_ID_HEADER, request_id.encode())]}
            await send(message)

        self.metrics.started()
        with context(request_id=request_id) as fields:
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                seconds = time.perf_counter() - started
                self.metrics.finished(scope, status, seconds)
                fields.setdefault("queue", scope.get("path_params", {}).get("queue"))
                fields.setdefault("task_id", scope.get("path_params", {}).get("task_id"))
                for key in [k for k, v in fields.items() if v is None]:
                    del fields[key]
                _access(scope, status, seconds)


def _access(scope: Scope, status: int, seconds: float) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    method, path = scope["method"], scope["path"]
    access_log.info(
        "%s %s %d %.1fms",
        method,
        path,
        status,
        seconds * 1000,
        extra={"method": method, "path": path, "status": status, "duration_ms": round(seconds * 1000, 3)},
    )
