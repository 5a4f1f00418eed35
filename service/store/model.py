"""Plain domain objects returned by the store, and the limits every caller shares."""

from __future__ import annotations

import dataclasses
import enum
import random
import re
from dataclasses import dataclass, field
from typing import Any

from ... import settings as declared
from ...errors import ConfigError, InvalidError
from ...settings import QueueSettings
from .codec import compact_json

EVENT_HORIZON = 1_300_000_000
"""Rows with a timeout at or below this are never acquired (finished rows live below it)."""

DELETE_OFFSET = 1_000_000_000
"""A finished row stores ``now - DELETE_OFFSET + retention_time`` as its timeout."""

MAX_TIMESTAMP = 2**31 - 1
"""The timeout column is a signed 32-bit INT: no time may go past January 2038."""

MAX_DURATION = declared.MAX_DURATION
"""The longest alive_time, retry_wait or retention_time accepted (one year)."""

MAX_ATTEMPTS = declared.MAX_ATTEMPTS
"""The largest max_attempts accepted (per task or per queue)."""

MAX_NAME_BYTES = 255
"""Task ids, types and users are stored in VARCHAR(255) columns (or the data's JSON)."""

LAST_ERROR_CHARS = 1000
"""A handler's error (type and message) is kept truncated to this many characters."""

TRACEPARENT = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")
"""A W3C trace-context ``traceparent`` of version 00: lowercase hex, ids not all zero."""


class TaskStatus(enum.StrEnum):
    """The task states of the time model (CONTRACT.md §2)."""

    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"
    DEAD = "dead"
    CANCELLED = "cancelled"


class Outcome(enum.StrEnum):
    """How a finished row ended, in its ``outcome`` column (NULL: finished normally)."""

    DEAD = "dead"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class Task:
    """A task as read from the table."""

    id: str
    type: str
    data: dict[str, Any]
    user: str | None
    status: TaskStatus
    created_at: int | None
    timeout: int
    max_running: int | None
    compression: str | None = None
    attempts: int = 0
    max_attempts: int | None = None
    last_error: str | None = None
    cancel_requested: bool = False
    traceparent: str | None = None
    leased: bool = False
    """Running and held (by ``holder``); a running task nobody holds is scheduled for later
    (submitted with ``run_at``, or retried with a wait)."""
    holder: str | None = None
    """Who holds a leased task: ``worker`` (a lease of this project) or ``ruby`` (a Ruby
    PerfectQueue process: :mod:`.owners`); None when it is not leased."""
    data_withheld: bool = False
    """The stored data is over the reader's ``max_data_bytes`` once inflated: not read (``data``
    is empty, ``type`` the part of the id before its first dot)."""
    size: int = 0
    """Bytes of the stored JSON, inflated: what the data costs in an answer."""
    finished_at: int | None = None
    """When a finished, dead or cancelled task ended: its retention's end less the retention
    this store applies to its outcome (a row written under another retention reads off by the
    difference)."""

    # The real instants behind ``timeout``, the table's encoding (CONTRACT.md §2), whole unix
    # seconds; None where they do not apply. ``created_at`` is the row's own (NULL once ended).

    @property
    def ended(self) -> bool:
        return self.created_at is None

    @property
    def due_at(self) -> int | None:
        """When a task nobody holds is (or was) deliverable: waiting, or scheduled for later."""
        return None if self.ended or self.leased else self.timeout

    @property
    def lease_expires_at(self) -> int | None:
        """When a leased task's lease ends unless its holder extends it."""
        return self.timeout if self.leased else None

    @property
    def expires_at(self) -> int | None:
        """When an ended task's row is deleted (its id free again)."""
        return self.timeout + DELETE_OFFSET if self.ended else None


@dataclass(frozen=True, slots=True)
class Retention:
    """How long ended rows are kept (``retention_time``, ``dead_retention_time``): a row's
    timeout is its end plus that, less DELETE_OFFSET."""

    finished: int
    dead: int

    def finished_at(self, status: TaskStatus, timeout: int) -> int | None:
        """When a task of this status whose row holds ``timeout`` ended (None: not ended)."""
        if status in (TaskStatus.WAITING, TaskStatus.RUNNING):
            return None
        kept = self.dead if status is TaskStatus.DEAD else self.finished
        return timeout + DELETE_OFFSET - kept


@dataclass(frozen=True, slots=True)
class AcquiredTask:
    """A task leased to a caller; ``lease`` is the fencing token its later calls must present."""

    task: Task
    lease: int


@dataclass(frozen=True, slots=True)
class NewTask:
    """What a submitter gives; validated on construction."""

    id: str
    type: str
    data: dict[str, Any] = field(default_factory=dict)
    user: str | None = None
    max_running: int | None = None
    run_at: int | None = None
    compression: str | None = None
    max_attempts: int | None = None
    traceparent: str | None = None

    def __post_init__(self) -> None:
        check_name("id", self.id)
        check_name("type", self.type)
        if self.user is not None:
            check_name("user", self.user)
        check_data(self.data)
        if self.max_running is not None:
            check_int("max_running", self.max_running, 1, MAX_TIMESTAMP)
        if self.run_at is not None:
            check_int("run_at", self.run_at, EVENT_HORIZON + 1, MAX_TIMESTAMP)
        if self.compression not in (None, "gzip"):
            raise InvalidError("compression must be 'gzip' or absent")
        if self.max_attempts is not None:
            check_int("max_attempts", self.max_attempts, 1, MAX_ATTEMPTS)
        if self.traceparent is not None:
            check_traceparent(self.traceparent)


