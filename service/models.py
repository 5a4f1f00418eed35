"""The HTTP API's request and response bodies (they are the OpenAPI document's schemas)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .store import AcquiredTask, Task
from .store.model import MAX_DURATION, MAX_TIMESTAMP

MAX_BATCH = 1000
MAX_POLL = 100

TaskId = Annotated[str, Field(min_length=1, max_length=255, description="The task id (at most 255 bytes)")]
Lease = Annotated[
    str,
    Field(pattern=r"^[1-9][0-9]{0,18}$", description="The lease token that the poll returned"),
]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


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


class Submitted(BaseModel):
    id: str


class Failure(BaseModel):
    id: str
    code: str
    detail: str


class BatchResult(BaseModel):
    """Per-item results, as SQS's Successful and Failed lists."""

    successful: list[Submitted]
    failed: list[Failure]


class PollRequest(Body):
    max: Annotated[int, Field(ge=1, le=MAX_POLL)] = 1
    alive_time: Annotated[int | None, Field(ge=1, le=MAX_DURATION)] = Field(
        default=None, description="Seconds the lease lasts (default: the queue's alive_time)"
    )
    wait: Annotated[float, Field(ge=0, le=300)] = Field(
        default=0, description="Seconds to wait for a task when none is waiting (long-poll)"
    )


class TaskOut(BaseModel):
    id: str
    type: str
    data: dict[str, Any]
    user: str | None
    status: Literal["waiting", "running", "finished"]
    created_at: int | None
    timeout: int
    max_running: int | None
    compression: Literal["gzip"] | None

    @classmethod
    def of(cls, task: Task) -> TaskOut:
        return cls(
            id=task.id,
            type=task.type,
            data=task.data,
            user=task.user,
            status=task.status.value,
            created_at=task.created_at,
            timeout=task.timeout,
            max_running=task.max_running,
            compression="gzip" if task.compression == "gzip" else None,
        )


class AcquiredTaskOut(TaskOut):
    lease: str

    @classmethod
    def of_acquired(cls, acquired: AcquiredTask) -> AcquiredTaskOut:
        return cls(**TaskOut.of(acquired.task).model_dump(), lease=str(acquired.lease))


class PollResponse(BaseModel):
    tasks: list[AcquiredTaskOut]


class LeaseRequest(Body):
    id: TaskId
    lease: Lease


class HeartbeatRequest(LeaseRequest):
    alive_time: Annotated[int | None, Field(ge=1, le=MAX_DURATION)] = None
    data: dict[str, Any] | None = Field(default=None, description="New data to store with the task")


class RetryRequest(LeaseRequest):
    retry_wait: Annotated[int | None, Field(ge=0, le=MAX_DURATION)] = Field(
        default=None, description="Seconds before redelivery (default: the queue's retry_wait)"
    )


class FinishBatchRequest(Body):
    tasks: Annotated[list[LeaseRequest], Field(min_length=1, max_length=MAX_BATCH)]


class ForceFinishRequest(Body):
    id: TaskId


class TaskPage(BaseModel):
    tasks: list[TaskOut]
    next_cursor: str | None = Field(description="Pass as 'cursor' for the next page; null at the end")


class QueueInfo(BaseModel):
    name: str
    waiting: int
    running: int
    finished: int


class QueueList(BaseModel):
    queues: list[QueueInfo]


class Problem(BaseModel):
    """An RFC 9457 problem; ``code`` is stable and maps to one SDK exception."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    errors: list[dict[str, Any]] | None = None
