"""The Python SDK (``perfectqueue.client``): the seed's API overview in Python.

    import perfectqueue

    with perfectqueue.open({"url": "http://127.0.0.1:8000", "queue": "default"}) as queue:
        queue.submit("task-id", "type1", {"key": "value"})
        task = queue.poll()
        if task:
            task.finish()

``type: http`` (the default) talks to the service; ``type: rdb_compat`` with the seed's ``url``
(of the database) and ``table`` uses the store in-process, importing SQLAlchemy and the driver
only then. The HTTP mode needs httpx alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from ..settings import QUEUE_KEYS
from ._calls import Backoff
from ._types import BatchResult, BulkResult, Failure, QueueStats, RetrySpec, SubmitSpec, TaskMetadata
from .aqueue import AsyncAcquiredTask, AsyncQueue, AsyncTask
from .queue import AcquiredTask, Queue, Task

DEFAULT_URL = "http://127.0.0.1:8000"


def open(config: Mapping[str, Any] | None = None, **options: Any) -> Queue:
    """Open a queue from the seed's configuration keys (a dict or a loaded YAML section)."""
    kind, settings = _settings(config, options)
    if kind == "rdb_compat":
        from ._rdb import RdbBackend

        return Queue(RdbBackend(**_rdb_options(settings)))
    from ._http import HttpBackend

    return Queue(HttpBackend(**_http_options(settings)))


def open_async(config: Mapping[str, Any] | None = None, **options: Any) -> AsyncQueue:
    """The asyncio twin of :func:`open`."""
    kind, settings = _settings(config, options)
    if kind == "rdb_compat":
        from ._rdb import AsyncRdbBackend

        return AsyncQueue(AsyncRdbBackend(**_rdb_options(settings)))
    from ._http import AsyncHttpBackend

    return AsyncQueue(AsyncHttpBackend(**_http_options(settings)))


def _settings(config: Mapping[str, Any] | None, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The backend and its settings. An http(s) url means the service whatever ``type`` says, so
    a file written for the service (``type: rdb_compat``) serves a client given the service's url."""
    settings = {**(config or {}), **options}
    kind = settings.get("type") or "http"
    if kind not in ("http", "rdb_compat"):
        raise ConfigError(f"unknown backend type {kind!r}: use 'http' or 'rdb_compat'")
    if str(settings.get("url") or "").startswith(("http://", "https://")):
        kind = "http"
    return kind, settings


def _http_options(settings: dict[str, Any]) -> dict[str, Any]:
    url = str(settings.get("url") or DEFAULT_URL)
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"the http backend needs an http(s):// url, not {url.split(':', 1)[0]}://")
    retries = settings.get("retries", 5)
    timeout = settings.get("timeout", 10.0)
    if not isinstance(retries, int) or retries < 0:
        raise ConfigError("retries must be a whole number >= 0")
    if not isinstance(timeout, int | float) or timeout <= 0:
        raise ConfigError("timeout must be a positive number of seconds")
    return {
        "url": url,
        "queue": str(settings.get("queue") or "default"),
        "token": settings.get("token"),
        "timeout": float(timeout),
        "backoff": Backoff(retries=retries),
        "transport": settings.get("transport"),  # an httpx transport, e.g. httpx.ASGITransport(app)
    }


def _rdb_options(settings: dict[str, Any]) -> dict[str, Any]:
    settings = {**settings, **_named_queue(settings)}
    if not settings.get("url") or not settings.get("table"):
        raise ConfigError(
            "the rdb_compat backend needs 'url' (the database) and 'table' (or the service's "
            "'queues' and the 'queue' to open)"
        )
    return {key: settings[key] for key in QUEUE_KEYS if settings.get(key) is not None}


def _named_queue(settings: dict[str, Any]) -> dict[str, Any]:
    """With the service's ``queues:`` (a file shared with it), the settings of the queue named by
    ``queue`` (the only one if there is one): its table is its name unless it sets one."""
    queues = settings.get("queues")
    if not isinstance(queues, Mapping) or not queues:
        return {}
    name = settings.get("queue") or (next(iter(queues)) if len(queues) == 1 else None)
    if name not in queues:
        raise ConfigError(f"say which queue to open ('queue'): one of {', '.join(map(str, queues))}")
    return {"table": name, **(queues[name] or {})}


__all__ = [
    "AcquiredTask",
    "AsyncAcquiredTask",
    "AsyncQueue",
    "AsyncTask",
    "BatchResult",
    "BulkResult",
    "Failure",
    "Queue",
    "QueueStats",
    "RetrySpec",
    "SubmitSpec",
    "Task",
    "TaskMetadata",
    "open",
    "open_async",
]
