"""The HTTP API's request and response bodies (they are the OpenAPI document's schemas)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from .store import AcquiredTask, Task
from .store.model import MAX_ATTEMPTS, MAX_DURATION, MAX_TIMESTAMP

MAX_BATCH = 1000
MAX_POLL = 100

TaskId = Annotated[str, Field(min_length=1, max_length=255, description="The task id (at most 255 bytes)")]
Lease = Annotated[
    str,
    Field(pattern=r"^[1-9][0-9]{0,18}$", description="The lease token that the poll returned"),
]

EXAMPLE_LEASE = "8437261094837261"
EXAMPLE_TASK: dict[str, Any] = {
    "id": "mail-42",
    "type": "send_mail",
    "data": {"to": "a@example.com"},
    "user": "acme",
    "status": "running",
    "created_at": "2026-01-01T00:00:00Z",
    "lease_expires_at": "2026-01-01T00:05:00Z",
    "max_running": 2,
    "compression": "gzip",
    "attempts": 1,
    "max_attempts": 5,
    "cancel_requested": False,
    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "leased": True,
}
"""(FastAPI drops every null from the OpenAPI document, examples included: none here.)"""
EXAMPLE_FAILURE = {"id": "mail-43", "code": "already_exists", "detail": "task 'mail-43' already exists"}
EXAMPLE_QUEUE = {
    "name": "default",
    "waiting": 12,
    "leased": 2,
    "scheduled": 1,
    "finished": 40,
    "dead": 1,
    "cancelled": 0,
    "dead_last_hour": 1,
    "oldest_waiting_age": 42,
    "capped": [],
}
Traceparent = Annotated[
    str | None,
    Field(
        pattern=r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
        description="A W3C trace context (version 00) that travels with the task; the `traceparent` "
        "request header is used when this is absent. All-zero trace or parent ids are refused.",
    ),
]
Instant = Annotated[datetime | None, Field(description="An instant, RFC 3339 in UTC")]


def instant(unix: int | None) -> datetime | None:
    """Whole unix seconds as an aware UTC datetime (RFC 3339 with ``Z`` in JSON)."""
    return None if unix is None else datetime.fromtimestamp(unix, UTC)


Status = Literal["waiting", "running", "finished", "dead", "cancelled"]


def examples(*items: dict[str, Any]) -> ConfigDict:
    """A model's OpenAPI examples (a subclass of Body keeps extra="forbid": configs merge)."""
    return ConfigDict(json_schema_extra={"examples": list(items)})


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # "5" is not a number, true not 1


class SubmitRequest(Body):
    id: TaskId
    type: Annotated[str, Field(min_length=1, max_length=255)]
    data: dict[str, Any] = Field(default_factory=dict, description="A JSON object; 'type' is reserved")
    user: Annotated[str | None, Field(min_length=1, max_length=255)] = None
    max_running: Annotated[int | None, Field(ge=1, le=MAX_TIMESTAMP)] = None
    run_at: Annotated[int | None, Field(gt=1_300_000_000, le=MAX_TIMESTAMP)] = Field(
        default=None, description="Unix time before which the task is not delivered"
    )
    compression: Literal["gzip"] | None = None
    max_attempts: Annotated[int | None, Field(ge=1, le=MAX_ATTEMPTS)] = Field(
        default=None,
        description="Attempts after which the task is dead instead of delivered again (default: the queue's)",
    )
    traceparent: Traceparent = None

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"id": "mail-42", "type": "send_mail", "data": {"to": "a@example.com"}, "user": "acme"}
            ]
        },
    )


class SubmitBatchRequest(Body):
    tasks: Annotated[list[SubmitRequest], Field(min_length=1, max_length=MAX_BATCH)]

    model_config = examples(
        {
            "tasks": [
                {"id": "mail-42", "type": "send_mail"},
                {"id": "mail-43", "type": "send_mail", "user": "acme"},
            ]
        }
    )


class Submitted(BaseModel):
    id: str

    model_config = examples({"id": "mail-42"})


class Failure(BaseModel):
    id: str
    code: str
    detail: str

    model_config = examples(EXAMPLE_FAILURE)


class BatchResult(BaseModel):
    """Per-item results, as SQS's Successful and Failed lists."""

    successful: list[Submitted]
    failed: list[Failure]

    model_config = examples({"successful": [{"id": "mail-42"}], "failed": [EXAMPLE_FAILURE]})


