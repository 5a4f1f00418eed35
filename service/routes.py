"""The HTTP endpoints: each translates a request into one store call and nothing more."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from ..errors import InvalidError, PerfectQueueError, UnknownQueueError
from . import models as m
from .limits import check_data_size
from .security import key_of, require
from .store import Counts, NewTask, TaskStatus
from .store.model import check_traceparent
from .store.queue import MAX_LEASE

if TYPE_CHECKING:
    from .app import Queue, Runtime

PROBLEM = {
    "model": m.Problem,
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}

health = APIRouter(tags=["health"])
router = APIRouter(prefix="/v1", tags=["queue"])


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problem responses an operation can give (every /v1 one needs a key;
    400 answers a body that is not JSON at all)."""
    return {status: PROBLEM for status in sorted({*statuses, 400, 401, 403, 413, 422, 503})}


SUBMIT = [require("submit")]
WORK = [require("work")]
ADMIN = [require("admin")]
ANY = [require("submit", "work", "admin")]  # one task's status: producers and workers may read it
CANCEL = [require("submit", "admin")]  # a producer may cancel what it submitted


async def runtime_of(request: Request) -> Runtime:  # async: a plain def runs in a thread
    runtime: Runtime = request.app.state.runtime
    return runtime


async def queue_of(request: Request, queue: Annotated[str, Path(max_length=64)]) -> Queue:
    found = (await runtime_of(request)).queues.get(queue)
    if found is None:
        raise UnknownQueueError(f"queue {queue!r} is not declared in this service's configuration")
    return found


RuntimeDep = Annotated["Runtime", Depends(runtime_of)]
QueueDep = Annotated["Queue", Depends(queue_of)]


def lease_of(value: str) -> int:
    lease = int(value)
    if lease > MAX_LEASE:
        raise InvalidError("lease is out of range")
    return lease


TRACEPARENT_LENGTH = 55  # "00-", 32 hex, "-", 16 hex, "-", 2 hex
TraceparentHeader = Annotated[
    str | None,
    Header(
        max_length=TRACEPARENT_LENGTH,
        description="W3C trace context for the submitted tasks that do not give their own `traceparent`",
    ),
]


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


def header_traceparent(value: str | None) -> str | None:
    return None if value is None else check_traceparent(value)


def queue_info(name: str, counts: Counts) -> m.QueueInfo:
    return m.QueueInfo(
        name=name,
        waiting=counts.waiting,
        running=counts.running,
        scheduled=counts.scheduled,
        finished=counts.finished,
        dead=counts.dead,
        oldest_waiting_age=counts.oldest_waiting_age,
        capped=list(counts.capped),
    )


async def counts_of(queue: Queue, runtime: Runtime) -> Counts:
    """The queue's counts, each stopping at ``metrics_count_limit``."""
    return await runtime.run(queue.store.counts, runtime.settings.metrics_count_limit)


def batch_result(
    ids: list[str],
    results: list[PerfectQueueError | None],
    rejected: list[tuple[str, PerfectQueueError | None]] | None = None,
) -> m.BatchResult:
    """SQS-style lists from per-item outcomes (None: done); ``rejected`` never reached the store."""
    outcomes = [*(rejected or []), *zip(ids, results, strict=True)]
    successful = [{"id": i} for i, err in outcomes if err is None]
    failed = [{"id": i, "code": err.code, "detail": str(err)} for i, err in outcomes if err is not None]
    # from plain dicts: one validation in pydantic's core, not a model built per item
    return m.BatchResult.model_validate({"successful": successful, "failed": failed})


def freed(queue: Queue) -> None:
    """Tasks ended: under fair scheduling their users' max_running has room again, so the polls
    waiting here try at once instead of at their next periodic check."""
    if queue.settings.fair:
        queue.longpoll.notify()


def max_data(runtime: Runtime) -> int:
    return runtime.settings.max_data_bytes


# -- health ----------------------------------------------------------------------------------


@health.get("/livez", operation_id="livez", summary="The process answers", response_model_exclude_none=True)
@health.get("/healthz", include_in_schema=False, response_model_exclude_none=True)  # alias of /livez
async def livez() -> m.Health:
    return m.Health(status="ok")


