"""The SDK's plain records, shared by the sync and async queues and by every backend, and how
each is read from the service's JSON (the same shapes the direct backend builds from the store)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from ..errors import ERRORS_BY_CODE, PerfectQueueError, UnavailableError

Status = Literal["waiting", "running", "finished", "dead", "cancelled"]

RETRY_STATUSES = {502, 503, 504}
"""The statuses of a service out of reach: a gateway's 502/504, or its own 503."""
STATUS_ERRORS = {
    code_cls.status: code_cls
    for code_cls in ERRORS_BY_CODE.values()
    if code_cls.code in {"unauthorized", "forbidden", "too_large", "invalid", "unavailable"}
}


def error_of(code: str, detail: str, status: int = 500) -> PerfectQueueError:
    """The exception class the service named by ``code`` (by status when the code is unknown)."""
    cls = ERRORS_BY_CODE.get(code) or STATUS_ERRORS.get(status)
    cls = cls or (UnavailableError if status in RETRY_STATUSES else PerfectQueueError)
    return cls(detail)


@dataclass(frozen=True, slots=True)
class TaskMetadata:
    """A task's state as the queue reported it (the original's ``TaskMetadata``)."""

    key: str
    type: str
    data: dict[str, Any]
    status: Status
    user: str | None = None
    created_at: datetime | None = None
    """When it was submitted (None once it ended: the table forgets it then)."""
    max_running: int | None = None
    compression: str | None = None
    attempts: int = 0
    """Acquisitions so far (a release gives its attempt back)."""
    max_attempts: int | None = None
    last_error: str | None = None
    """The error of the last failed attempt (type and message, truncated)."""
    cancel_requested: bool = False
    traceparent: str | None = None
    leased: bool = False
    """Running and held (a running task nobody holds is scheduled for later)."""
    holder: str | None = None
    """Who holds a leased task: ``"worker"`` (a lease of the service) or ``"ruby"`` (a Ruby
    PerfectQueue process sharing the table); None when not leased."""
    due_at: datetime | None = None
    """When a task nobody holds became (waiting) or becomes (scheduled) deliverable."""
    lease_expires_at: datetime | None = None
    """When a leased task's lease ends unless its holder extends it."""
    finished_at: datetime | None = None
    """When a finished, dead or cancelled task ended."""
    expires_at: datetime | None = None
    """When an ended task's row is deleted (its id free again)."""

    @property
    def id(self) -> str:
        return self.key

    def is_finished(self) -> bool:
        return self.status == "finished"

    def is_waiting(self) -> bool:
        return self.status == "waiting"

    def is_running(self) -> bool:
        """Not yet due: leased, or scheduled for later (the original's meaning)."""
        return self.status == "running"

    def is_leased(self) -> bool:
        return self.status == "running" and self.leased

    def is_scheduled(self) -> bool:
        return self.status == "running" and not self.leased

    def is_dead(self) -> bool:
        return self.status == "dead"

    def is_cancelled(self) -> bool:
        return self.status == "cancelled"

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> TaskMetadata:
        return cls(
            key=body["id"],
            type=body["type"],
            data=dict(body.get("data") or {}),
            status=body["status"],
            user=body.get("user"),
            created_at=parse_instant(body.get("created_at")),
            max_running=body.get("max_running"),
            compression=body.get("compression"),
            attempts=int(body.get("attempts") or 0),
            max_attempts=body.get("max_attempts"),
            last_error=body.get("last_error"),
            cancel_requested=bool(body.get("cancel_requested")),
            traceparent=body.get("traceparent"),
            leased=bool(body.get("leased")),
            holder=body.get("holder"),
            **{name: parse_instant(body.get(name)) for name in INSTANTS},
        )


INSTANTS = ("due_at", "lease_expires_at", "finished_at", "expires_at")
"""The times of :class:`TaskMetadata` beyond ``created_at``, all read the same way."""


def parse_instant(value: str | None) -> datetime | None:
    """An RFC 3339 instant of the service's JSON as an aware datetime (None stays None)."""
    return None if value is None else datetime.fromisoformat(value)


def from_unix(unix: int | None) -> datetime | None:
    """Whole unix seconds (the store's) as an aware UTC datetime."""
    return None if unix is None else datetime.fromtimestamp(unix, UTC)