class PollRequest(Body):
    max: Annotated[int, Field(ge=1, le=MAX_POLL)] = 1
    alive_time: Annotated[int | None, Field(ge=1, le=MAX_DURATION)] = Field(
        default=None, description="Seconds the lease lasts (default: the queue's alive_time)"
    )
    wait: Annotated[float, Field(ge=0, le=300)] = Field(
        default=0,
        description="Seconds to wait for a task when none is waiting (long-poll); at most the "
        "service's max_poll_wait (20 by default), a longer wait is refused with 422",
    )

    model_config = examples({"max": 10, "alive_time": 300, "wait": 20}, {})


class TaskOut(BaseModel):
    id: str
    type: str
    data: dict[str, Any]
    user: str | None
    status: Status = Field(
        description="waiting: deliverable; running: leased, or scheduled for later (run_at, retry_wait); "
        "finished: retained for retention_time, never delivered again; dead: its attempts are used up, "
        "never delivered again, retained for dead_retention_time (requeue or force-finish it); "
        "cancelled: ended by a cancel, retained for retention_time"
    )
    created_at: Instant = Field(
        description="When the task was submitted; null once it ended (the table, shared with the "
        "original, forgets it then)"
    )
    due_at: Instant = Field(
        default=None,
        description="When a task nobody holds became (waiting) or becomes (scheduled: run_at, a retry's "
        "wait) deliverable; null for a leased or ended task",
    )
    lease_expires_at: Instant = Field(
        default=None,
        description="When a leased task's lease ends unless its holder extends it; null otherwise",
    )
    finished_at: Instant = Field(
        default=None,
        description="When a finished, dead or cancelled task ended (derived from its retention's end and "
        "the queue's retention_time or dead_retention_time); null for a live task",
    )
    expires_at: Instant = Field(
        default=None,
        description="When an ended task's row is deleted and its id may be submitted again; null for a "
        "live task",
    )
    max_running: int | None
    compression: Literal["gzip"] | None
    attempts: int = Field(description="Acquisitions so far (a release gives its attempt back)")
    max_attempts: int | None = Field(
        default=None, description="The task's own limit (null: the queue's, if any)"
    )
    last_error: str | None = Field(
        default=None, description="The error of the last failed attempt, truncated"
    )
    cancel_requested: bool = Field(description="A cancel was requested while the task ran")
    traceparent: str | None = Field(default=None, description="The W3C trace context given at submit")
    leased: bool = Field(
        default=False,
        description="Running and held (see holder); a running task that nobody holds is scheduled for "
        "later (submitted with run_at, or retried with a wait)",
    )
    holder: Literal["worker", "ruby"] | None = Field(
        default=None,
        description="Who holds a leased task: worker (a lease of this service) or ruby (a Ruby "
        "PerfectQueue process sharing the table: its lease, or its retry! wait, which it writes alike; "
        "lease_expires_at is when either ends); null when not leased",
    )
    data_withheld: bool = Field(
        default=False,
        description="The stored data is over the service's max_data_bytes once inflated (written by "
        "another writer): it is not sent (data is empty, type the part of the id before its first dot); "
        "a poll never delivers such a task, it ends dead",
    )

    model_config = examples(EXAMPLE_TASK)

    @classmethod
    def of(cls, task: Task, **more: Any) -> Self:
        """The task's answer (``more``: a subclass's fields), built without validation: every
        value comes from the store, already of its field's type (an answer of many tasks was
        validated twice over, a share of a poll's CPU)."""
        return cls.model_construct(
            id=task.id,
            type=task.type,
            data=task.data,
            user=task.user,
            status=task.status.value,
            created_at=instant(task.created_at),
            due_at=instant(task.due_at),
            lease_expires_at=instant(task.lease_expires_at),
            finished_at=instant(task.finished_at),
            expires_at=instant(task.expires_at),
            max_running=task.max_running,
            compression="gzip" if task.compression == "gzip" else None,
            attempts=task.attempts,
            max_attempts=task.max_attempts,
            last_error=task.last_error,
            cancel_requested=task.cancel_requested,
            traceparent=task.traceparent,
            leased=task.leased,
            holder="ruby" if task.holder == "ruby" else "worker" if task.holder == "worker" else None,
            data_withheld=task.data_withheld,
            **more,
        )


