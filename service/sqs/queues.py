"""The queue-level actions: GetQueueUrl, ListQueues, CreateQueue, GetQueueAttributes, PurgeQueue.

Queues are the service's declared queues; the SQS endpoint creates none (CreateQueue answers the
URL of a declared queue and refuses any other name with UnsupportedOperation).
"""

from __future__ import annotations

import contextlib
import json

from ...errors import AlreadyFinishedError, NotFoundError, PerfectQueueError
from ..config import Scope_
from ..runtime import QueueRuntime
from ..store import TaskStatus
from .errors import SqsError, from_queue_error
from .params import Context, Params, Result, integer, names, text

ANY: tuple[Scope_, ...] = ("submit", "work", "admin")
RETENTION = 1_209_600
"""MessageRetentionPeriod as answered: SQS's longest (a task is kept until it is finished)."""


async def get_queue_url(ctx: Context, params: Params) -> Result:
    name = text(params, "QueueName", required=True) or ""
    ctx.queue(name, ANY, "read")
    return {"QueueUrl": ctx.queue_url(name)}


async def create_queue(ctx: Context, params: Params) -> Result:
    name = text(params, "QueueName", required=True) or ""
    if name not in ctx.runtime.queues:
        raise SqsError(
            "UnsupportedOperation",
            f"Queues are declared in the service's configuration; {name!r} is not one of them.",
        )
    return await get_queue_url(ctx, params)


async def list_queues(ctx: Context, params: Params) -> Result:
    prefix = text(params, "QueueNamePrefix") or ""
    limit = integer(params, "MaxResults", 1, 1000, 1000) or 1000
    start = text(params, "NextToken") or ""
    visible = sorted(
        n for n in ctx.runtime.queues if n.startswith(prefix) and ctx.allows(ANY, n) and n > start
    )
    result: Result = {"QueueUrls": [ctx.queue_url(n) for n in visible[:limit]]}
    if "MaxResults" in params and len(visible) > limit:
        result["NextToken"] = visible[limit - 1]
    return result


async def get_queue_attributes(ctx: Context, queue: QueueRuntime, params: Params) -> Result:
    wanted = names(params, "AttributeNames")
    every = "All" in wanted
    values = await attributes(ctx, queue, every or bool({*wanted} & COUNTED))
    unknown = [n for n in wanted if n != "All" and n not in values and n not in OPTIONAL]
    if unknown:
        raise SqsError("InvalidAttributeName", f"Unknown Attribute {unknown[0]}.")
    chosen = {k: v for k, v in values.items() if every or k in wanted}
    return {"Attributes": chosen} if chosen else {}


COUNTED = {
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
}
OPTIONAL = {"RedrivePolicy", "CreatedTimestamp", "LastModifiedTimestamp", "Policy", "KmsMasterKeyId"}
"""Attribute names SQS knows that a queue here may not have: asked for, they are left out."""


async def attributes(ctx: Context, queue: QueueRuntime, counted: bool) -> dict[str, str]:
    settings = queue.settings
    values = {
        "QueueArn": ctx.arn(queue.name),
        "VisibilityTimeout": str(settings.alive_time),
        "MaximumMessageSize": str(queue.service.max_data_bytes),
        "MessageRetentionPeriod": str(RETENTION),
        "DelaySeconds": "0",
        "ReceiveMessageWaitTimeSeconds": "0",
        "SqsManagedSseEnabled": "false",
    }
    if settings.max_attempts is not None:
        dead = {
            "deadLetterTargetArn": ctx.arn(queue.name + "-dead"),
            "maxReceiveCount": settings.max_attempts,
        }
        values["RedrivePolicy"] = json.dumps(dead)
    if counted:
        try:
            counts = await queue.counts()
        except PerfectQueueError as exc:
            raise from_queue_error(exc) from None
        values["ApproximateNumberOfMessages"] = str(counts.waiting)
        values["ApproximateNumberOfMessagesNotVisible"] = str(counts.leased)
        values["ApproximateNumberOfMessagesDelayed"] = str(counts.scheduled)
    return values


async def purge_queue(_ctx: Context, queue: QueueRuntime, _params: Params) -> Result:
    """Every waiting, scheduled and leased task finished (force-finish), page by page, at most
    PURGE_LIMIT per request: past it, PurgeQueueInProgress asks for another call."""
    purged = 0
    try:
        for status in (TaskStatus.WAITING, TaskStatus.RUNNING):
            cursor: str | None = None
            while purged < PURGE_LIMIT:
                page = await queue.list_tasks(status=status, cursor=cursor, limit=PAGE)
                for task in page.tasks:
                    await force_finished(queue, task.id)
                purged, cursor = purged + len(page.tasks), page.cursor
                if cursor is None:
                    break
            if cursor is not None:
                raise SqsError(
                    "PurgeQueueInProgress",
                    f"{purged} messages were purged and more remain: call PurgeQueue again.",
                    403,
                )
    except PerfectQueueError as exc:
        raise from_queue_error(exc) from None
    return {}


PAGE = 500
PURGE_LIMIT = 10_000
"""A purge's work per request is bounded (one force-finish per task)."""


async def force_finished(queue: QueueRuntime, task_id: str) -> None:
    with contextlib.suppress(AlreadyFinishedError, NotFoundError):  # ended meanwhile
        await queue.force_finish(task_id)
