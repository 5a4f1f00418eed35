"""Every key of a configuration file, declared once: its name, type, default and bounds.

One file (or one section of it) may serve the service, the workers and the task commands, so
the keys of each part are declared here, where every install can read them (the SDK's has
httpx alone):

- :class:`QueueSettings`: a queue's settings. The service takes them as service-wide values
  and per-queue overrides (``perfectqueue.service.config`` derives its models from this class);
  the SDK's direct ``rdb_compat`` backend takes them as they are; the store builds its retry
  policy from them.
- :class:`WorkerSettings`: the worker process's own keys (the original's and a few more).
- :data:`CONNECTION_KEYS`: how the SDK reaches a queue (:func:`perfectqueue.open`).

A field's bounds are its metadata (``ge``, ``gt``, ``le``, as pydantic names them); its type
(``int``, ``float``, ``bool``, ``str``, a ``Literal`` of choices, or any of them ``| None``) and
bounds are checked on construction, and a bad value is a :class:`~perfectqueue.errors.ConfigError`
naming the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from .errors import ConfigError
from .logformat import LogFormat

MAX_DURATION = 365 * 24 * 3600
"""The longest alive_time, retry_wait or retention_time accepted (one year)."""

MAX_ATTEMPTS = 1_000_000
"""The largest max_attempts accepted (per task or per queue)."""
DEFAULT_MAX_ATTEMPTS = 10
"""Deliveries before a failing task is dead, unless configured: with the default exponential
backoff (``retry_wait`` 300 s doubling, at most ``retry_wait_max``, a day) its nine retries span
about a day and a half; the task is then kept ``dead_retention_time`` (a week) for a requeue."""


def setting(default: Any, doc: str, **bounds: float) -> Any:
    """A declared field: its default, what it means, and its bounds (``ge``, ``gt``, ``le``)."""
    if set(bounds) - {"ge", "gt", "le"}:
        raise TypeError(f"unknown bounds: {sorted(set(bounds) - {'ge', 'gt', 'le'})}")
    return dataclasses.field(default=default, metadata={"doc": doc, **bounds})


def bounds(field: dataclasses.Field[Any]) -> dict[str, float]:
    """A declared field's bounds, named as pydantic's ``Field`` names them."""
    return {key: field.metadata[key] for key in ("ge", "gt", "le") if key in field.metadata}


class Declared:
    """Base of the declarations: checks (and normalises) every declared field on construction
    (those of :func:`setting`; a subclass may add fields of its own)."""

    def __post_init__(self) -> None:
        hints = type_hints(type(self))
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            if "doc" not in field.metadata:
                continue
            value = check(field.name, hints[field.name], bounds(field), getattr(self, field.name))
            object.__setattr__(self, field.name, value)


def type_hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of a declaration (this module uses postponed annotations)."""
    return typing.get_type_hints(cls)


def check(name: str, hint: Any, limits: dict[str, float], value: Any) -> Any:
    """``value`` as a ``hint`` within ``limits`` (an integral float becomes an int, an int a
    float), else ConfigError naming ``name``."""
    union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union  # Literal | None
    options = typing.get_args(hint) if union else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"{name} must be set")
    [kind] = [option for option in options if option is not type(None)]
    if typing.get_origin(kind) is Literal:
        choices = typing.get_args(kind)
        if value not in choices or isinstance(value, bool):
            raise ConfigError(f"{name} must be {' or '.join(map(repr, choices))}, not {value!r}")
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, not {value!r}")
        return value
    if kind is str:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{name} must be a non-empty string, not {value!r}")
        return value
    return _number(name, kind, limits, value)


def _number(name: str, kind: type, limits: dict[str, float], value: Any) -> Any:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    whole = number and (isinstance(value, int) or float(value).is_integer())
    within = number and all(
        {"ge": value >= limit, "gt": value > limit, "le": value <= limit}[bound]
        for bound, limit in limits.items()
    )
    if not within or (kind is int and not whole):
        raise ConfigError(f"{name} must be {describe(kind, limits)}, not {value!r}")
    return int(value) if kind is int else float(value)


