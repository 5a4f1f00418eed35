"""The operations on a queue that take a JSON body, declared once: path, body, scopes, answer and
handler. Both the FastAPI routes (:mod:`.routes`) and the hot operations' short path
(:mod:`.fastlane`) are built from :data:`OPERATIONS`.

A handler translates: the request's body into the queue runtime's call, and its result into the
answer's model (None: ``204 No Content``). Nothing else happens here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from ..errors import InvalidError, PerfectQueueError
from . import bulk as bulk_actions
from . import models as m
from .config import Scope_
from .runtime import QueueRuntime
from .store import NewTask, RetryItem, TaskStatus
from .store.model import check_traceparent
from .store.queue import MAX_LEASE

B = TypeVar("B", bound=BaseModel)

SUBMIT: tuple[Scope_, ...] = ("submit",)
WORK: tuple[Scope_, ...] = ("work",)
ADMIN: tuple[Scope_, ...] = ("admin",)
CANCEL: tuple[Scope_, ...] = ("submit", "admin")  # a producer may cancel what it submitted
TRACEPARENT_HEADER = "traceparent"


@dataclass(frozen=True, slots=True)
class Call:
    """What a handler gets of the request besides its body."""

    traceparent: str | None
    """The ``traceparent`` header, checked (operations that take it)."""
    gone: Callable[[], Awaitable[bool]]
    """Has the client disconnected?"""


@dataclass(frozen=True)
class Operation(Generic[B]):
    """One ``POST /v1/queues/{queue}/<segment>``."""

    id: str
    segment: str
    body: type[B]
    scopes: tuple[Scope_, ...]
    handler: Callable[[QueueRuntime, B, Call], Awaitable[BaseModel | None]]
    response: type[BaseModel] | None  # None: 204 No Content
    summary: str
    description: str | None = None
    status: int = 200
    errors: tuple[int, ...] = (404, 409)
    """The problem statuses it may answer beyond every operation's (see ``problems.responses``)."""
    traceparent: bool = False
    """Takes a ``traceparent`` header: the trace context of the tasks that give none."""
    hot: bool = False
    """Made for every task (one at a time or a worker's batch): served by the short path too."""

    @property
    def path(self) -> str:
        return f"/v1/queues/{{queue}}/{self.segment}"


def traceparent_of(value: str | None) -> str | None:
    """The ``traceparent`` header, checked (InvalidError: 422)."""
    return None if value is None else check_traceparent(value)


def lease_of(value: str) -> int:
    lease = int(value)
    if lease > MAX_LEASE:
        raise InvalidError("lease is out of range")
    return lease


def new_task(body: m.SubmitRequest, traceparent: str | None = None) -> NewTask:
    return NewTask(  # field by field: a model_dump would copy the data for nothing
        id=body.id,
        type=body.type,
        data=body.data,
        user=body.user,
        max_running=body.max_running,
        run_at=body.run_at,
        compression=body.compression,
        max_attempts=body.max_attempts,
        traceparent=body.traceparent or traceparent,
    )


def batch_result(
    ids: list[str],
    results: list[PerfectQueueError | None],
    rejected: list[tuple[str, PerfectQueueError | None]] | None = None,
) -> m.BatchResult:
    """SQS-style lists from per-item outcomes (None: done); ``rejected`` never reached the queue."""
    outcomes = [*(rejected or []), *zip(ids, results, strict=True)]
    successful = [{"id": i} for i, err in outcomes if err is None]
    failed = [{"id": i, "code": err.code, "detail": str(err)} for i, err in outcomes if err is not None]
    # from plain dicts: one validation in pydantic's core, not a model built per item
    return m.BatchResult.model_validate({"successful": successful, "failed": failed})


def leases(items: list[m.LeaseRequest]) -> list[tuple[str, int]]:
    return [(item.id, lease_of(item.lease)) for item in items]


# -- the handlers -------------------------------------------------------------------------------


async def submit(queue: QueueRuntime, body: m.SubmitRequest, call: Call) -> m.Submitted:
    await queue.submit(new_task(body, call.traceparent))
    return m.Submitted(id=body.id)


async def submit_batch(queue: QueueRuntime, body: m.SubmitBatchRequest, call: Call) -> m.BatchResult:
    tasks: list[NewTask] = []
    rejected: list[tuple[str, PerfectQueueError | None]] = []
    for item in body.tasks:
        try:
            tasks.append(new_task(item, call.traceparent))
        except PerfectQueueError as exc:
            rejected.append((item.id, exc))
    results = await queue.submit_many(tasks)
    return batch_result([t.id for t in tasks], results, rejected)


