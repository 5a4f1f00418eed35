"""The HTTP endpoints: each translates a request into one store call and nothing more."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from ..errors import InvalidError, PerfectQueueError, UnknownQueueError
from . import models as m
from .limits import check_data_size
from .security import key_of, require
from .store import NewTask, TaskStatus
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


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def queue_of(request: Request, queue: Annotated[str, Path(max_length=64)]) -> Queue:
    found = runtime_of(request).queues.get(queue)
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


def new_task(body: m.SubmitRequest) -> NewTask:
    return NewTask(**body.model_dump())


def batch_result(
    ids: list[str],
    results: list[PerfectQueueError | None],
    rejected: list[tuple[str, PerfectQueueError | None]] | None = None,
) -> m.BatchResult:
    """SQS-style lists from per-item outcomes (None: done); ``rejected`` never reached the store."""
    outcomes = [*(rejected or []), *zip(ids, results, strict=True)]
    return m.BatchResult(
        successful=[m.Submitted(id=i) for i, err in outcomes if err is None],
        failed=[m.Failure(id=i, code=err.code, detail=str(err)) for i, err in outcomes if err is not None],
    )


def max_data(runtime: Runtime) -> int:
    return runtime.settings.max_data_bytes


# -- health ----------------------------------------------------------------------------------


@health.get("/livez", operation_id="livez", summary="The process answers", response_model_exclude_none=True)
async def livez() -> m.Health:
    return m.Health(status="ok")


@health.get(
    "/readyz",
    operation_id="readyz",
    summary="The databases answer and the service is not stopping",
    response_model=m.Health,
)
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    if runtime.draining:
        return JSONResponse({"status": "stopping"}, status_code=503)
    for queue in runtime.queues.values():
        try:
            await runtime.run(queue.store.counts)
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
        counts = await runtime.run(queue.store.counts)
        infos.append(
            m.QueueInfo(name=name, waiting=counts.waiting, running=counts.running, finished=counts.finished)
        )
    return m.QueueList(queues=infos)


@router.get(
    "/queues/{queue}",
    operation_id="getQueue",
    dependencies=ADMIN,
    summary="One queue's counts",
    responses=problems(404),
)
async def get_queue(queue: QueueDep, runtime: RuntimeDep) -> m.QueueInfo:
    counts = await runtime.run(queue.store.counts)
    return m.QueueInfo(
        name=queue.settings.name, waiting=counts.waiting, running=counts.running, finished=counts.finished
    )


# -- submit ----------------------------------------------------------------------------------


@router.post(
    "/queues/{queue}/submit",
    operation_id="submitTask",
    dependencies=SUBMIT,
    summary="Submit one task",
    status_code=201,
    responses=problems(404, 409),
)
async def submit(body: m.SubmitRequest, queue: QueueDep, runtime: RuntimeDep) -> m.Submitted:
    check_data_size(body.data, max_data(runtime))
    await runtime.run(queue.store.submit, new_task(body))
    queue.longpoll.notify()
    return m.Submitted(id=body.id)


@router.post(
    "/queues/{queue}/submit-batch",
    operation_id="submitTasks",
    dependencies=SUBMIT,
    summary="Submit up to 1,000 tasks; per-task results",
    responses=problems(404),
)
async def submit_batch(body: m.SubmitBatchRequest, queue: QueueDep, runtime: RuntimeDep) -> m.BatchResult:
    for index, item in enumerate(body.tasks):
        check_data_size(item.data, max_data(runtime), f"tasks[{index}].data")
    tasks: list[NewTask] = []
    rejected: list[tuple[str, PerfectQueueError | None]] = []
    for item in body.tasks:
        try:
            tasks.append(new_task(item))
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
    "/queues/{queue}/finish",
    operation_id="finishTask",
    dependencies=WORK,
    summary="Finish a leased task",
    responses=problems(404, 409),
    status_code=204,
    response_class=Response,
)
async def finish(body: m.LeaseRequest, queue: QueueDep, runtime: RuntimeDep) -> Response:
    await runtime.run(queue.store.finish, body.id, lease_of(body.lease))
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
    return batch_result([i for i, _ in items], results)


@router.post(
    "/queues/{queue}/retry",
    operation_id="retryTask",
    dependencies=WORK,
    summary="Give a leased task back, to be delivered again after `retry_wait` seconds",
    responses=problems(404, 409),
    status_code=204,
    response_class=Response,
)
async def retry(body: m.RetryRequest, queue: QueueDep, runtime: RuntimeDep) -> Response:
    retry_wait = queue.settings.retry_wait if body.retry_wait is None else body.retry_wait
    await runtime.run(queue.store.retry, body.id, lease_of(body.lease), retry_wait)
    if retry_wait == 0:
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
    summary="Finish a task regardless of any lease (operator)",
    responses=problems(404, 409),
    status_code=204,
    response_class=Response,
)
async def force_finish(body: m.ForceFinishRequest, queue: QueueDep, runtime: RuntimeDep) -> Response:
    await runtime.run(queue.store.force_finish, body.id)
    return Response(status_code=204)


# -- read ------------------------------------------------------------------------------------


@router.get(
    "/queues/{queue}/tasks",
    operation_id="listTasks",
    dependencies=ADMIN,
    summary="Tasks in id order, filtered, one page at a time",
    responses=problems(404),
)
async def list_tasks(
    queue: QueueDep,
    runtime: RuntimeDep,
    status: Annotated[TaskStatus | None, Query()] = None,
    type: Annotated[str | None, Query(max_length=255)] = None,
    user: Annotated[str | None, Query(max_length=255)] = None,
    cursor: Annotated[str | None, Query(max_length=255, description="next_cursor of the page before")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> m.TaskPage:
    page = await runtime.run(
        lambda: queue.store.list(status=status, task_type=type, user=user, cursor=cursor, limit=limit)
    )
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
