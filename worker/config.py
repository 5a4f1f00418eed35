"""The worker's settings: every key of the seed and of the original worker, with its default.

``WorkerConfig.from_mapping(raw)`` validates a loaded configuration (a dict, e.g. one section of
a YAML file) and refuses a bad value with a :class:`~perfectqueue.errors.ConfigError` naming the
key. The backend keys (``type``, ``url``, ``queue``, ``token``, ``table``, ``timeout``,
``retries`` and the direct backend's ``alive_time``/``retry_wait``/``retention_time``…) are kept
as they are in :attr:`WorkerConfig.backend` and passed to :func:`perfectqueue.open`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..logformat import LogFormat

log = logging.getLogger("perfectqueue.worker")

BACKEND_KEYS = frozenset(
    {
        "type",
        "url",
        "queue",
        "token",
        "table",
        "timeout",
        "retries",
        "retention_time",
        "disable_resource_limit",
        "acquire_lock",
        "max_attempts",
        "dead_retention_time",
        "retry_backoff",
        "retry_wait_max",
        "retry_jitter",
    }
)
NOT_WORKER_KEYS = frozenset({"queues", "host", "port", "auto_init", "debug"})
"""Keys of a file shared with the service: accepted and not used by the worker."""


@dataclass(frozen=True)
class WorkerConfig:
    processors: int = 1
    processor_type: str = "process"
    poll_interval: float = 1.0
    task_heartbeat_interval: float = 2.0
    alive_time: int = 300
    retry_wait: int | None = None
    """None: a retried task comes back after the queue's backoff; a number overrides it."""
    child_kill_interval: float = 2.0
    child_graceful_kill_limit: float | None = None
    child_heartbeat_interval: float = 2.0
    child_heartbeat_limit: float = 10.0
    child_fork_frequency_limit: float = 5.0
    detach_wait: float = 10.0
    max_request_per_child: int | None = None
    task_prefetch: int = 0
    log: str | None = None
    log_format: LogFormat = "text"
    """'text' or 'json' (one JSON object per line), as the service's."""
    metrics_port: int | None = None
    """Serve Prometheus metrics on this port (all interfaces); None: no metrics."""
    backend: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    """The whole mapping as loaded, application keys included (handlers see it as ``task.config``)."""

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None) -> WorkerConfig:
        """Validate ``raw`` (the seed's keys); ConfigError naming the first bad key."""
        if raw is not None and not isinstance(raw, Mapping):
            raise ConfigError(f"the worker configuration must be a mapping, not {type(raw).__name__}")
        raw = dict(raw or {})
        values = {name: _check(name, raw[name]) for name in _FIELDS if raw.get(name) is not None}
        backend = {key: raw[key] for key in BACKEND_KEYS if key in raw}
        for key in ("alive_time", "retry_wait"):
            if key in values:
                backend[key] = values[key]
        _warn_unknown(raw)
        return cls(**values, backend=backend, raw=raw)


def _positive(name: str, value: Any, kind: type = float) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{name} must be a positive number, not {value!r}")
    if kind is int:
        if value != int(value):
            raise ConfigError(f"{name} must be a whole number, not {value!r}")
        return int(value)
    return float(value)


def _check(name: str, value: Any) -> Any:
    if name == "processor_type":
        if value not in ("process", "thread"):
            raise ConfigError(f"processor_type must be 'process' or 'thread', not {value!r}")
        return value
    if name in ("log", "log_format", "metrics_port"):
        return _check_output(name, value)
    if name == "task_prefetch":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"task_prefetch must be a whole number >= 0, not {value!r}")
        return value
    if name == "retry_wait" and value == 0 and not isinstance(value, bool):
        return 0  # retried tasks are deliverable again at once
    return _positive(name, value, _FIELDS[name])


def _check_output(name: str, value: Any) -> Any:
    """The keys of the worker's log and metrics."""
    if name == "log" and (not isinstance(value, str) or not value):
        raise ConfigError(f"log must be a file path, not {value!r}")
    if name == "log_format" and value not in ("text", "json"):
        raise ConfigError(f"log_format must be 'text' or 'json', not {value!r}")
    port = name == "metrics_port"
    if port and (isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536):
        raise ConfigError(f"metrics_port must be a port number (1 to 65535), not {value!r}")
    return value


_FIELDS: dict[str, type] = {
    "processors": int,
    "processor_type": str,
    "poll_interval": float,
    "task_heartbeat_interval": float,
    "alive_time": int,
    "retry_wait": int,
    "child_kill_interval": float,
    "child_graceful_kill_limit": float,
    "child_heartbeat_interval": float,
    "child_heartbeat_limit": float,
    "child_fork_frequency_limit": float,
    "detach_wait": float,
    "max_request_per_child": int,
    "task_prefetch": int,
    "log": str,
    "log_format": str,
    "metrics_port": int,
}


def _warn_unknown(raw: dict[str, Any]) -> None:
    known = set(_FIELDS) | BACKEND_KEYS | NOT_WORKER_KEYS | {"alive_time", "retry_wait"}
    for key in sorted(set(raw) - known):
        log.debug("configuration key %r is not the worker's (handlers see it in task.config)", key)
