"""SendMessage and SendMessageBatch: a message becomes a task, submitted through the queue's
runtime (merged with concurrent submits, waking the long-polls, bounded by max_data_bytes)."""

from __future__ import annotations

import time
import uuid

from ...errors import AlreadyExistsError, PerfectQueueError
from ..limits import check_data_size
from ..runtime import QueueRuntime
from ..store import NewTask
from . import messages
from .errors import SqsError, from_queue_error, invalid
from .params import Context, Params, Result, entries, failure, integer, text

MAX_DELAY = 900


def new_task(params: Params) -> NewTask:
    """The task a SendMessage (or a batch's entry) asks for; SqsError if it cannot be one."""
    body = messages.check_body(params.get("MessageBody"))
    attributes = messages.check_attributes(params.get("MessageAttributes"))
    task_type, max_running = messages.type_and_limit(attributes)
    delay = integer(params, "DelaySeconds", 0, MAX_DELAY, 0) or 0
    dedup = text(params, "MessageDeduplicationId")
    try:
        return NewTask(
            id=dedup or str(uuid.uuid4()),
            type=task_type,
            data=messages.task_data(body, attributes),
            user=text(params, "MessageGroupId"),
            max_running=max_running,
            run_at=int(time.time()) + delay if delay else None,
        )
    except PerfectQueueError as exc:
        raise invalid(f"One or more parameters are invalid. Reason: {exc}.") from None


def sent(params: Params, task: NewTask) -> Result:
    """What a successful send answers: the message id and the digests the SDK checks."""
    body, attributes = task.data["body"], task.data.get("attributes") or {}
    result = {"MessageId": task.id, "MD5OfMessageBody": messages.body_md5(body)}
    if attributes:
        result["MD5OfMessageAttributes"] = messages.attributes_md5(attributes)
    return result


def deduplicated(params: Params, error: PerfectQueueError | None) -> bool:
    """Done, or a repeated send of a deduplication id: idempotent, the first message is kept."""
    return error is None or (isinstance(error, AlreadyExistsError) and "MessageDeduplicationId" in params)


async def send_message(_ctx: Context, queue: QueueRuntime, params: Params) -> Result:
    task = new_task(params)
    try:
        await queue.submit(task)
    except PerfectQueueError as exc:
        if not deduplicated(params, exc):
            raise from_queue_error(exc) from None
    return sent(params, task)


async def send_message_batch(_ctx: Context, queue: QueueRuntime, params: Params) -> Result:
    given = entries(params, "SendMessageBatch")
    failed: list[Result] = []
    accepted: list[tuple[Params, NewTask]] = []
    for entry in given:
        try:
            task = new_task(entry)
            check_data_size(task.data, queue.service.max_data_bytes)  # refused alone, not the batch
        except (SqsError, PerfectQueueError) as exc:
            failed.append(failure(entry["Id"], exc))
        else:
            accepted.append((entry, task))
    outcomes = await queue.submit_many([task for _, task in accepted]) if accepted else []
    successful: list[Result] = []
    for (entry, task), error in zip(accepted, outcomes, strict=True):
        if deduplicated(entry, error):
            successful.append({"Id": entry["Id"], **sent(entry, task)})
        else:
            assert error is not None
            failed.append(failure(entry["Id"], error))
    return {"Successful": successful, "Failed": failed}