class AcquiredTaskOut(TaskOut):
    lease: str

    model_config = examples({**EXAMPLE_TASK, "lease": EXAMPLE_LEASE})

    @classmethod
    def of_acquired(cls, acquired: AcquiredTask) -> AcquiredTaskOut:
        return cls.of(acquired.task, lease=str(acquired.lease))


class PollResponse(BaseModel):
    tasks: list[AcquiredTaskOut]

    model_config = examples({"tasks": [{**EXAMPLE_TASK, "lease": EXAMPLE_LEASE}]})


class LeaseRequest(Body):
    id: TaskId
    lease: Lease

    model_config = examples({"id": "mail-42", "lease": EXAMPLE_LEASE})


class HeartbeatRequest(LeaseRequest):
    alive_time: Annotated[int | None, Field(ge=1, le=MAX_DURATION)] = None
    data: dict[str, Any] | None = Field(default=None, description="New data to store with the task")

    model_config = examples(
        {"id": "mail-42", "lease": EXAMPLE_LEASE, "alive_time": 300},
        {"id": "mail-42", "lease": EXAMPLE_LEASE, "data": {"to": "a@example.com", "attempt": 2}},
    )


class RetryRequest(LeaseRequest):
    retry_wait: Annotated[int | None, Field(ge=0, le=MAX_DURATION)] = Field(
        default=None,
        description="Seconds before redelivery (default: the queue's backoff: retry_wait, constant or "
        "growing exponentially with the attempts)",
    )
    error: Annotated[str | None, Field(max_length=65536)] = Field(
        default=None, description="What failed (e.g. the exception's type and message); kept truncated"
    )
    dead: bool = Field(
        default=False,
        description="Give up: the task ends dead now, whatever its attempts (e.g. a type no handler "
        "knows); requeue it once that is fixed",
    )

    model_config = examples(
        {"id": "mail-42", "lease": EXAMPLE_LEASE, "retry_wait": 60},
        {"id": "mail-42", "lease": EXAMPLE_LEASE, "error": "TimeoutError: the mail server did not answer"},
    )


class FinishBatchRequest(Body):
    tasks: Annotated[list[LeaseRequest], Field(min_length=1, max_length=MAX_BATCH)]

    model_config = examples(
        {"tasks": [{"id": "mail-42", "lease": EXAMPLE_LEASE}, {"id": "mail-43", "lease": EXAMPLE_LEASE}]}
    )


class HeartbeatBatchRequest(FinishBatchRequest):
    alive_time: Annotated[int | None, Field(ge=1, le=MAX_DURATION)] = Field(
        default=None, description="Seconds every lease lasts from now (default: the queue's alive_time)"
    )

    model_config = examples(
        {
            "tasks": [{"id": "mail-42", "lease": EXAMPLE_LEASE}, {"id": "mail-43", "lease": EXAMPLE_LEASE}],
            "alive_time": 300,
        }
    )


class RetryBatchRequest(Body):
    tasks: Annotated[list[RetryRequest], Field(min_length=1, max_length=MAX_BATCH)]

    model_config = examples(
        {
            "tasks": [
                {"id": "mail-42", "lease": EXAMPLE_LEASE, "error": "TimeoutError: no answer"},
                {"id": "mail-43", "lease": EXAMPLE_LEASE, "retry_wait": 60},
            ]
        }
    )


class ReleaseBatchRequest(FinishBatchRequest):
    model_config = examples(
        {"tasks": [{"id": "mail-42", "lease": EXAMPLE_LEASE}, {"id": "mail-43", "lease": EXAMPLE_LEASE}]}
    )


class ForceFinishRequest(Body):
    id: TaskId

    model_config = examples({"id": "mail-42"})


class TaskRequest(Body):
    """An operator's request about one task (cancel, requeue)."""

    id: TaskId

    model_config = examples({"id": "mail-42"})


class CancelRequest(TaskRequest):
    """A cancel; ``force`` also ends a task a Ruby PerfectQueue process holds."""

    force: bool = Field(
        default=False,
        description="End the task now even if a Ruby PerfectQueue process holds it (without it such a "
        "cancel answers 409 held_by_ruby and changes nothing: the Ruby process cannot see a cancel request)",
    )

    model_config = examples({"id": "mail-42"})


