"""The HTTP endpoints: each translates a request into one call of its queue's runtime, and the
answer back. The operations that take a JSON body are built from their declarations
(:data:`.operations.OPERATIONS`), which the hot operations' short path is built from too."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from inspect import Parameter, Signature
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.convertors import PathConvertor, register_url_convertor

from ..errors import PerfectQueueError, UnknownQueueError
from . import models as m
from .config import Scope_
from .operations import ADMIN, OPERATIONS, Call, Operation, traceparent_of
from .problems import RETRY_AFTER_SECONDS, responses
from .runtime import QueueRuntime, Runtime
from .security import key_of, require
from .store import Counts, TaskStatus

health = APIRouter(tags=["health"])
router = APIRouter(prefix="/v1", tags=["queue"])

ANY: tuple[Scope_, ...] = ("submit", "work", "admin")  # one task's status: producers and workers may read it


async def runtime_of(request: Request) -> Runtime:  # async: a plain def runs in a thread
    runtime: Runtime = request.app.state.runtime
    return runtime


QUEUE_NAME = Path(
    description="A declared queue's name (at most 64 characters); any other name is 404 unknown_queue",
    json_schema_extra={"maxLength": 64},  # documented, not checked: a longer name is unknown too
)


async def queue_of(request: Request, queue: Annotated[str, QUEUE_NAME]) -> QueueRuntime:
    """The declared queue ``queue``; any other name, whatever its length, is 404 ``unknown_queue``."""
    found = (await runtime_of(request)).queues.get(queue)
    if found is None:
        name = queue if len(queue) <= 64 else f"{queue[:64]}…"
        raise UnknownQueueError(f"queue {name!r} is not declared in this service's configuration")
    return found


RuntimeDep = Annotated[Runtime, Depends(runtime_of)]
QueueDep = Annotated[QueueRuntime, Depends(queue_of)]
TraceparentHeader = Annotated[
    str | None,
    Header(
        description="W3C trace context (`00-<32 hex>-<16 hex>-<2 hex>`) for the submitted tasks that do "
        "not give their own `traceparent`",
    ),
]


def administered(runtime: Runtime, request: Request, only: str | None = None) -> list[QueueRuntime]:
    """The queues (or the one named ``only``) that the request's key may administer."""
    key = key_of(request)
    return [
        queue
        for name, queue in runtime.queues.items()
        if only in (None, name) and (key is None or key.allows("admin", name))
    ]


