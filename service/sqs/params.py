"""What every action shares: the request's context, its parameters read and checked, the queue a
request names, and the rules of a batch's entries."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import PerfectQueueError
from ..config import ApiKey, Scope_
from ..runtime import QueueRuntime, Runtime
from .errors import SqsError, access_denied, from_queue_error, invalid, missing, no_queue

ACCOUNT = "000000000000"
"""The account id in every queue URL and ARN (there are no accounts here)."""
MAX_BATCH = 10
BATCH_ENTRY_ID = re.compile(r"[A-Za-z0-9_-]{1,80}")
Params = dict[str, Any]
Result = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Context:
    """One SQS request: the runtime, who is calling, where the endpoint is, when the client left."""

    runtime: Runtime
    key: ApiKey | None
    """The key that signed the request; None when the service has no keys (everything allowed)."""
    endpoint: str
    """The endpoint's URL as the caller reached it (queue URLs start with it)."""
    region: str
    gone: Callable[[], Awaitable[bool]]

    def queue_url(self, name: str) -> str:
        return f"{self.endpoint}/{ACCOUNT}/{name}"

    def arn(self, name: str) -> str:
        return f"arn:aws:sqs:{self.region}:{ACCOUNT}:{name}"

    def allows(self, scopes: Sequence[Scope_], queue: str | None) -> bool:
        return self.key is None or any(self.key.allows(scope, queue) for scope in scopes)

    def queue(self, name: str, scopes: Sequence[Scope_], action: str) -> QueueRuntime:
        """The declared queue ``name``, if the caller's key has one of ``scopes`` on it."""
        queue = self.runtime.queues.get(name)
        if queue is None:
            raise no_queue()
        if not self.allows(scopes, name):
            assert self.key is not None
            raise access_denied(f"The key {self.key.name!r} is not allowed to {action} on queue {name!r}.")
        return queue


def queue_name_of(url: object) -> str:
    """The queue a QueueUrl names: its last path segment."""
    if url is None:
        raise missing("QueueUrl")
    if not isinstance(url, str) or not url:
        raise SqsError("InvalidAddress", "The address QueueUrl is not valid for this endpoint.", 404)
    name = url.rstrip("/").rsplit("/", 1)[-1]
    if not name:
        raise SqsError("InvalidAddress", "The address QueueUrl is not valid for this endpoint.", 404)
    return name


def text(params: Params, name: str, *, required: bool = False) -> str | None:
    value = params.get(name)
    if value is None:
        if required:
            raise missing(name)
        return None
    if not isinstance(value, str):
        raise invalid(f"Value for parameter {name} is invalid. Reason: must be a string.")
    return value


def integer(params: Params, name: str, low: int, high: int, default: int | None = None) -> int | None:
    """An integer parameter within [low, high] (the Query protocol sends it as text)."""
    value = params.get(name, default)
    if value is None:
        return None
    try:
        number = int(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None or not low <= number <= high:
        raise invalid(
            f"Value {value} for parameter {name} is invalid. Reason: must be between {low} and {high}."
        )
    return number


def names(params: Params, *keys: str) -> list[str]:
    """The union of list parameters (e.g. AttributeNames and MessageSystemAttributeNames)."""
    found: list[str] = []
    for key in keys:
        value = params.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise invalid(f"Value for parameter {key} is invalid. Reason: must be a list of strings.")
        found += value
    return found


def entries(params: Params, kind: str) -> list[dict[str, Any]]:
    """A batch's entries: 1 to 10, ids valid and distinct, else the whole batch is refused."""
    given = params.get("Entries")
    if not given:
        raise SqsError("EmptyBatchRequest", "There should be at least one entry in the request.")
    if not isinstance(given, list) or not all(isinstance(e, dict) for e in given):
        raise invalid("Entries must be a list of entries.")
    if len(given) > MAX_BATCH:
        raise SqsError(
            "TooManyEntriesInBatchRequest",
            f"Maximum number of entries per request are {MAX_BATCH}. You have sent {len(given)}.",
        )
    ids = [e.get("Id") for e in given]
    for entry_id in ids:
        if not isinstance(entry_id, str) or not BATCH_ENTRY_ID.fullmatch(entry_id):
            raise SqsError(
                "InvalidBatchEntryId",
                f"A batch entry id of {kind} can only contain letters, "
                "digits, hyphens and underscores, at most 80 characters.",
            )
    if len(set(ids)) != len(ids):
        raise SqsError(
            "BatchEntryIdsNotDistinct", "Two or more batch entries in the request have the same Id."
        )
    return given


def failure(entry_id: str, error: SqsError | PerfectQueueError) -> Result:
    """A batch's failed entry."""
    sqs = error if isinstance(error, SqsError) else from_queue_error(error)
    return {"Id": entry_id, "SenderFault": sqs.status < 500, "Code": sqs.code, "Message": sqs.message}