@dataclass(frozen=True, slots=True)
class Leased:
    """A task handed to this caller, with the lease its later calls present."""

    metadata: TaskMetadata
    lease: str

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Leased:
        return cls(TaskMetadata.from_json(body), body["lease"])


@dataclass(frozen=True, slots=True)
class SubmitSpec:
    """One task of a ``submit_many`` call."""

    key: str
    type: str
    data: dict[str, Any] = field(default_factory=dict)
    user: str | None = None
    max_running: int | None = None
    run_at: int | None = None
    compression: str | None = None
    max_attempts: int | None = None
    traceparent: str | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.key, "type": self.type, "data": self.data}
        optional = {
            "user": self.user,
            "max_running": self.max_running,
            "run_at": self.run_at,
            "compression": self.compression,
            "max_attempts": self.max_attempts,
            "traceparent": self.traceparent,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        return body


@dataclass(frozen=True, slots=True)
class Failure:
    """A task of a batch that failed, with the error it would have raised alone."""

    key: str
    error: PerfectQueueError

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Failure:
        return cls(body["id"], error_of(body["code"], body["detail"]))


@dataclass(frozen=True, slots=True)
class BatchResult:
    """The outcome of a batch, as SQS reports one: the keys that succeeded and the failures."""

    successful: list[str]
    failed: list[Failure]

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> BatchResult:
        return cls([s["id"] for s in body["successful"]], [Failure.from_json(f) for f in body["failed"]])


class Held(Protocol):
    """A leased task as the batch calls see it (the sync and async SDK's acquired tasks)."""

    @property
    def key(self) -> str: ...

    @property
    def lease(self) -> str: ...


@dataclass(frozen=True, slots=True)
class RetrySpec:
    """One task of ``retry_many`` with what its retry says, as ``task.retry(...)`` would: the
    seconds before it is delivered again (None: the queue's backoff), what failed, or ``dead``."""

    task: Held
    retry_wait: int | None = None
    error: str | None = None
    dead: bool = False


@dataclass(frozen=True, slots=True)
class BulkResult(BatchResult):
    """A bulk action's outcome: each selected task's, as its own call would have answered, and
    where the selection goes on (``cursor``; None: every matching task was seen)."""

    cursor: str | None = None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> BulkResult:
        batch = BatchResult.from_json(body)
        return cls(batch.successful, batch.failed, body["next_cursor"])


@dataclass(frozen=True, slots=True)
class Page:
    tasks: list[TaskMetadata]
    cursor: str | None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Page:
        return cls([TaskMetadata.from_json(t) for t in body["tasks"]], body["next_cursor"])


STATES = ("waiting", "leased", "scheduled", "finished", "dead", "cancelled")
"""The states a queue's counts tell apart, in the order people read them."""


@dataclass(frozen=True, slots=True)
class QueueStats:
    """A queue's tasks by state; each count stops at the service's count limit."""

    name: str
    waiting: int
    """Deliverable now."""
    leased: int
    """Held by a worker under a lease."""
    scheduled: int
    """Due later, held by nobody (``run_at``, a retry's wait)."""
    finished: int
    """Retained tasks that finished (dead and cancelled ones are counted apart)."""
    dead: int = 0
    cancelled: int = 0
    capped: tuple[str, ...] = ()
    """The counts that stopped at the service's count limit: there are at least that many."""
    paused_at: datetime | None = None
    """When the queue was paused (None: it is not): polls get nothing, submits are accepted."""

    @property
    def paused(self) -> bool:
        return self.paused_at is not None

    @property
    def running(self) -> int:
        """The original's running: not yet due, leased or scheduled."""
        return self.leased + self.scheduled

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> QueueStats:
        counts = {name: int(body.get(name, 0)) for name in STATES}
        capped, paused_at = tuple(body.get("capped", ())), parse_instant(body.get("paused_at"))
        return cls(body["name"], **counts, capped=capped, paused_at=paused_at)

    def shown(self, name: str) -> str:
        """A count for people: ``10000+`` when it stopped at the limit."""
        return f"{getattr(self, name)}{'+' if name in self.capped else ''}"