def queue_info(name: str, counts: Counts) -> m.QueueInfo:
    return m.QueueInfo(
        name=name,
        waiting=counts.waiting,
        leased=counts.leased,
        scheduled=counts.scheduled,
        finished=counts.finished,
        dead=counts.dead,
        cancelled=counts.cancelled,
        dead_last_hour=counts.dead_last_hour,
        oldest_waiting_age=counts.oldest_waiting_age,
        paused=counts.paused_at is not None,
        paused_at=m.instant(counts.paused_at),
        capped=list(counts.capped),
    )


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
    """No key is needed, so a database that does not answer is named in general terms only; its
    error (host, user, the driver's message) is in the service's log."""
    if runtime.draining:
        return JSONResponse({"status": "stopping"}, status_code=503)
    for queue in runtime.queues.values():
        try:
            await queue.ping()
        except PerfectQueueError as exc:
            logging.getLogger("perfectqueue.service").warning("readyz: queue %s: %s", queue.name, exc)
            return JSONResponse(
                {"status": "unavailable", "detail": "a database did not answer"},
                status_code=503,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
    return JSONResponse({"status": "ok"})


# a load balancer's probe may be a HEAD: the status and headers of the GET, without its body
@health.head("/livez", include_in_schema=False)
@health.head("/healthz", include_in_schema=False)
async def livez_head() -> Response:
    return headers_only(JSONResponse((await livez()).model_dump(exclude_none=True)))


@health.head("/readyz", include_in_schema=False)
async def readyz_head(runtime: RuntimeDep) -> Response:
    return headers_only(await readyz(runtime))


def headers_only(response: Response) -> Response:
    return Response(status_code=response.status_code, headers=dict(response.headers))


# -- queues ----------------------------------------------------------------------------------


@router.get(
    "/queues",
    operation_id="listQueues",
    dependencies=[require(*ADMIN)],
    summary="Every declared queue with its counts",
    responses=responses(),
)
async def list_queues(runtime: RuntimeDep, request: Request) -> m.QueueList:
    return m.QueueList(queues=[queue_info(q.name, await q.counts()) for q in administered(runtime, request)])


@router.get(
    "/queues/{queue}",
    operation_id="getQueue",
    dependencies=[require(*ADMIN)],
    summary="One queue's counts",
    responses=responses(404),
)
async def get_queue(queue: QueueDep) -> m.QueueInfo:
    return queue_info(queue.name, await queue.counts())


@router.post(
    "/queues/{queue}/pause",
    operation_id="pauseQueue",
    dependencies=[require(*ADMIN)],
    summary="Pause the queue: polls get no task (every replica within a second); submits, heartbeats, "
    "finishes and the operator's calls go on. Answers the queue's counts",
    responses=responses(404),
)
async def pause_queue(queue: QueueDep) -> m.QueueInfo:
    await queue.pause()
    return queue_info(queue.name, await queue.counts())


@router.post(
    "/queues/{queue}/resume",
    operation_id="resumeQueue",
    dependencies=[require(*ADMIN)],
    summary="Resume a paused queue (one not paused stays so). Answers the queue's counts",
    responses=responses(404),
)
async def resume_queue(queue: QueueDep) -> m.QueueInfo:
    await queue.resume()
    return queue_info(queue.name, await queue.counts())


# -- the operations with a body ----------------------------------------------------------------


def endpoint(operation: Operation[Any]) -> Callable[..., Awaitable[Any]]:
    """The FastAPI endpoint of ``operation``: its signature tells FastAPI what to parse."""

    async def answer(body: Any, queue: QueueRuntime, request: Request, traceparent: str | None = None) -> Any:
        call = Call(traceparent_of(traceparent), request.is_disconnected)
        result = await operation.handler(queue, body, call)
        return Response(status_code=204) if result is None else result

    parameters = [
        Parameter("body", Parameter.KEYWORD_ONLY, annotation=operation.body),
        Parameter("queue", Parameter.KEYWORD_ONLY, annotation=QueueDep),
        Parameter("request", Parameter.KEYWORD_ONLY, annotation=Request),
    ]
    if operation.traceparent:
        header = Parameter("traceparent", Parameter.KEYWORD_ONLY, default=None, annotation=TraceparentHeader)
        parameters.append(header)
    answer.__signature__ = Signature(parameters)  # type: ignore[attr-defined]
    return answer


for _operation in OPERATIONS:
    router.add_api_route(
        _operation.path.removeprefix(router.prefix),
        endpoint(_operation),
        methods=["POST"],
        operation_id=_operation.id,
        dependencies=[require(*_operation.scopes)],
        summary=_operation.summary,
        description=_operation.description or "",
        status_code=_operation.status,
        response_model=_operation.response,
        response_class=JSONResponse if _operation.response else Response,
        responses=responses(*_operation.errors),
    )


# -- read ------------------------------------------------------------------------------------


@router.get(
    "/queues/{queue}/tasks",
    operation_id="listTasks",
    dependencies=[require(*ADMIN)],
    summary="Tasks, filtered, one page at a time (in id order, or in due-time order on an index)",
    description="`order=due` lists in due-time order on the timeout index, so that a page costs the "
    "same however rare its status or user is (the dashboard's order). A page shorter than `limit` may "
    "still have a `next_cursor`: the filters no index holds (`type`, `leased`) are applied to a bounded "
    "number of rows a page. The filters match any value a table may hold (one shared with the original "
    "may hold ids and users a submit refuses); a cursor no listing returned (in due order "
    "`<timeout>:<id>`, the timeout in ASCII digits up to 2147483647) is `422 invalid`.",
    responses=responses(404),
)
async def list_tasks(
    queue: QueueDep,
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
    include: Annotated[
        Literal["data"] | None,
        Query(description="data: each task's data too (the page then stops at max_response_bytes of data)"),
    ] = None,
) -> m.TaskPage:
    page = await queue.list_tasks(
        status=status,
        task_type=type,
        user=user,
        prefix=prefix,
        leased=leased,
        order=order,
        cursor=cursor,
        limit=limit,
        with_data=include == "data",
    )
    listed = [m.ListedTask.listed(task, include == "data") for task in page.tasks]
    return m.TaskPage(tasks=listed, next_cursor=page.cursor)


class AnyId(PathConvertor):
    """The rest of the path, line breaks included (an id another writer stored may hold one;
    Starlette's ``path`` stops at a newline)."""

    regex = "(?s:.*)"


register_url_convertor("task_id", AnyId())


@router.get(
    "/queues/{queue}/tasks/{task_id:task_id}",
    operation_id="getTask",
    dependencies=[require(*ANY)],
    summary="One task",
    responses=responses(404),
)
async def get_task(task_id: str, queue: QueueDep) -> m.TaskOut:
    return m.TaskOut.of(await queue.get(task_id))
