"""Plain domain objects returned by the store, and the limits every caller shares."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

from ...errors import InvalidError

EVENT_HORIZON = 1_300_000_000
"""Rows with a timeout at or below this are never acquired (finished rows live below it)."""

DELETE_OFFSET = 1_000_000_000
"""A finished row stores ``now - DELETE_OFFSET + retention_time`` as its timeout."""

MAX_TIMESTAMP = 2**31 - 1
"""The timeout column is a signed 32-bit INT: no time may go past January 2038."""

MAX_DURATION = 365 * 24 * 3600
"""The longest alive_time, retry_wait or retention_time accepted (one year)."""

MAX_NAME_BYTES = 255
"""Task ids, types and users are stored in VARCHAR(255) columns (or the data's JSON)."""


class TaskStatus(enum.StrEnum):
    """The task states of the time model (CONTRACT.md §2)."""

    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


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


def check_name(what: str, value: object) -> None:
    """Ids, types and users: non-empty text of at most 255 UTF-8 bytes, no control characters."""
    if not isinstance(value, str) or not value:
        raise InvalidError(f"{what} must be a non-empty string")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise InvalidError(f"{what} is longer than {MAX_NAME_BYTES} bytes")
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in value):
        raise InvalidError(f"{what} must not contain control characters")
    if any(0xD800 <= ord(ch) < 0xE000 for ch in value):
        raise InvalidError(f"{what} must be valid Unicode text")


def check_data(data: object) -> None:
    """A task's data: a JSON object without the key 'type' that encodes as standard UTF-8 JSON."""
    if not isinstance(data, dict):
        raise InvalidError("data must be a JSON object")
    if "type" in data:
        raise InvalidError("data must not contain the key 'type': it holds the task type")
    try:
        json.dumps(data, allow_nan=False, ensure_ascii=False).encode("utf-8")
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