@health.get(
    "/readyz",
    operation_id="readyz",
    summary="The databases answer (one index probe of each queue's table) and the service is not stopping",
    response_model=m.Health,
)
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    if runtime.draining:
        return JSONResponse({"status": "stopping"}, status_code=503)
    for queue in runtime.queues.values():
        try:
            await runtime.run(queue.store.ping)
        except PerfectQueueError as exc:
            return JSONResponse({"status": "unavailable", "detail": str(exc)}, status_code=503)
    return JSONResponse({"status": "ok"})


# -- queues ----------------------------------------------------------------------------------


@router.get(
    "/queues",
    operation_id="listQueues",
    dependencies=ADMIN,
    summary="Every declared queue with its counts",
    responses=problems(),
)
async def list_queues(runtime: RuntimeDep, request: Request) -> m.QueueList:
    key = key_of(request)
    infos = []
    for name, queue in runtime.queues.items():
        if key is not None and not key.allows("admin", name):
            continue
        infos.append(queue_info(name, await counts_of(queue, runtime)))
    return m.QueueList(queues=infos)


@router.get(
    "/queues/{queue}",
    operation_id="getQueue",
    dependencies=ADMIN,
    summary="One queue's counts",
    responses=problems(404),
)
async def get_queue(queue: QueueDep, runtime: RuntimeDep) -> m.QueueInfo:
    return queue_info(queue.settings.name, await counts_of(queue, runtime))


# -- submit ----------------------------------------------------------------------------------


@router.post(
    "/queues/{queue}/submit",
    operation_id="submitTask",
    dependencies=SUBMIT,
    summary="Submit one task",
    status_code=201,
    responses=problems(404, 409),
)
async def submit(
    body: m.SubmitRequest, queue: QueueDep, runtime: RuntimeDep, traceparent: TraceparentHeader = None
) -> m.Submitted:
    check_data_size(body.data, max_data(runtime))
    await queue.coalesced.submit(new_task(body, header_traceparent(traceparent)))
    queue.longpoll.notify()
    return m.Submitted(id=body.id)


@router.post(
    "/queues/{queue}/submit-batch",
    operation_id="submitTasks",
    dependencies=SUBMIT,
    summary="Submit up to 1,000 tasks; per-task results",
    responses=problems(404),
)
async def submit_batch(
    body: m.SubmitBatchRequest, queue: QueueDep, runtime: RuntimeDep, traceparent: TraceparentHeader = None
) -> m.BatchResult:
    for index, item in enumerate(body.tasks):
        check_data_size(item.data, max_data(runtime), f"tasks[{index}].data")
    default_traceparent = header_traceparent(traceparent)
    tasks: list[NewTask] = []
    rejected: list[tuple[str, PerfectQueueError | None]] = []
    for item in body.tasks:
        try:
            tasks.append(new_task(item, default_traceparent))
        except PerfectQueueError as exc:
            rejected.append((item.id, exc))
    results = await runtime.run(queue.store.submit_many, tasks)
    queue.longpoll.notify()
    return batch_result([t.id for t in tasks], results, rejected)


# -- work ------------------------------------------------------------------------------------


@router.post(
    "/queues/{queue}/poll",
    operation_id="pollTasks",
    dependencies=WORK,
    summary="Lease up to `max` waiting tasks, waiting up to `wait` seconds for one",
    responses=problems(404),
)
async def poll(body: m.PollRequest, queue: QueueDep, runtime: RuntimeDep, request: Request) -> m.PollResponse:
    if body.wait > runtime.settings.max_poll_wait:
        raise InvalidError(f"wait must be at most {runtime.settings.max_poll_wait} seconds")
    alive_time = body.alive_time or queue.settings.alive_time
    wait = 0.0 if runtime.draining else body.wait
    tasks = await queue.longpoll.poll(body.max, alive_time, wait)
    if tasks and wait > 0 and await request.is_disconnected():  # the poller died while it waited
        await queue.longpoll.give_back(tasks)
        tasks = []
    return m.PollResponse(tasks=[m.AcquiredTaskOut.of_acquired(t) for t in tasks])


