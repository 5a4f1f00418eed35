"""The service's settings: the seed's keys and defaults, from YAML, the environment and flags.

A YAML file may hold the settings at its top level or in per-environment sections (the seed's
``yml[ENV['RAILS_ENV'] || 'development']``); ``PERFECTQUEUE_<KEY>`` environment variables
override the file; command-line flags override both. Worker-only keys of the seed are accepted
and ignored here, so one file serves the service and the workers.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import ConfigError
from .security import ApiKey
from .store import check_table_name, normalize_url
from .store.model import MAX_ATTEMPTS, MAX_DURATION, RetryPolicy
from .store.schema import TABLE_NAME

QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
ENV_PREFIX = "PERFECTQUEUE_"
DEFAULT_URL = "sqlite:///perfectqueue.sqlite3"

WORKER_KEYS = frozenset(
    {
        "log",
        "processors",
        "processor_type",
        "poll_interval",
        "task_heartbeat_interval",
        "child_kill_interval",
        "child_graceful_kill_limit",
        "child_heartbeat_interval",
        "child_heartbeat_limit",
        "detach_wait",
        "max_request_per_child",
        "task_prefetch",
        "queue",
        "token",
        "metrics_port",
    }
)
"""Keys of the seed (and of the original's worker) that only the worker reads."""


def check_url(value: str) -> str:
    """A database url this service can use, else ConfigError."""
    normalize_url(value)
    return value


class QueueSettings(BaseModel):
    """One named queue: its table, and what it overrides of the service-wide settings."""

    model_config = ConfigDict(extra="forbid")

    table: str | None = None
    url: str | None = None
    alive_time: int | None = Field(default=None, ge=1, le=MAX_DURATION)
    retry_wait: int | None = Field(default=None, ge=0, le=MAX_DURATION)
    retention_time: int | None = Field(default=None, ge=0, le=MAX_DURATION)
    disable_resource_limit: bool | None = None
    acquire_lock: Literal["skip_locked", "get_lock"] | None = None
    max_attempts: int | None = Field(default=None, ge=1, le=MAX_ATTEMPTS)
    dead_retention_time: int | None = Field(default=None, ge=0, le=MAX_DURATION)
    retry_backoff: Literal["constant", "exponential"] | None = None
    retry_wait_max: int | None = Field(default=None, ge=0, le=MAX_DURATION)
    retry_jitter: float | None = Field(default=None, ge=0, le=1)

    @field_validator("table")
    @classmethod
    def _table(cls, value: str | None) -> str | None:
        return None if value is None else check_table_name(value)

    _url = field_validator("url")(lambda value: check_url(value) if value else None)  # empty: the service's


class Settings(BaseModel):
    """Every setting of the service, validated at start-up."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["rdb_compat"] = "rdb_compat"
    url: str = DEFAULT_URL
    table: str | None = None
    alive_time: int = Field(default=300, ge=1, le=MAX_DURATION)
    retry_wait: int = Field(default=300, ge=0, le=MAX_DURATION)
    retention_time: int = Field(default=300, ge=0, le=MAX_DURATION)
    disable_resource_limit: bool = False
    acquire_lock: Literal["skip_locked", "get_lock"] = "skip_locked"
    max_attempts: int | None = Field(default=None, ge=1, le=MAX_ATTEMPTS)  # None: unlimited
    dead_retention_time: int = Field(default=604800, ge=0, le=MAX_DURATION)
    retry_backoff: Literal["constant", "exponential"] = "constant"
    retry_wait_max: int = Field(default=86400, ge=0, le=MAX_DURATION)
    retry_jitter: float = Field(default=0.25, ge=0, le=1)
    queues: dict[str, QueueSettings] = Field(default_factory=dict)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    auto_init: bool | None = None  # None: create missing tables on SQLite only
    isolation_level: Literal["READ COMMITTED", "REPEATABLE READ"] | None = None
    pool_size: int = Field(default=10, ge=1, le=1000)
    pool_overflow: int = Field(default=10, ge=0, le=1000)
    cleanup_interval: float = Field(default=20.0, gt=0, le=MAX_DURATION)
    cleanup_batch: int = Field(default=1000, ge=1, le=100_000)
    max_poll_wait: float = Field(default=20.0, ge=0, le=300)
    poll_check_interval: float = Field(default=0.5, gt=0, le=60)
    shutdown_grace: float = Field(default=25.0, ge=0, le=3600)
    shutdown_delay: float = Field(default=0.0, ge=0, le=3600)  # keep answering (not ready) this long
    log_format: Literal["text", "json"] = "text"
    metrics_count_limit: int = Field(default=10_000, ge=1, le=100_000_000)

    api_keys: list[ApiKey] = Field(default_factory=list)  # none: no authentication (loopback only)
    insecure: bool = False  # serve a non-loopback address without api_keys
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=1024**3)
    max_data_bytes: int = Field(default=512 * 1024, ge=64, le=1024**3)

    @field_validator("table")
    @classmethod
    def _table(cls, value: str | None) -> str | None:
        return None if value is None else check_table_name(value)

    _url = field_validator("url")(check_url)

    @model_validator(mode="after")
    def _queues(self) -> Settings:
        if self.queues and self.table is not None:
            raise ValueError("set either 'table' (one queue) or 'queues', not both")
        if not self.queues:
            name = self.table or "default"
            self.queues = {name: QueueSettings(table=name)}
        for name, queue in self.queues.items():
            if not QUEUE_NAME.fullmatch(name):
                raise ValueError(f"invalid queue name {name!r}: use letters, digits, '_', '.', '-'")
            if queue.table is None and not TABLE_NAME.fullmatch(name):
                raise ValueError(f"queue {name!r} needs a 'table': its name is not a valid table name")
            queue.table = queue.table or name
        return self

    @model_validator(mode="after")
    def _keys(self) -> Settings:
        names = [key.name for key in self.api_keys]
        if len(set(names)) != len(names):
            raise ValueError("api_keys: every key needs a name of its own")
        if len({key.hash for key in self.api_keys}) != len(self.api_keys):
            raise ValueError("api_keys: two keys have the same hash")
        for key in self.api_keys:
            unknown = sorted(set(key.queues or ()) - set(self.queues))
            if unknown:
                raise ValueError(f"api key {key.name!r} names undeclared queues: {', '.join(unknown)}")
        if self.max_data_bytes > self.max_body_bytes:
            raise ValueError("max_data_bytes must not be over max_body_bytes")
        return self

    def queue(self, name: str) -> ResolvedQueue:
        """One queue's settings with the service-wide defaults filled in."""
        q = self.queues[name]
        return ResolvedQueue(
            name=name,
            table=q.table or name,
            url=q.url or self.url,
            alive_time=self.alive_time if q.alive_time is None else q.alive_time,
            retry_wait=self.retry_wait if q.retry_wait is None else q.retry_wait,
            retention_time=self.retention_time if q.retention_time is None else q.retention_time,
            fair=not (
                self.disable_resource_limit if q.disable_resource_limit is None else q.disable_resource_limit
            ),
            acquire_lock=q.acquire_lock or self.acquire_lock,
            max_attempts=self.max_attempts if q.max_attempts is None else q.max_attempts,
            dead_retention_time=_either(q.dead_retention_time, self.dead_retention_time),
            retry_backoff=q.retry_backoff or self.retry_backoff,
            retry_wait_max=_either(q.retry_wait_max, self.retry_wait_max),
            retry_jitter=self.retry_jitter if q.retry_jitter is None else q.retry_jitter,
        )


def _either(value: int | None, default: int) -> int:
    return default if value is None else value


class ResolvedQueue(BaseModel):
    name: str
    table: str
    url: str
    alive_time: int
    retry_wait: int
    retention_time: int
    fair: bool
    acquire_lock: Literal["skip_locked", "get_lock"]
    max_attempts: int | None = None
    dead_retention_time: int = 604800
    retry_backoff: Literal["constant", "exponential"] = "constant"
    retry_wait_max: int = 86400
    retry_jitter: float = 0.25

    def retry_policy(self) -> RetryPolicy:
        """The queue's retry backoff and attempt limit, as the store applies them."""
        return RetryPolicy(
            retry_wait=self.retry_wait,
            backoff=self.retry_backoff,
            retry_wait_max=self.retry_wait_max,
            retry_jitter=self.retry_jitter,
            max_attempts=self.max_attempts,
            dead_retention_time=self.dead_retention_time,
        )


def load_settings(
    path: str | Path | None = None,
    environment: str | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Settings from a YAML file (optional), ``PERFECTQUEUE_*`` variables and overrides."""
    environ = dict(os.environ if environ is None else environ)
    path = path or environ.get(ENV_PREFIX + "CONFIG")
    environment = environment or environ.get(ENV_PREFIX + "ENV") or "development"
    values: dict[str, Any] = read_yaml(Path(path), environment) if path else {}
    for key in Settings.model_fields:
        if ENV_PREFIX + key.upper() in environ and key != "queues":
            values[key] = environ[ENV_PREFIX + key.upper()]
    if isinstance(values.get("api_keys"), str):
        values["api_keys"] = api_keys_from_json(values["api_keys"])
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return settings_from(values, str(path or "settings"))


def api_keys_from_json(text: str) -> Any:
    """PERFECTQUEUE_API_KEYS: a JSON list of keys (their hashes), as in the YAML file."""
    try:
        return json.loads(text) if text.strip() else []
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}API_KEYS is not valid JSON (a list of keys)") from None


def settings_from(values: dict[str, Any], origin: str = "settings") -> Settings:
    values = {k: v for k, v in values.items() if k not in WORKER_KEYS}
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid {origin}: {problems}") from None


def read_yaml(path: Path, environment: str) -> dict[str, Any]:
    """The file's section for ``environment`` if it has one, else the whole file."""
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {one_line(exc)}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of settings")
    section = loaded.get(environment)
    if isinstance(section, dict):
        return dict(section)
    known = set(Settings.model_fields) | WORKER_KEYS
    if loaded and all(isinstance(v, dict) for v in loaded.values()) and not known & set(loaded):
        raise ConfigError(f"{path} has no section {environment!r} (it has: {', '.join(map(str, loaded))})")
    return loaded


def one_line(exc: Exception) -> str:
    """A YAML error's problem and position (its own text spans several lines), or the error."""
    problem, mark = getattr(exc, "problem", None), getattr(exc, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(exc).split())
