"""The SDK's plain records, shared by the sync and async queues and by every backend."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import PerfectQueueError

Status = Literal["waiting", "running", "finished", "dead", "cancelled"]


@dataclass(frozen=True, slots=True)
class TaskMetadata:
    """A task's state as the queue reported it (the original's ``TaskMetadata``)."""

    key: str
    type: str
    data: dict[str, Any]
    status: Status
    user: str | None = None
    created_at: int | None = None
    timeout: int = 0
    max_running: int | None = None
    compression: str | None = None
    attempts: int = 0
    """Acquisitions so far (a release gives its attempt back)."""
    max_attempts: int | None = None
    last_error: str | None = None
    """The error of the last failed attempt (type and message, truncated)."""
    cancel_requested: bool = False
    traceparent: str | None = None

    @property
    def id(self) -> str:
        return self.key

    def is_finished(self) -> bool:
        return self.status == "finished"

    def is_waiting(self) -> bool:
        return self.status == "waiting"

    def is_running(self) -> bool:
        return self.status == "running"

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
            created_at=body.get("created_at"),
            timeout=int(body.get("timeout") or 0),
            max_running=body.get("max_running"),
            compression=body.get("compression"),
            attempts=int(body.get("attempts") or 0),
            max_attempts=body.get("max_attempts"),
            last_error=body.get("last_error"),
            cancel_requested=bool(body.get("cancel_requested")),
            traceparent=body.get("traceparent"),
        )


@dataclass(frozen=True, slots=True)
class Leased:
    """A task handed to this caller, with the lease its later calls present."""

    metadata: TaskMetadata
    lease: str


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


@dataclass(frozen=True, slots=True)
class BatchResult:
    """The outcome of a batch, as SQS reports one: the keys that succeeded and the failures."""

    successful: list[str]
    failed: list[Failure]


@dataclass(frozen=True, slots=True)
class Page:
    tasks: list[TaskMetadata]
    cursor: str | None


@dataclass(frozen=True, slots=True)
class QueueStats:
    name: str
    waiting: int
    running: int
    finished: int
    dead: int = 0
    capped: tuple[str, ...] = ()
    """The counts that stopped at the service's count limit: there are at least that many."""

    def shown(self, name: str) -> str:
        """A count for people: ``10000+`` when it stopped at the limit."""
        return f"{getattr(self, name)}{'+' if name in self.capped else ''}"