@dataclass(frozen=True, slots=True)
class RetryItem:
    """One task of a retry: its lease, and what the retry says (see ``LeaseOperations.retry``)."""

    id: str
    lease: int
    retry_wait: int | None = None
    error: str | None = None
    dead: bool = False


@dataclass(frozen=True, slots=True, init=False)
class RetryPolicy:
    """When a retry without an explicit wait is delivered again, and when a task is dead.

    ``constant``: after ``retry_wait`` (the original). ``exponential``: after
    ``retry_wait * 2 ** (attempts - 1)``, at most ``retry_wait_max``, less a random part of up
    to ``retry_jitter`` of it (so that tasks failing together do not return together).
    ``max_attempts`` (None: unlimited) applies to tasks submitted without their own.

    Built from a queue's :class:`~perfectqueue.settings.QueueSettings` (where these keys are
    declared), or from the declared defaults with some of them changed:
    ``RetryPolicy(retry_wait=7, backoff="exponential")`` (``backoff`` is ``retry_backoff``).
    """

    settings: QueueSettings

    def __init__(self, settings: QueueSettings | None = None, /, **changes: Any) -> None:
        if "backoff" in changes:
            changes["retry_backoff"] = changes.pop("backoff")
        try:
            settings = dataclasses.replace(settings or QueueSettings(), **changes)
        except ConfigError as exc:
            raise InvalidError(str(exc)) from None
        object.__setattr__(self, "settings", settings)

    @property
    def dead_retention_time(self) -> int:
        """Seconds a dead task is kept."""
        return self.settings.dead_retention_time

    def wait(self, attempts: int) -> int:
        """Seconds before the next delivery of a task whose attempt number ``attempts`` failed."""
        s = self.settings
        if s.retry_backoff == "constant":
            return s.retry_wait
        wait = min(s.retry_wait_max, s.retry_wait << min(max(attempts - 1, 0), 40))
        return round(wait - random.uniform(0, s.retry_jitter * wait))

    def exhausted(self, attempts: int, max_attempts: int | None) -> bool:
        """Has a task with this many attempts used up its own limit, or else the queue's?"""
        limit = self.settings.max_attempts if max_attempts is None else max_attempts
        return limit is not None and attempts >= limit


def check_traceparent(value: object) -> str:
    """A W3C ``traceparent`` header value (version 00), strictly; else InvalidError."""
    if not isinstance(value, str) or not TRACEPARENT.fullmatch(value):
        raise InvalidError("traceparent must be a W3C trace context: 00-<32 hex>-<16 hex>-<2 hex>, lowercase")
    return value


def truncate_error(error: str | None) -> str | None:
    """A handler's error as stored: at most LAST_ERROR_CHARS characters, no NUL."""
    if error is None:
        return None
    error = error.replace("\x00", "")
    return error if len(error) <= LAST_ERROR_CHARS else error[: LAST_ERROR_CHARS - 3] + "..."


CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
SURROGATE = re.compile("[\ud800-\udfff]")


def check_name(what: str, value: object) -> None:
    """Ids, types and users: non-empty text of at most 255 UTF-8 bytes, no control characters."""
    if not isinstance(value, str) or not value:
        raise InvalidError(f"{what} must be a non-empty string")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise InvalidError(f"{what} is longer than {MAX_NAME_BYTES} bytes")
    if CONTROL.search(value):
        raise InvalidError(f"{what} must not contain control characters")
    if SURROGATE.search(value):
        raise InvalidError(f"{what} must be valid Unicode text")


def check_stored_id(value: object) -> None:
    """An id to look up: anything the id column can hold (at most 255 characters), so that a
    row another writer stored (the original takes any bytes up to VARCHAR(255)) can be read,
    cancelled, finished or requeued. New ids stay within :func:`check_name`'s rules."""
    if not isinstance(value, str) or not value:
        raise InvalidError("id must be a non-empty string")
    if len(value) > MAX_NAME_BYTES:
        raise InvalidError(f"id is longer than {MAX_NAME_BYTES} characters")
    if SURROGATE.search(value):
        raise InvalidError("id must be valid Unicode text")


def check_data(data: object) -> None:
    """A task's data: a JSON object without the key 'type' that encodes as standard UTF-8 JSON."""
    if not isinstance(data, dict):
        raise InvalidError("data must be a JSON object")
    if "type" in data:
        raise InvalidError("data must not contain the key 'type': it holds the task type")
    if not data:
        return
    try:
        compact_json(data).encode("utf-8")
    except (ValueError, TypeError):  # NaN or Infinity, an unpaired surrogate, a non-JSON value
        raise InvalidError("data must be standard JSON: no NaN, Infinity or unpaired surrogates") from None


def check_int(what: str, value: object, low: int, high: int) -> int:
    """An integer within [low, high], or InvalidError naming the bounds."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidError(f"{what} must be an integer from {low} to {high}")
    return value


def check_duration(what: str, value: object, low: int = 0) -> int:
    """A number of seconds for alive_time, retry_wait or retention_time."""
    return check_int(what, value, low, MAX_DURATION)
