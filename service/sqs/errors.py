"""SQS's errors: each answered in the protocol's own shape with SQS's code, so that every AWS SDK
raises the exception it raises against Amazon SQS.

The JSON protocol answers ``{"__type": "com.amazonaws.sqs#<Code>", "message": ...}`` with an
``x-amzn-query-error: <legacy code>;Sender`` header (what botocore and the JavaScript SDK read for
the code a Query-era caller expects); the Query protocol answers ``<ErrorResponse>`` XML with the
legacy code. The queue's own errors (:mod:`perfectqueue.errors`) are translated by
:func:`from_queue_error`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ...errors import (
    ForbiddenError,
    PerfectQueueError,
    RequestError,
    TooLargeError,
    UnavailableError,
    UnknownQueueError,
)

log = logging.getLogger("perfectqueue.service")

LEGACY_CODES = {
    "QueueDoesNotExist": "AWS.SimpleQueueService.NonExistentQueue",
    "QueueNameExists": "QueueAlreadyExists",
    "TooManyEntriesInBatchRequest": "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
    "BatchEntryIdsNotDistinct": "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
    "EmptyBatchRequest": "AWS.SimpleQueueService.EmptyBatchRequest",
    "InvalidBatchEntryId": "AWS.SimpleQueueService.InvalidBatchEntryId",
    "BatchRequestTooLong": "AWS.SimpleQueueService.BatchRequestTooLong",
    "MessageNotInflight": "AWS.SimpleQueueService.MessageNotInflight",
    "UnsupportedOperation": "AWS.SimpleQueueService.UnsupportedOperation",
    "PurgeQueueInProgress": "AWS.SimpleQueueService.PurgeQueueInProgress",
}
"""The Query protocol's codes where they differ from the JSON protocol's shape names."""


class SqsError(Exception):
    """An SQS error answer: its code (the JSON protocol's shape name), message and HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status

    @property
    def legacy_code(self) -> str:
        """The code the Query protocol answers (and the JSON protocol's x-amzn-query-error)."""
        return LEGACY_CODES.get(self.code, self.code)

    @property
    def fault(self) -> str:
        return "Receiver" if self.status >= 500 else "Sender"


def invalid(message: str) -> SqsError:
    return SqsError("InvalidParameterValue", message)


def missing(name: str) -> SqsError:
    return SqsError("MissingParameter", f"The request must contain the parameter {name}.")


def no_queue() -> SqsError:
    return SqsError("QueueDoesNotExist", "The specified queue does not exist.")


def receipt_invalid(detail: str = "") -> SqsError:
    return SqsError("ReceiptHandleIsInvalid", f"The receipt handle is not valid{detail}.")


def access_denied(message: str) -> SqsError:
    return SqsError("AccessDenied", message, 403)


def from_queue_error(exc: PerfectQueueError) -> SqsError:
    """The SQS error a queue's refusal stands for (a call's whole answer, or a batch entry's); a
    server-side one is logged with its cause, as the native API's are."""
    if exc.status >= 500:
        log.warning("%s: %s", exc.code, exc)
    for kind, make in TRANSLATED:
        if isinstance(exc, kind):
            return make(exc)
    return SqsError("InternalFailure", "The service could not answer; its log says why.", 500)


TRANSLATED: tuple[tuple[type[PerfectQueueError], Callable[[PerfectQueueError], SqsError]], ...] = (
    (UnknownQueueError, lambda _exc: no_queue()),
    (TooLargeError, lambda exc: invalid(f"One or more parameters are invalid. Reason: {exc}.")),
    (ForbiddenError, lambda exc: access_denied(str(exc))),
    (RequestError, lambda exc: invalid(str(exc))),
    (UnavailableError, lambda exc: SqsError("ServiceUnavailable", f"Unavailable, retry: {exc.public}", 503)),
)
"""The first class a refusal is an instance of says what it answers (else InternalFailure)."""
