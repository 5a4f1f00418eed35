"""The one exception hierarchy shared by the store, the service, the SDK and the worker.

The names are the original PerfectQueue's; each class carries the stable machine-readable
``code`` that the service puts in its ``application/problem+json`` bodies and the HTTP status
it answers with, so that the SDK maps a response back to exactly the class the store raised::

    PerfectQueueError
    ├── TaskError                      a task-level outcome of an operation
    │   ├── AlreadyExistsError         409 already_exists   (IdempotentError)
    │   ├── NotFoundError              404 not_found        (IdempotentError)
    │   ├── AlreadyFinishedError       409 already_finished (IdempotentError)
    │   ├── PreemptedError             409 preempted
    │   ├── CancelRequestedError       409 cancel_requested
    │   ├── NotDeadError               409 not_dead
    │   ├── HeldByRubyError            409 held_by_ruby
    │   └── NotSupportedError          501 not_supported
    ├── RequestError                   400 bad_request (not JSON, or not UTF-8); nothing was changed
    │   ├── InvalidError               422 invalid
    │   ├── UnknownQueueError          404 unknown_queue
    │   ├── UnauthorizedError          401 unauthorized
    │   ├── ForbiddenError             403 forbidden
    │   ├── TooLargeError              413 too_large
    │   └── UnsupportedMediaTypeError  415 unsupported_media_type
    ├── UnavailableError               503 unavailable (retryable: the database is out of reach)
    ├── InternalError                  500 internal (not retryable: a statement the database
    │                                  refuses for good, or a fault of the service)
    └── ConfigError                    bad configuration, refused at start-up

``IdempotentError`` is a marker (as in the original): an application that retried a request may
treat these as success, e.g. a retried submit meeting its own earlier success.
"""

from __future__ import annotations


class PerfectQueueError(Exception):
    """Base of every error this package raises on purpose."""

    code = "error"
    status = 500
    _public: str | None = None

    @property
    def public(self) -> str:
        """What a client of the service is told (the message, without what only the log may hold)."""
        return str(self) if self._public is None else self._public


class IdempotentError:
    """Marker mixin: the outcome a retried request may treat as success."""


class TaskError(PerfectQueueError):
    """The operation met a task in a state that does not allow it."""

    code = "task_error"
    status = 409


class AlreadyExistsError(TaskError, IdempotentError):
    """A task with this id exists (in any state, finished within retention included)."""

    code = "already_exists"
    status = 409


class NotFoundError(TaskError, IdempotentError):
    """No task with this id (never submitted, or its finished row was cleaned up)."""

    code = "not_found"
    status = 404


class AlreadyFinishedError(TaskError, IdempotentError):
    """The task is already finished."""

    code = "already_finished"
    status = 409


class PreemptedError(TaskError):
    """The caller's lease is no longer valid: another acquisition holds or finished the task."""

    code = "preempted"
    status = 409


class CancelRequestedError(TaskError):
    """A cancel was requested for this task: it ends as cancelled, never finished.

    A heartbeat answers it (the lease is still extended, so the holder can stop cleanly); a
    finish, retry or release answers it after ending the task as cancelled. The worker raises it
    into a running handler, as the original's ``CancelRequestedError``.
    """

    code = "cancel_requested"
    status = 409


class NotDeadError(TaskError):
    """Only a dead task can be requeued; this one is waiting or running."""

    code = "not_dead"
    status = 409


class HeldByRubyError(TaskError):
    """A Ruby PerfectQueue process holds the task (its lease, or its ``retry!`` wait), and it
    cannot see a cancel request: the cancel changed nothing. Cancel again once the task is
    waiting, or with ``force`` to end it now (the Ruby worker's next heartbeat or finish then
    fails, as the original's do on a finished task)."""

    code = "held_by_ruby"
    status = 409


class NotSupportedError(TaskError):
    """The backend does not support this operation."""

    code = "not_supported"
    status = 501


class RequestError(PerfectQueueError):
    """The request is malformed or not allowed; nothing was changed."""

    code = "bad_request"
    status = 400


class InvalidError(RequestError):
    """A value in the request is not acceptable."""

    code = "invalid"
    status = 422


class UnknownQueueError(RequestError):
    """The queue name is not declared in the service's configuration."""

    code = "unknown_queue"
    status = 404


class UnauthorizedError(RequestError):
    """No valid credentials."""

    code = "unauthorized"
    status = 401


class ForbiddenError(RequestError):
    """Valid credentials that do not allow this operation."""

    code = "forbidden"
    status = 403


class TooLargeError(RequestError):
    """The request or a part of it is over a size limit."""

    code = "too_large"
    status = 413


class UnsupportedMediaTypeError(RequestError):
    """The request's body is not JSON (its Content-Type names another media type)."""

    code = "unsupported_media_type"
    status = 415


class UnavailableError(PerfectQueueError):
    """The database cannot be reached or did not answer in time; the request may be retried."""

    code = "unavailable"
    status = 503

    def __init__(self, message: str = "", cause: str | None = None) -> None:
        """``cause``: what the driver said (its host names, users, messages), kept for the log and
        for the SDK's direct backend, but not told to a client of the service (see :attr:`public`)."""
        super().__init__(f"{message}: {cause}" if cause else message)
        self._public = message


class InternalError(PerfectQueueError):
    """The service could not answer, and the same request would fail again (a statement the
    database refuses for good, or a fault of the service); its log says why."""

    code = "internal"
    status = 500


class ConfigError(PerfectQueueError):
    """The configuration is invalid."""

    code = "config_error"
    status = 500


def _all_subclasses(cls: type[PerfectQueueError]) -> list[type[PerfectQueueError]]:
    found: list[type[PerfectQueueError]] = [cls]
    for sub in cls.__subclasses__():
        found.extend(_all_subclasses(sub))
    return found


ERRORS_BY_CODE: dict[str, type[PerfectQueueError]] = {
    cls.code: cls for cls in _all_subclasses(PerfectQueueError)
}
"""Every error code the service can answer with, mapped to its class."""