def describe(kind: type, limits: dict[str, float]) -> str:
    """'an integer from 1 to 31536000', 'a number > 0', …"""
    what = "an integer" if kind is int else "a number"
    low = limits.get("ge")
    if low is not None and "le" in limits:
        return f"{what} from {_plain(low)} to {_plain(limits['le'])}"
    parts = [
        f"{sign} {_plain(limits[b])}" for b, sign in (("ge", ">="), ("gt", ">"), ("le", "<=")) if b in limits
    ]
    return " ".join([what, " and ".join(parts)]) if parts else what


def _plain(limit: float) -> str:
    return str(int(limit)) if float(limit).is_integer() else str(limit)


@dataclass(frozen=True, kw_only=True)
class QueueSettings(Declared):
    """A queue's settings: where its table is, how it leases, retries and keeps tasks, and when
    the dashboard warns about it.

    The defaults are the original's where it has the key. ``table`` and ``url`` have none here:
    the service names a queue's table after the queue and uses its own ``url``; the direct
    backend needs both.
    """

    table: str | None = setting(None, "the queue's table")
    url: str | None = setting(None, "the database (mysql://…, postgresql://…, sqlite:///…)")
    sslca: str | None = setting(None, "CA file verifying the database server's TLS certificate")
    ssl_mode: Literal["disabled", "preferred", "required", "verify_ca", "verify_identity"] | None = setting(
        None, "TLS to the database: unset or verify_identity checks the certificate and host name"
    )
    alive_time: int = setting(
        300, "seconds a lease lasts unless the poll asks otherwise", ge=1, le=MAX_DURATION
    )
    retry_wait: int = setting(300, "seconds before a retried task is delivered again", ge=0, le=MAX_DURATION)
    retention_time: int = setting(300, "seconds a finished task is kept", ge=0, le=MAX_DURATION)
    disable_resource_limit: bool = setting(False, "turn fair scheduling by user off")
    acquire_lock: Literal["skip_locked", "get_lock"] = setting(
        "skip_locked", "get_lock: every acquisition takes the original's GET_LOCK('<table>')"
    )
    fair_lock: Literal["table", "user"] = setting(
        "table",
        "what keeps max_running exact: the original's table lock, or user: a lock per user served "
        "(a table the original may be using keeps the table's)",
    )
    max_attempts: int | None = setting(
        DEFAULT_MAX_ATTEMPTS,
        "deliveries after which a failing task is dead (null: unlimited, as the original)",
        ge=1,
        le=MAX_ATTEMPTS,
    )
    dead_retention_time: int = setting(604800, "seconds a dead task is kept", ge=0, le=MAX_DURATION)
    retry_backoff: Literal["constant", "exponential"] = setting(
        "exponential", "how long a retry without an explicit wait waits (constant: the original's)"
    )
    retry_wait_max: int = setting(86400, "exponential backoff: the longest wait", ge=0, le=MAX_DURATION)
    retry_jitter: float = setting(0.25, "exponential backoff: the fraction taken off at random", ge=0, le=1)
    stall_warning_after: int = setting(
        300, "dashboard: warn when the oldest task waited this long, none leased", ge=1, le=MAX_DURATION
    )
    lock_wait_warning: float = setting(
        1.0, "dashboard: warn when an acquisition waited this long for the table's lock", gt=0, le=3600
    )

    @property
    def fair(self) -> bool:
        """Fair scheduling by user (the original's default; ``disable_resource_limit`` turns it off)."""
        return not self.disable_resource_limit


def _like(name: str, default: Any) -> Any:
    """A worker key that is also a queue key: the queue's bounds, the worker's default."""
    field = QUEUE_FIELDS[name]
    return setting(default, field.metadata["doc"], **bounds(field))


QUEUE_FIELDS = {field.name: field for field in dataclasses.fields(QueueSettings)}
QUEUE_KEYS = frozenset(QUEUE_FIELDS)