async def poll(queue: QueueRuntime, body: m.PollRequest, call: Call) -> m.PollResponse:
    tasks = await queue.poll(body.max, body.alive_time, body.wait, call.gone)
    return m.PollResponse(tasks=[m.AcquiredTaskOut.of_acquired(t) for t in tasks])


async def heartbeat(queue: QueueRuntime, body: m.HeartbeatRequest, _call: Call) -> None:
    await queue.heartbeat(body.id, lease_of(body.lease), body.alive_time, body.data)


async def heartbeat_batch(queue: QueueRuntime, body: m.HeartbeatBatchRequest, _call: Call) -> m.BatchResult:
    items = leases(body.tasks)
    return batch_result([i for i, _ in items], await queue.heartbeat_many(items, body.alive_time))


async def finish(queue: QueueRuntime, body: m.LeaseRequest, _call: Call) -> None:
    await queue.finish(body.id, lease_of(body.lease))


async def finish_batch(queue: QueueRuntime, body: m.FinishBatchRequest, _call: Call) -> m.BatchResult:
    items = leases(body.tasks)
    return batch_result([i for i, _ in items], await queue.finish_many(items))


async def retry(queue: QueueRuntime, body: m.RetryRequest, _call: Call) -> None:
    await queue.retry(body.id, lease_of(body.lease), body.retry_wait, body.error, body.dead)


async def retry_batch(queue: QueueRuntime, body: m.RetryBatchRequest, _call: Call) -> m.BatchResult:
    items = [RetryItem(t.id, lease_of(t.lease), t.retry_wait, t.error, t.dead) for t in body.tasks]
    return batch_result([item.id for item in items], await queue.retry_many(items))


async def release(queue: QueueRuntime, body: m.LeaseRequest, _call: Call) -> None:
    await queue.release(body.id, lease_of(body.lease))


async def release_batch(queue: QueueRuntime, body: m.ReleaseBatchRequest, _call: Call) -> m.BatchResult:
    items = leases(body.tasks)
    return batch_result([i for i, _ in items], await queue.release_many(items))


async def force_finish(queue: QueueRuntime, body: m.ForceFinishRequest, _call: Call) -> None:
    await queue.force_finish(body.id)


async def force_release(queue: QueueRuntime, body: m.TaskRequest, _call: Call) -> None:
    await queue.force_release(body.id)


async def cancel(queue: QueueRuntime, body: m.CancelRequest, _call: Call) -> m.TaskOut:
    return m.TaskOut.of(await queue.cancel(body.id, body.force))


async def requeue(queue: QueueRuntime, body: m.TaskRequest, _call: Call) -> m.TaskOut:
    return m.TaskOut.of(await queue.requeue(body.id))


async def bulk(queue: QueueRuntime, body: m.BulkRequest, _call: Call) -> m.BulkResult:
    selection = bulk_actions.Selection(
        TaskStatus(body.status), body.type, body.user, body.prefix, body.cursor, body.limit
    )
    done = await bulk_actions.apply(queue, body.action, selection)
    ids = [task_id for task_id, _ in done.outcomes]
    result = batch_result(ids, [error for _, error in done.outcomes])
    return m.BulkResult(successful=result.successful, failed=result.failed, next_cursor=done.cursor)


# -- the table ----------------------------------------------------------------------------------