class BulkRequest(Body):
    """An operator's action on every task a filter selects (at most ``limit`` in one request)."""

    action: Literal["requeue", "cancel"] = Field(
        description="requeue: dead tasks waiting again, attempts reset; cancel: as the cancel call, each"
    )
    status: Status = Field(description="Only the tasks in this state (requeue applies to dead ones)")
    type: Annotated[str | None, Field(min_length=1, max_length=255)] = None
    user: Annotated[str | None, Field(min_length=1, max_length=255)] = None
    prefix: Annotated[str | None, Field(min_length=1, max_length=255)] = None
    cursor: Annotated[str | None, Field(min_length=1, max_length=300)] = Field(
        default=None, description="The next_cursor of the previous request, to go on"
    )
    limit: Annotated[int, Field(ge=1, le=MAX_BATCH)] = 1000

    model_config = examples(
        {"action": "requeue", "status": "dead", "type": "send_mail"},
        {"action": "cancel", "status": "waiting", "user": "acme"},
    )


class BulkResult(BatchResult):
    """Each selected task's outcome, as its own call would have answered."""

    next_cursor: str | None = Field(
        description="More tasks may match: pass it as 'cursor' to go on (null: all were seen)"
    )

    model_config = examples(
        {"successful": [{"id": "mail-42"}], "failed": [EXAMPLE_FAILURE], "next_cursor": "mail-43"}
    )


class ListedTask(TaskOut):
    data: dict[str, Any] | None = Field(  # type: ignore[assignment]
        default=None, description="The task's data with include=data; null without"
    )

    @classmethod
    def listed(cls, task: Task, with_data: bool) -> ListedTask:
        out = cls.of(task)
        if not with_data:
            out.data = None
        return out


class TaskPage(BaseModel):
    tasks: list[ListedTask] = Field(
        description="With include=data, the page stops before the data of its tasks passes the "
        "service's max_response_bytes (8 MiB by default; always one task at least): fewer tasks than "
        "limit, and next_cursor continues after the last"
    )
    next_cursor: str | None = Field(description="Pass as 'cursor' for the next page; null at the end")

    model_config = examples({"tasks": [EXAMPLE_TASK], "next_cursor": "mail-42"})


class QueueInfo(BaseModel):
    """A queue's tasks by state, each count stopping at the service's ``metrics_count_limit``."""

    name: str
    waiting: int = Field(description="Deliverable now")
    leased: int = Field(description="Held by a worker under a lease")
    scheduled: int = Field(description="Due later, held by nobody (run_at, a retry's wait)")
    finished: int = Field(description="Retained tasks that finished (dead and cancelled ones not included)")
    dead: int = Field(description="Retained dead tasks: their attempts are used up")
    cancelled: int = Field(description="Retained cancelled tasks")
    dead_last_hour: int = Field(
        default=0, description="Of the dead tasks, those that died in the last hour (by dead_retention_time)"
    )
    oldest_waiting_age: int | None = Field(
        description="Seconds since the longest-waiting task became deliverable (null: none waiting)"
    )
    paused: bool = Field(default=False, description="Polls get no task (submits are accepted)")
    paused_at: Instant = Field(default=None, description="When the queue was paused (null: it is not)")
    capped: list[str] = Field(
        description="The counts that stopped at metrics_count_limit to stay fast: there are at least "
        "that many"
    )

    model_config = examples(EXAMPLE_QUEUE)


class QueueList(BaseModel):
    queues: list[QueueInfo]

    model_config = examples({"queues": [EXAMPLE_QUEUE]})


class Problem(BaseModel):
    """An RFC 9457 problem; ``code`` is stable and maps to one SDK exception."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    errors: list[dict[str, Any]] | None = None

    model_config = examples(
        {
            "type": "urn:perfectqueue:problem:preempted",
            "title": "The caller's lease is no longer valid: another acquisition holds or finished the task.",
            "status": 409,
            "detail": "task 'mail-42' is not held by this lease",
            "code": "preempted",
        }
    )


class Health(BaseModel):
    """The answer of /livez and /readyz."""

    status: Literal["ok", "stopping", "unavailable"]
    detail: str | None = None

    model_config = examples({"status": "ok"}, {"status": "unavailable", "detail": "database error: ..."})
