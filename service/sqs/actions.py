"""The SQS actions served, declared once: what each needs of the caller's key, and its handler.

Which scope each action needs (the bearer keys' scopes):

- ``submit``: SendMessage, SendMessageBatch;
- ``work``: ReceiveMessage, DeleteMessage(Batch), ChangeMessageVisibility(Batch);
- ``admin``: PurgeQueue;
- any scope on the queue: GetQueueUrl, CreateQueue (of a declared queue), GetQueueAttributes;
  ListQueues lists the queues the key has any scope on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..config import Scope_
from ..runtime import QueueRuntime
from . import queues, receiving, sending
from .errors import SqsError
from .params import Context, Params, Result, queue_name_of

OnQueue = Callable[[Context, QueueRuntime, Params], Awaitable[Result]]
Plain = Callable[[Context, Params], Awaitable[Result]]

SUBMIT: tuple[Scope_, ...] = ("submit",)
WORK: tuple[Scope_, ...] = ("work",)
ADMIN: tuple[Scope_, ...] = ("admin",)


@dataclass(frozen=True, slots=True)
class Action:
    """An action on the queue its QueueUrl names (``on_queue``), or on the service (``plain``,
    which checks the key itself)."""

    scopes: tuple[Scope_, ...]
    on_queue: OnQueue | None = None
    plain: Plain | None = None


ACTIONS: dict[str, Action] = {
    "GetQueueUrl": Action(queues.ANY, plain=queues.get_queue_url),
    "CreateQueue": Action(queues.ANY, plain=queues.create_queue),
    "ListQueues": Action(queues.ANY, plain=queues.list_queues),
    "GetQueueAttributes": Action(queues.ANY, on_queue=queues.get_queue_attributes),
    "PurgeQueue": Action(ADMIN, on_queue=queues.purge_queue),
    "SendMessage": Action(SUBMIT, on_queue=sending.send_message),
    "SendMessageBatch": Action(SUBMIT, on_queue=sending.send_message_batch),
    "ReceiveMessage": Action(WORK, on_queue=receiving.receive_message),
    "DeleteMessage": Action(WORK, on_queue=receiving.delete_message),
    "DeleteMessageBatch": Action(WORK, on_queue=receiving.delete_message_batch),
    "ChangeMessageVisibility": Action(WORK, on_queue=receiving.change_visibility),
    "ChangeMessageVisibilityBatch": Action(WORK, on_queue=receiving.change_visibility_batch),
}

UNSUPPORTED = frozenset({
    "DeleteQueue", "SetQueueAttributes", "AddPermission", "RemovePermission", "TagQueue", "UntagQueue",
    "ListQueueTags", "ListDeadLetterSourceQueues", "StartMessageMoveTask", "CancelMessageMoveTask",
    "ListMessageMoveTasks",
})  # fmt: skip
"""Actions of Amazon SQS that this endpoint does not serve: UnsupportedOperation."""


async def dispatch(ctx: Context, name: str, params: Params) -> Result:
    """Run the action ``name``; SqsError for an action not served or a request refused."""
    action = ACTIONS.get(name)
    if action is None:
        if name in UNSUPPORTED:
            raise SqsError("UnsupportedOperation", f"The action {name} is not supported by this endpoint.")
        raise SqsError("InvalidAction", f"The action {name} is not valid for this endpoint.")
    if action.plain is not None:
        return await action.plain(ctx, params)
    assert action.on_queue is not None
    queue = ctx.queue(queue_name_of(params.get("QueueUrl")), action.scopes, name)
    return await action.on_queue(ctx, queue, params)
