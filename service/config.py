"""The service's settings: the seed's keys and defaults, from YAML, the environment and flags.

A YAML file may hold the settings at its top level or in per-environment sections (the seed's
``yml[ENV['RAILS_ENV'] || 'development']``); ``PERFECTQUEUE_<KEY>`` environment variables
override the file; command-line flags override both. The keys of the other parts (the worker's,
the SDK's) are accepted and ignored here, so one file serves the service and the workers.

A queue's settings are declared once, in :class:`perfectqueue.settings.QueueSettings`; the
models here are derived from it: the service-wide values (:class:`Settings`, the declared
defaults) and each queue's overrides (``queues``, every key optional), merged per queue by
:meth:`Settings.queue`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from ..configfile import read_section, screen
from ..errors import ConfigError
from ..settings import (
    CONNECTION_KEYS,
    MAX_DURATION,
    ORIGINAL_ONLY,
    QUEUE_FIELDS,
    WORKER_KEYS,
    QueueSettings,
    type_hints,
)
from ..settings import bounds as declared_bounds
from .store import check_table_name, normalize_url
from .store.model import RetryPolicy
from .store.schema import TABLE_NAME

QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
ENV_PREFIX = "PERFECTQUEUE_"
DEFAULT_URL = "sqlite:///perfectqueue.sqlite3"
HASH = re.compile(r"sha256:[0-9a-f]{64}")

Scope_ = Literal["submit", "work", "admin"]


def check_url(value: str) -> str:
    """A database url this service can use, else ConfigError."""
    normalize_url(value)
    return value


class ApiKey(BaseModel):
    """One configured key: its name (for logs), the hash of its bearer key and/or an AWS access key
    id (the SQS endpoint's Signature V4, its secret read from an environment variable or a file),
    its scopes and queues."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
    hash: str | None = None
    access_key_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9]{16,128}$")
    secret_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    secret_file: str | None = None
    scopes: list[Scope_] = Field(min_length=1)
    queues: list[str] | None = Field(default=None, min_length=1)  # None: every queue

    @field_validator("hash")
    @classmethod
    def _hash(cls, value: str | None) -> str | None:
        if value is not None and not HASH.fullmatch(value.strip().lower()):  # never repeated: a key?
            raise ValueError("must be 'sha256:' and 64 hex digits (perfectqueue keygen prints one)")
        return None if value is None else value.strip().lower()

    @model_validator(mode="after")
    def _credentials(self) -> ApiKey:
        if self.hash is None and self.access_key_id is None:
            raise ValueError("a key needs a 'hash' (bearer key) or an 'access_key_id' (SQS), or both")
        if (self.access_key_id is None) != (self.secret_env is None and self.secret_file is None):
            raise ValueError("an 'access_key_id' needs its secret: 'secret_env' or 'secret_file'")
        if self.secret_env is not None and self.secret_file is not None:
            raise ValueError("give the secret as 'secret_env' or 'secret_file', not both")
        return self

    def secret(self) -> str | None:
        """The secret access key (None: no access key id), read now; ConfigError if it is missing.
        It is never logged nor repeated in an error."""
        if self.secret_env is not None:
            value = os.environ.get(self.secret_env, "").strip()
            where = f"the environment variable {self.secret_env}"
        elif self.secret_file is not None:
            try:
                value = Path(self.secret_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"api key {self.name!r}: cannot read secret_file: {exc.strerror}") from None
            where = f"the file {self.secret_file}"
        else:
            return None
        if not value:
            raise ConfigError(f"api key {self.name!r}: the secret access key in {where} is empty or unset")
        return value

    def allows(self, scope: str, queue: str | None) -> bool:
        return scope in self.scopes and (queue is None or self.queues is None or queue in self.queues)


