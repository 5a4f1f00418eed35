"""Handlers: ``Base`` (the original's ``Application::Base``) and its decider.

Write a handler by subclassing :class:`Base` and either overriding :meth:`Base.run` (the seed's
simple form: do the work, then call ``self.task.finish()``, ``retry()`` or ``release()``) or
overriding :meth:`Base.perform`, which the default ``run`` calls between ``before_perform`` and
``after_perform``.

An exception that escapes a handler goes to :meth:`Base.decide`, which by default logs it and
retries the task with the error recorded (its type, message and the last frames of its
traceback), after the queue's backoff (or the worker's
``retry_wait`` when its configuration sets one). It never crashes the worker. A
:class:`~perfectqueue.errors.CancelRequestedError` (the task was cancelled) is not an error of
the handler: it skips ``decide`` and the task ends as cancelled.

A handler that returns without finishing, retrying or releasing its task has succeeded: the
worker finishes the task for it (as returning from a job means "done" in most Python task
queues). A task that was preempted meanwhile is never finished.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable
from typing import Any, ClassVar

from ..errors import CancelRequestedError, PerfectQueueError
from . import logs, metrics
from .task import WorkerTask

log = logging.getLogger("perfectqueue.worker")
ERROR_CHARS = 1000
"""What the store keeps of ``last_error`` (its ``LAST_ERROR_CHARS``): :func:`report` fits in it,
so the store's truncation never cuts the frames nearest the error."""
TRACEBACK = "Traceback (most recent call last):\n"


class Base:
    """One run of one task. ``self.task`` is the :class:`~perfectqueue.worker.task.WorkerTask`."""

    time_limit: ClassVar[float | None] = None
    """Seconds this handler may run (0: no limit); None: the worker's ``task_time_limit``."""

    def __init__(self, task: WorkerTask) -> None:
        self.task = task

    @classmethod
    def time_limit_for(cls, task_type: str, default: float | None) -> float | None:
        """The seconds a task of ``task_type`` may run (None: no limit): this class's
        :attr:`time_limit`, else ``default`` (the worker's ``task_time_limit``)."""
        return _limit(cls.time_limit, default)

    def run(self) -> Awaitable[None] | None:
        """Run the task: ``before_perform()``, ``perform()``, ``after_perform()``. A handler may
        define ``async def run(self)`` instead (see docs/worker.md: asyncio processors)."""
        self.before_perform()
        self.perform()
        self.after_perform()
        return None

    def before_perform(self) -> None:
        """Called before :meth:`perform` by the default :meth:`run`."""

    def perform(self) -> None:
        """The work, for handlers that keep the default :meth:`run`."""
        raise NotImplementedError(f"{type(self).__name__} must override run() or perform()")

    def after_perform(self) -> None:
        """Called after :meth:`perform` returned, by the default :meth:`run`."""

    def decide(self, error: BaseException) -> None:
        """What to do with a task whose handler raised ``error``: by default retry it later,
        recording the error (the queue counts the attempt: a task out of attempts is dead)."""
        task = self.task
        line = logs.fields(event="error", id=task.key, type=task.type, error=describe(error))
        log.error("%s", line, exc_info=error)
        if task.in_hand:
            retry(task, error=report(error))

    def execute(self) -> Awaitable[None] | None:
        """:meth:`run`, with an escaping exception handed to :meth:`decide`. An ``async def run``
        makes this an awaitable, which does the same when awaited (the worker awaits it)."""
        try:
            pending = self.run()
        except CancelRequestedError:
            raise  # the task was cancelled: not the handler's failure
        except Exception as exc:
            self._failed(exc)
            return None
        return None if pending is None else self._execute_async(pending)

    async def _execute_async(self, pending: Awaitable[None]) -> None:
        try:
            await pending
        except CancelRequestedError:
            raise
        except Exception as exc:
            self._failed(exc)

    def _failed(self, error: Exception) -> None:
        metrics.task_failed()
        self.decide(error)


def _limit(limit: float | None, default: float | None) -> float | None:
    """``limit`` (0: none), or ``default`` when it is None."""
    if limit is None:
        return default
    return limit or None


def describe(error: BaseException) -> str:
    """An error in one line: its type and message."""
    return f"{type(error).__name__}: {error}"


def report(error: BaseException, limit: int = ERROR_CHARS) -> str:
    """An error as the queue records it (``last_error``): ``Type: message``, then the last frames
    of its traceback, as many as fit in ``limit`` characters (the message clipped to half of it)."""
    head = describe(error)
    if len(head) > limit // 2:
        head = head[: limit // 2 - 3] + "..."
    frames = traceback.format_tb(error.__traceback__)
    kept: list[str] = []
    room = limit - len(head) - len(TRACEBACK) - 1
    for frame in reversed(frames):
        if len(frame) > room:
            break
        kept.insert(0, frame)
        room -= len(frame)
    if not kept:
        return head
    return f"{head}\n{TRACEBACK}{''.join(kept)}".rstrip("\n")


def retry(
    task: WorkerTask,
    retry_wait: int | None = None,
    error: str | None = None,
    *,
    dead: bool = False,
    **reason: Any,
) -> None:
    """Retry ``task`` after ``retry_wait`` (default: the queue's backoff, or the worker's
    ``retry_wait``), recording ``error``, or with ``dead`` give up on it; a failure to do so is
    logged."""
    try:
        task.retry(retry_wait, error, dead=dead)
    except CancelRequestedError:
        pass  # cancelled meanwhile: the task ended as cancelled
    except PerfectQueueError as exc:
        log.warning("%s", logs.fields(event="retry_failed", id=task.key, error=exc, **reason))