@dataclass(frozen=True, kw_only=True)
class WorkerSettings(Declared):
    """The worker process's keys (the original's, with its defaults, and a few beyond it)."""

    processors: int = setting(1, "child processes (or threads)", ge=1)
    processor_type: Literal["process", "thread", "asyncio"] = setting(
        "process", "children are processes, threads, or processes running asyncio handlers"
    )
    concurrency: int = setting(10, "handlers an asyncio processor runs at once", ge=1, le=1000)
    poll_interval: float = setting(1.0, "seconds between polls of an idle child", gt=0)
    task_heartbeat_interval: float = setting(2.0, "seconds between a running task's heartbeats", gt=0)
    alive_time: int = _like("alive_time", 300)
    retry_wait: int | None = _like("retry_wait", None)
    """None: a retried task comes back after the queue's backoff; a number overrides it."""
    child_kill_interval: float = setting(2.0, "seconds between signals to a stopping child", gt=0)
    child_graceful_kill_limit: float | None = setting(None, "seconds before SIGTERM becomes SIGKILL", gt=0)
    child_heartbeat_interval: float = setting(2.0, "seconds between a child's heartbeats", gt=0)
    child_heartbeat_limit: float = setting(10.0, "seconds of silence after which a child is frozen", gt=0)
    child_fork_frequency_limit: float = setting(5.0, "the fewest seconds between forks of a child", gt=0)
    detach_wait: float = setting(10.0, "seconds a detaching supervisor waits", gt=0)
    replace_on_cont: bool = setting(False, "SIGCONT starts a graceful binary replace, as in the original")
    """Off by default: a shell sends CONT on its own (``fg`` after Ctrl-Z, ``timeout``)."""
    max_request_per_child: int | None = setting(None, "tasks after which a child is replaced", ge=1)
    task_time_limit: float | None = setting(None, "seconds a handler may run before it is stopped", gt=0)
    """None: no limit (a route's ``time_limit`` may still set one). A task over it is retried
    with ``last_error`` "timed out after N s"; see docs/worker.md: time limits."""
    task_prefetch: int = setting(0, "extra tasks a child acquires with each poll", ge=0)
    ack_batch_size: int = setting(100, "the most finishes a child sends in one request", ge=1, le=1000)
    ack_delay: float = setting(0.01, "the most seconds a finish waits to be sent with others", ge=0, le=60)
    log: str | None = setting(None, "the log file (None: stderr)")
    log_format: LogFormat = setting("text", "'text' or 'json' (one JSON object per line)")  # noqa: RUF009
    metrics_port: int | None = setting(None, "serve Prometheus metrics on this port", ge=1, le=65535)


WORKER_KEYS = frozenset(field.name for field in dataclasses.fields(WorkerSettings))

CONNECTION_KEYS = frozenset({"type", "url", "queue", "token", "timeout", "retries"})
"""How the SDK reaches a queue (:func:`perfectqueue.open`): the backend's type, the service's
(or, with ``rdb_compat``, the database's) url, the queue's name, the API key, the request
timeout and the retries of a failed request."""

ORIGINAL_ONLY = {
    "child_heartbeat_kill_delay": "a silent child is killed after child_heartbeat_limit",
    "child_keepalive_interval": "children report every child_heartbeat_interval",
    "pq_connect_timeout": "the SDK's timeout bounds a request, the service bounds its connections",
    "connect_timeout": "the SDK's timeout bounds a request, the service bounds its connections",
    "use_connection_pooling": "the service pools its connections, see pool_size",
    "debug": "use --log-level debug",
    "logger": "the worker logs to the file named by log, else to stderr",
    "daemon": "run the worker under a process manager such as systemd or Kubernetes",
}
"""Keys the original reads that mean nothing here, with what takes their place: every command
accepts them and says in one info line that it ignores them (tables and files stay shared)."""

BACKEND_KEYS = CONNECTION_KEYS | QUEUE_KEYS | {"queues"}
"""The keys :func:`perfectqueue.open` reads: how to reach the queue, and (direct backend) its
settings, or the service's ``queues`` among which ``queue`` names the one to open."""