class QueueWhere(BaseModel):
    """The checks of a queue's ``table`` and ``url`` (the fields come from the declaration)."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("table", check_fields=False)
    @classmethod
    def _table(cls, value: str | None) -> str | None:
        return None if value is None else check_table_name(value)

    @field_validator("url", check_fields=False)
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return check_url(value) if value else None  # a queue's empty url: the service's


def queue_fields(*, overrides: bool) -> dict[str, Any]:
    """The declared queue settings as pydantic fields: with the declared defaults (the
    service-wide values), or all optional (a queue's overrides; None: the service-wide value)."""
    hints = type_hints(QueueSettings)
    fields: dict[str, Any] = {}
    for name, field in QUEUE_FIELDS.items():
        limits: dict[str, Any] = declared_bounds(field)
        default: Any = field.default
        if overrides:
            fields[name] = (hints[name] | None, Field(default=None, **limits))
        else:
            fields[name] = (hints[name], Field(default=default, **limits))
    return fields


if TYPE_CHECKING:  # derived at run time from the declaration; typed for mypy as what they are
    QueueOverrides = QueueWhere
    QueueDefaults = QueueWhere
else:
    QueueOverrides = create_model("QueueSettings", __base__=QueueWhere, **queue_fields(overrides=True))
    QueueDefaults = create_model("QueueDefaults", __base__=QueueWhere, **queue_fields(overrides=False))


class Settings(QueueDefaults):
    """Every setting of the service, validated at start-up: the declared queue settings as
    service-wide values (``url`` defaults to a SQLite file here), the queues, and the service's own."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["rdb_compat"] = "rdb_compat"
    url: str = DEFAULT_URL
    queues: dict[str, QueueOverrides] = Field(default_factory=dict)

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

    _ignored: tuple[str, ...] = PrivateAttr(default=())
    api_keys: list[ApiKey] = Field(default_factory=list)  # none: no authentication (loopback only)
    insecure: bool = False  # serve a non-loopback address without api_keys
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=1024**3)
    max_data_bytes: int = Field(default=512 * 1024, ge=64, le=1024**3)
    api_docs: bool = True  # serve /docs (Swagger UI, from the package)
    max_response_bytes: int = Field(default=8 * 1024**2, ge=64 * 1024, le=1024**3)  # data in a poll/page
    max_head_bytes: int = Field(default=16 * 1024, ge=1024, le=1024**2)  # request line and headers
    head_timeout: float = Field(default=10.0, gt=0, le=3600)  # from a head's first byte to its end
    body_timeout: float = Field(default=30.0, gt=0, le=3600)  # from a head's end to its body's
    keep_alive_timeout: int = Field(default=5, ge=1, le=3600)  # idle between requests
    max_connections: int = Field(default=2000, ge=1, le=1_000_000)
    max_long_polls: int = Field(default=1000, ge=0, le=1_000_000)  # waiting at once, all queues
    max_clock_skew: float = Field(default=2.0, gt=0, le=3600)  # database vs host: warned above
    statement_timeout: float = Field(default=5.0, gt=0, le=3600)  # one database statement (MySQL)
    sqs: bool = True  # serve the Amazon SQS-compatible endpoint under /sqs (docs/sqs.md)
    sqs_clock_skew: int = Field(default=300, ge=1, le=3600)  # seconds a SigV4 X-Amz-Date may be off

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:  # the queues' may be empty, the service's not
        return check_url(value or "")

    @model_validator(mode="after")
    def _queues(self) -> Settings:
        table = self.model_dump(include={"table"})["table"]
        if self.queues and table is not None:
            raise ValueError("set either 'table' (one queue) or 'queues', not both")
        if not self.queues:
            self.queues = {table or "default": QueueOverrides()}
        for name, queue in self.queues.items():
            if not QUEUE_NAME.fullmatch(name):
                raise ValueError(f"invalid queue name {name!r}: use letters, digits, '_', '.', '-'")
            if queue.model_dump(include={"table"})["table"] is None and not TABLE_NAME.fullmatch(name):
                raise ValueError(f"queue {name!r} needs a 'table': its name is not a valid table name")
        return self

    @model_validator(mode="after")
    def _keys(self) -> Settings:
        names = [key.name for key in self.api_keys]
        if len(set(names)) != len(names):
            raise ValueError("api_keys: every key needs a name of its own")
        hashes = [key.hash for key in self.api_keys if key.hash is not None]
        if len(set(hashes)) != len(hashes):
            raise ValueError("api_keys: two keys have the same hash")
        ids = [key.access_key_id for key in self.api_keys if key.access_key_id is not None]
        if len(set(ids)) != len(ids):
            raise ValueError("api_keys: two keys have the same access_key_id")
        for key in self.api_keys:
            unknown = sorted(set(key.queues or ()) - set(self.queues))
            if unknown:
                raise ValueError(f"api key {key.name!r} names undeclared queues: {', '.join(unknown)}")
        if self.max_data_bytes > self.max_body_bytes:
            raise ValueError("max_data_bytes must not be over max_body_bytes")
        return self

    @property
    def ignored(self) -> tuple[str, ...]:
        """The original's keys the settings held that mean nothing here (said once at start)."""
        return self._ignored

    def queue(self, name: str) -> ResolvedQueue:
        """One queue's settings: its overrides over the service-wide values, its table named
        after it unless it names one."""
        overrides = self.queues[name].model_dump(exclude_none=True)
        values = {**self.model_dump(include=set(QUEUE_FIELDS)), **overrides}
        return ResolvedQueue(name=name, **{**values, "table": overrides.get("table", name)})


@dataclass(frozen=True, kw_only=True)
class ResolvedQueue(QueueSettings):
    """A queue of the service: its name and its settings, every one of them set."""

    name: str
    table: str
    url: str

    def retry_policy(self) -> RetryPolicy:
        """The queue's retry backoff and attempt limit, as the store applies them."""
        return RetryPolicy(self)


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
    """Validated settings from a mapping: a key no part knows is refused (naming the nearest
    valid one); the keys of the other parts, and the original's that mean nothing here, are
    dropped first (:attr:`Settings.ignored` names the latter)."""
    ignored = screen(values, origin, known=set(Settings.model_fields) | OTHER_PARTS_KEYS, strict=True)
    values = {k: v for k, v in values.items() if k not in OTHER_PARTS_KEYS and k not in ORIGINAL_ONLY}
    try:
        settings = Settings.model_validate(values)
        settings._ignored = tuple(ignored)
        return settings
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid {origin}: {problems}") from None


def read_yaml(path: Path, environment: str) -> dict[str, Any]:
    """The file's section for ``environment`` if it has one, else the whole file."""
    return read_section(path, environment, known=set(Settings.model_fields) | OTHER_PARTS_KEYS)


OTHER_PARTS_KEYS = (WORKER_KEYS | CONNECTION_KEYS) - set(Settings.model_fields)
"""Keys of the worker and of the SDK that a file shared with them may hold: not the service's."""