@router.post(
    "/queues/{queue}/heartbeat",
    operation_id="heartbeatTask",
    dependencies=WORK,
    summary="Extend a lease, optionally replacing the task's data",
    description="`409 cancel_requested`: the lease was extended, but a cancel was requested; stop the "
    "work and call finish, retry or release (each then ends the task as cancelled).",
    responses=problems(404, 409),
    status_code=204,
    response_class=Response,
)
async def heartbeat(body: m.HeartbeatRequest, queue: QueueDep, runtime: RuntimeDep) -> Response:
    check_data_size(body.data, max_data(runtime))
    alive_time = body.alive_time or queue.settings.alive_time
    await runtime.run(queue.store.heartbeat, body.id, lease_of(body.lease), alive_time, body.data)
    return Response(status_code=204)


@router.post(
    "/queues/{queue}/heartbeat-batch",
    operation_id="heartbeatTasks",
    dependencies=WORK,
    summary="Extend up to 1,000 leases; per-task results",
    description="One transaction. A task under `failed` with the code `cancel_requested` had its lease "
    "extended, but a cancel was requested: stop its work and call finish, retry or release. Other "
    "codes are those of heartbeat (`preempted`: finished, gone or taken over).",
    responses=problems(404),
)
async def heartbeat_batch(
    body: m.HeartbeatBatchRequest, queue: QueueDep, runtime: RuntimeDep
) -> m.BatchResult:
    items = [(item.id, lease_of(item.lease)) for item in body.tasks]
    alive_time = body.alive_time or queue.settings.alive_time
    results = await runtime.run(queue.store.heartbeat_many, items, alive_time)
    return batch_result([i for i, _ in items], results)


@router.post(
    "/queues/{queue}/finish",
    operation_id="finishTask",
    dependencies=WORK,
    summary="Finish a leased task",
    description="`409 cancel_requested`: a cancel was requested while the task ran; it ended as cancelled.",
    responses=problems(404, 409),
    status_code=204,
    response_class=Response,
)
async def finish(body: m.LeaseRequest, queue: QueueDep, runtime: RuntimeDep) -> Response:
    await queue.coalesced.finish(body.id, lease_of(body.lease))
    freed(queue)
    return Response(status_code=204)


@router.post(
    "/queues/{queue}/finish-batch",
    operation_id="finishTasks",
    dependencies=WORK,
    summary="Finish up to 1,000 leased tasks; per-task results",
    responses=problems(404),
)
async def finish_batch(body: m.FinishBatchRequest, queue: QueueDep, runtime: RuntimeDep) -> m.BatchResult:
    items = [(item.id, lease_of(item.lease)) for item in body.tasks]
    results = await runtime.run(queue.store.finish_many, items)
    freed(queue)
    return batch_result([i for i, _ in items], results)


@router.post(
    "/queues/{queue}/retry",
    operation_id="retryTask",
    dependencies=WORK,
    summary="Give a leased task back, to be delivered again after `retry_wait` seconds",
    description="Without `retry_wait` the queue's backoff decides. A task whose attempts are used up "
    "(`max_attempts`) becomes dead instead. `error` is recorded as the task's `last_error`.",
    responses=problems(404, 409),
    status_code=204,
    response_class=Response,
)
async def retry(body: m.RetryRequest, queue: QueueDep, runtime: RuntimeDep) -> Response:
    wait = await runtime.run(queue.store.retry, body.id, lease_of(body.lease), body.retry_wait, body.error)
    if wait == 0:
        queue.longpoll.notify()
    return Response(status_code=204)


@router.post(
    "/queues/{queue}/release",
    operation_id="releaseTask",
    dependencies=WORK,
    summary="Give a leased task back, deliverable at once",
    responses=problems(404, 409),
    status_code=204,
    response_class=Response,
)
async def release(body: m.LeaseRequest, queue: QueueDep, runtime: RuntimeDep) -> Response:
    await runtime.run(queue.store.release, body.id, lease_of(body.lease))
    queue.longpoll.notify()
    return Response(status_code=204)


@router.post(
    "/queues/{queue}/force-finish",
    operation_id="forceFinishTask",
    dependencies=ADMIN,
    summary="Finish a task regardless of any lease, or a dead task (operator)",
    responses=problems(404, 409),
    status_code=204,
    response_class=Response,
)
async def force_finish(body: m.ForceFinishRequest, queue: QueueDep, runtime: RuntimeDep) -> Response:
    await runtime.run(queue.store.force_finish, body.id)
    return Response(status_code=204)


