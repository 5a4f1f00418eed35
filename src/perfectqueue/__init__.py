"""PerfectQueue: a highly available, at-least-once task queue on a relational database.

``perfectqueue.open(config)`` opens a queue (see :mod:`perfectqueue.client`); the errors every
part raises are in :mod:`perfectqueue.errors` and exported here.
"""

from __future__ import annotations

from ._version import __version__
from .client import (
    AcquiredTask,
    AsyncQueue,
    Queue,
    Task,
    TaskMetadata,
    open,
    open_async,
)
from .errors import (
    AlreadyExistsError,
    AlreadyFinishedError,
    ConfigError,
    IdempotentError,
    NotFoundError,
    NotSupportedError,
    PerfectQueueError,
    PreemptedError,
    TaskError,
    UnavailableError,
)

__all__ = [
    "AcquiredTask",
    "AlreadyExistsError",
    "AlreadyFinishedError",
    "AsyncQueue",
    "ConfigError",
    "IdempotentError",
    "NotFoundError",
    "NotSupportedError",
    "PerfectQueueError",
    "PreemptedError",
    "Queue",
    "Task",
    "TaskError",
    "TaskMetadata",
    "UnavailableError",
    "__version__",
    "open",
    "open_async",
]
