"""ReceiveMessage, DeleteMessage and ChangeMessageVisibility (and their batches): poll, finish and
heartbeat or release through the queue's runtime, fenced by the lease each receipt handle carries.

A receipt whose lease another receive has since taken over deletes nothing and changes nothing:
the call answers ReceiptHandleIsInvalid (Amazon SQS would answer success and might or might not
delete). Deleting a message that is already deleted, or that a cancel ended, succeeds.
"""

from __future__ import annotations

from collections import defaultdict

from ...errors import (
    AlreadyFinishedError,
    CancelRequestedError,
    NotFoundError,
    PerfectQueueError,
)
from ..runtime import QueueRuntime
from ..store import AcquiredTask, Task
from . import messages, receipts
from .errors import SqsError, from_queue_error, receipt_invalid
from .params import Context, Params, Result, entries, failure, integer, names, text

MAX_VISIBILITY = 43_200
MAX_WAIT = 20
SYSTEM_ATTRIBUTES = (
    "ApproximateReceiveCount",
    "ApproximateFirstReceiveTimestamp",
    "SentTimestamp",
    "MessageGroupId",
)
DELETED_ALREADY = (AlreadyFinishedError, NotFoundError, CancelRequestedError)
"""A delete meeting these succeeds: the message is gone (finished, cleaned up, or cancelled)."""


async def receive_message(ctx: Context, queue: QueueRuntime, params: Params) -> Result:
    count = integer(params, "MaxNumberOfMessages", 1, 10, 1) or 1
    wait = min(integer(params, "WaitTimeSeconds", 0, MAX_WAIT, 0) or 0, queue.service.max_poll_wait)
    visibility = integer(params, "VisibilityTimeout", 0, MAX_VISIBILITY)
    wanted = names(params, "AttributeNames", "MessageSystemAttributeNames")
    attribute_names = names(params, "MessageAttributeNames")
    alive = None if visibility is None else max(visibility, 1)  # a lease lasts at least a second
    try:
        tasks = await queue.poll(count, alive, wait, ctx.gone)
    except PerfectQueueError as exc:
        raise from_queue_error(exc) from None
    alive_time = alive or queue.settings.alive_time
    if not tasks:
        return {}  # as Amazon SQS answers: no Messages member at all
    return {"Messages": [message(queue, t, alive_time, wanted, attribute_names) for t in tasks]}


def message(
    queue: QueueRuntime, acquired: AcquiredTask, alive: int, wanted: list[str], attribute_names: list[str]
) -> Result:
    task = acquired.task
    body, attributes = messages.as_message(task)
    result: Result = {
        "MessageId": task.id,
        "ReceiptHandle": receipts.encode(queue.name, task.id, acquired.lease),
        "MD5OfBody": messages.body_md5(body),
        "Body": body,
    }
    system = system_attributes(task, task.timeout - alive, wanted)
    if system:
        result["Attributes"] = system
    chosen = messages.selected(attributes, attribute_names)
    if chosen:
        result["MessageAttributes"] = chosen
        result["MD5OfMessageAttributes"] = messages.attributes_md5(chosen)
    return result


def system_attributes(task: Task, received: int, wanted: list[str]) -> dict[str, str]:
    every = "All" in wanted
    values = {
        "ApproximateReceiveCount": str(task.attempts),
        "ApproximateFirstReceiveTimestamp": str(received * 1000),
        "SentTimestamp": str((task.created_at or 0) * 1000),
        "MessageGroupId": task.user,
    }
    return {k: v for k, v in values.items() if v is not None and (every or k in wanted)}


async def delete_message(_ctx: Context, queue: QueueRuntime, params: Params) -> Result:
    task_id, lease = receipts.decode(text(params, "ReceiptHandle", required=True), queue.name)
    try:
        await queue.finish(task_id, lease)
    except DELETED_ALREADY:
        pass
    except PerfectQueueError as exc:
        raise refusal(exc) from None
    return {}


async def delete_message_batch(_ctx: Context, queue: QueueRuntime, params: Params) -> Result:
    failed: list[Result] = []
    held: list[tuple[str, tuple[str, int]]] = []
    for entry in entries(params, "DeleteMessageBatch"):
        try:
            held.append((entry["Id"], receipts.decode(entry.get("ReceiptHandle"), queue.name)))
        except SqsError as exc:
            failed.append(failure(entry["Id"], exc))
    outcomes = await queue.finish_many([item for _, item in held]) if held else []
    successful: list[Result] = []
    for (entry_id, _), error in zip(held, outcomes, strict=True):
        if error is None or isinstance(error, DELETED_ALREADY):
            successful.append({"Id": entry_id})
        else:
            failed.append(failure(entry_id, refusal(error)))
    return {"Successful": successful, "Failed": failed}


async def change_visibility(_ctx: Context, queue: QueueRuntime, params: Params) -> Result:
    task_id, lease = receipts.decode(text(params, "ReceiptHandle", required=True), queue.name)
    timeout = integer(params, "VisibilityTimeout", 0, MAX_VISIBILITY)
    if timeout is None:
        raise SqsError("MissingParameter", "The request must contain the parameter VisibilityTimeout.")
    try:
        await (queue.release(task_id, lease) if timeout == 0 else queue.heartbeat(task_id, lease, timeout))
    except CancelRequestedError:
        pass  # extended (or ended cancelled by a release): nothing for an SQS consumer to do
    except PerfectQueueError as exc:
        raise refusal(exc) from None
    return {}


async def change_visibility_batch(_ctx: Context, queue: QueueRuntime, params: Params) -> Result:
    """Entries grouped by their new timeout: one heartbeat-batch per timeout, one release-batch for 0."""
    failed: list[Result] = []
    groups: dict[int, list[tuple[str, tuple[str, int]]]] = defaultdict(list)
    for entry in entries(params, "ChangeMessageVisibilityBatch"):
        try:
            held = receipts.decode(entry.get("ReceiptHandle"), queue.name)
            timeout = integer(entry, "VisibilityTimeout", 0, MAX_VISIBILITY, 0) or 0
        except SqsError as exc:
            failed.append(failure(entry["Id"], exc))
        else:
            groups[timeout].append((entry["Id"], held))
    successful: list[Result] = []
    for timeout, group in groups.items():
        for entry_id, error in zip(
            [i for i, _ in group], await visibility_group(queue, timeout, group), strict=True
        ):
            if error is None or isinstance(error, CancelRequestedError):
                successful.append({"Id": entry_id})
            else:
                failed.append(failure(entry_id, refusal(error)))
    return {"Successful": successful, "Failed": failed}


async def visibility_group(
    queue: QueueRuntime, timeout: int, group: list[tuple[str, tuple[str, int]]]
) -> list[PerfectQueueError | None]:
    leases = [held for _, held in group]
    return await (queue.heartbeat_many(leases, timeout) if timeout else queue.release_many(leases))


def refusal(error: PerfectQueueError) -> SqsError:
    """A call with a receipt the store refused: the lease is no longer the message's."""
    if isinstance(error, AlreadyFinishedError | NotFoundError):
        return receipt_invalid(": the message was deleted")
    if error.code == "preempted":
        return receipt_invalid(": its visibility timeout ended and the message was received again")
    return from_queue_error(error)