@router.post(
    "/queues/{queue}/force-release",
    operation_id="forceReleaseTask",
    dependencies=ADMIN,
    summary="Make a task deliverable now, regardless of any lease (operator's retry now)",
    description="The holder's lease ends: its next call answers `409 preempted`. A waiting task keeps "
    "its place; a running or scheduled one becomes due now. `409 already_finished` if it ended.",
    responses=problems(404, 409),
    status_code=204,
    response_class=Response,
)
async def force_release(body: m.TaskRequest, queue: QueueDep, runtime: RuntimeDep) -> Response:
    await runtime.run(queue.store.force_release, body.id)
    queue.longpoll.notify()
    return Response(status_code=204)


@router.post(
    "/queues/{queue}/cancel",
    operation_id="cancelTask",
    dependencies=CANCEL,
    summary="Cancel a task: at once if nobody holds it, else at its holder's next call",
    description="A waiting task (or one scheduled for later) ends as cancelled at once. A running one "
    "gets `cancel_requested`: its holder's next heartbeat answers `409 cancel_requested`, and the task "
    "ends as cancelled when the holder finishes, retries or releases it (or its lease expires). Answers "
    "the task as it is now; `409 already_finished` if it had ended.",
    responses=problems(404, 409),
)
async def cancel(body: m.TaskRequest, queue: QueueDep, runtime: RuntimeDep) -> m.TaskOut:
    return m.TaskOut.of(await runtime.run(queue.store.cancel, body.id))


@router.post(
    "/queues/{queue}/requeue",
    operation_id="requeueTask",
    dependencies=ADMIN,
    summary="Make a dead task waiting again, its attempts reset (operator)",
    description="`409 not_dead` for a waiting or running task; `409 already_finished` for a finished or "
    "cancelled one.",
    responses=problems(404, 409),
)
async def requeue(body: m.TaskRequest, queue: QueueDep, runtime: RuntimeDep) -> m.TaskOut:
    task = m.TaskOut.of(await runtime.run(queue.store.requeue, body.id))
    queue.longpoll.notify()
    return task


# -- read ------------------------------------------------------------------------------------


@router.get(
    "/queues/{queue}/tasks",
    operation_id="listTasks",
    dependencies=ADMIN,
    summary="Tasks, filtered, one page at a time (in id order, or in due-time order on an index)",
    description="`order=due` lists in due-time order on the timeout index, so that a page costs the "
    "same however rare its status or user is (the dashboard's order). A page shorter than `limit` may "
    "still have a `next_cursor`: the filters no index holds (`type`, `leased`) are applied to a bounded "
    "number of rows a page.",
    responses=problems(404),
)
async def list_tasks(
    queue: QueueDep,
    runtime: RuntimeDep,
    status: Annotated[TaskStatus | None, Query()] = None,
    type: Annotated[str | None, Query(max_length=255)] = None,
    user: Annotated[str | None, Query(max_length=255)] = None,
    prefix: Annotated[str | None, Query(max_length=255, description="Only ids that start with this")] = None,
    leased: Annotated[
        bool | None,
        Query(
            description="true: only tasks a worker holds; false: only tasks nobody holds (with "
            "status=running: those scheduled for later by run_at or retry_wait)"
        ),
    ] = None,
    order: Annotated[Literal["id", "due"], Query(description="id, or due time (then id)")] = "id",
    cursor: Annotated[str | None, Query(max_length=300, description="next_cursor of the page before")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> m.TaskPage:
    def work() -> Any:
        return queue.store.list(
            status=status,
            task_type=type,
            user=user,
            prefix=prefix,
            leased=leased,
            order=order,
            cursor=cursor,
            limit=limit,
        )

    page = await runtime.run(work)
    return m.TaskPage(tasks=[m.TaskOut.of(t) for t in page.tasks], next_cursor=page.cursor)


@router.get(
    "/queues/{queue}/tasks/{task_id:path}",
    operation_id="getTask",
    dependencies=ANY,
    summary="One task",
    responses=problems(404),
)
async def get_task(task_id: str, queue: QueueDep, runtime: RuntimeDep) -> m.TaskOut:
    return m.TaskOut.of(await runtime.run(queue.store.get, task_id))