OPERATIONS: tuple[Operation[Any], ...] = (
    Operation(
        "submitTask", "submit", m.SubmitRequest, SUBMIT, submit, m.Submitted,
        "Submit one task", status=201, traceparent=True, hot=True,
    ),
    Operation(
        "submitTasks", "submit-batch", m.SubmitBatchRequest, SUBMIT, submit_batch, m.BatchResult,
        "Submit up to 1,000 tasks; per-task results", errors=(404,), traceparent=True,
    ),
    Operation(
        "pollTasks", "poll", m.PollRequest, WORK, poll, m.PollResponse,
        "Lease up to `max` waiting tasks, waiting up to `wait` seconds for one", errors=(404,), hot=True,
    ),
    Operation(
        "heartbeatTask", "heartbeat", m.HeartbeatRequest, WORK, heartbeat, None,
        "Extend a lease, optionally replacing the task's data",
        "`409 cancel_requested`: the lease was extended, but a cancel was requested; stop the work and "
        "call finish, retry or release (each then ends the task as cancelled).",
        status=204, hot=True,
    ),
    Operation(
        "heartbeatTasks", "heartbeat-batch", m.HeartbeatBatchRequest, WORK, heartbeat_batch, m.BatchResult,
        "Extend up to 1,000 leases; per-task results",
        "One transaction. A task under `failed` with the code `cancel_requested` had its lease extended, "
        "but a cancel was requested: stop its work and call finish, retry or release. Other codes are "
        "those of heartbeat (`preempted`: finished, gone or taken over).",
        errors=(404,), hot=True,
    ),
    Operation(
        "finishTask", "finish", m.LeaseRequest, WORK, finish, None,
        "Finish a leased task",
        "`409 cancel_requested`: a cancel was requested while the task ran; it ended as cancelled.",
        status=204, hot=True,
    ),
    Operation(
        "finishTasks", "finish-batch", m.FinishBatchRequest, WORK, finish_batch, m.BatchResult,
        "Finish up to 1,000 leased tasks; per-task results", errors=(404,), hot=True,
    ),
    Operation(
        "retryTask", "retry", m.RetryRequest, WORK, retry, None,
        "Give a leased task back, to be delivered again after `retry_wait` seconds",
        "Without `retry_wait` the queue's backoff decides. A task whose attempts are used up "
        "(`max_attempts`) becomes dead instead. `error` is recorded as the task's `last_error`.",
        status=204, hot=True,
    ),
    Operation(
        "retryTasks", "retry-batch", m.RetryBatchRequest, WORK, retry_batch, m.BatchResult,
        "Retry up to 1,000 leased tasks; per-task results",
        "One transaction; each task as `retry` alone would (its own `retry_wait`, `error` and `dead`). "
        "A task under `failed` with the code `cancel_requested` ended as cancelled; other codes are those "
        "of retry (`preempted`: finished, gone or taken over).",
        errors=(404,),
    ),
    Operation(
        "releaseTask", "release", m.LeaseRequest, WORK, release, None,
        "Give a leased task back, deliverable at once", status=204, hot=True,
    ),
    Operation(
        "releaseTasks", "release-batch", m.ReleaseBatchRequest, WORK, release_batch, m.BatchResult,
        "Give up to 1,000 leased tasks back, deliverable at once; per-task results",
        "One transaction; each task as `release` alone would. A task under `failed` with the code "
        "`cancel_requested` ended as cancelled.",
        errors=(404,),
    ),
    Operation(
        "forceFinishTask", "force-finish", m.ForceFinishRequest, ADMIN, force_finish, None,
        "Finish a task regardless of any lease, or a dead task (operator)", status=204,
    ),
    Operation(
        "forceReleaseTask", "force-release", m.TaskRequest, ADMIN, force_release, None,
        "Make a task deliverable now, regardless of any lease (operator's retry now)",
        "The holder's lease ends: its next call answers `409 preempted`. A waiting task keeps its place; "
        "a running or scheduled one becomes due now. `409 already_finished` if it ended.",
        status=204,
    ),
    Operation(
        "cancelTask", "cancel", m.CancelRequest, CANCEL, cancel, m.TaskOut,
        "Cancel a task: at once if nobody holds it, else at its holder's next call",
        "A waiting task (or one scheduled for later) ends as cancelled at once. A running one gets "
        "`cancel_requested`: its holder's next heartbeat answers `409 cancel_requested`, and the task ends "
        "as cancelled when the holder finishes, retries or releases it (or its lease expires). A task a "
        "Ruby PerfectQueue process holds (`holder: ruby`) answers `409 held_by_ruby` and is left as it "
        "is, unless `force` is true: then it ends as cancelled at once. Answers the task as it is now; "
        "`409 already_finished` if it had ended.",
    ),
    Operation(
        "requeueTask", "requeue", m.TaskRequest, ADMIN, requeue, m.TaskOut,
        "Make a dead task waiting again, its attempts reset (operator)",
        "`409 not_dead` for a waiting or running task; `409 already_finished` for a finished or "
        "cancelled one.",
    ),
    Operation(
        "bulkAction", "bulk", m.BulkRequest, ADMIN, bulk, m.BulkResult,
        "Requeue or cancel every task a filter selects (operator), up to limit a request",
        "Each selected task (the listing's filters, in id order) is requeued or cancelled as its own call "
        "would do it, and answered under `successful` or `failed` with that call's code. At most `limit` "
        "tasks (1,000) and 20 listing pages a request; `next_cursor` goes on from there.",
        errors=(404, 422),
    ),
)  # fmt: skip
"""In the order the API describes them."""
