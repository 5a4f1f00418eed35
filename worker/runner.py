"""Run one acquired task through the application, and settle it.

The application (a :class:`~perfectqueue.worker.Dispatch` subclass, or any :class:`Base`) runs
under the task monitor. Afterwards:

- the handler finished, retried or released the task: nothing more to do;
- the task was preempted (its lease taken over): it is left alone, never finished;
- the handler returned without settling it: the worker finishes it (returning is success);
- a finish or retry is sent by the processor's acknowledger (merged with others, see
  :mod:`.acks`): the outcome is logged when the queue has answered it;
- the handler (or its ``decide``) raised: the task is retried with the error recorded, after the
  queue's backoff (or the worker's ``retry_wait`` if its configuration sets one); a retry of the
  task's last attempt ends it dead (logged ``event=dead``, see :attr:`WorkerTask.last_attempt`);
- a cancel was requested while it ran (the handler was interrupted with CancelRequestedError, or
  ignored it): the task ends as cancelled;
- the handler ran over its time limit (:attr:`WorkerTask.time_limit`): the task monitor retried
  the task and interrupted the handler with TimeLimitExceeded (an asyncio handler: cancelled).

One log line per task start and one per outcome, with the task's id, type and duration.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager

from ..client import AcquiredTask
from ..errors import AlreadyFinishedError, CancelRequestedError, PerfectQueueError
from . import logs, metrics
from .application import Base, report, retry
from .config import WorkerConfig
from .task import Acknowledger, TimeLimitExceeded, WorkerTask
from .task_monitor import TaskMonitor

log = logging.getLogger("perfectqueue.worker")
OUTCOME_EVENTS = {
    "finished": "finish",
    "retried": "retry",
    "dead": "dead",
    "released": "release",
    "cancelled": "cancelled",
    "preempted": "preempted",
}


class Runner:
    def __init__(self, application: type[Base], monitor: TaskMonitor, config: WorkerConfig) -> None:
        self.application, self.monitor, self.config = application, monitor, config
        self.acks: Acknowledger | None = None
        """Where finishes and retries go to be sent (merged); None: each is sent at once."""

    def wrap(self, acquired: AcquiredTask) -> WorkerTask:
        config = self.config
        return WorkerTask(acquired, config.retry_wait, config.alive_time, config.raw, self.acks)

    def run(self, acquired: AcquiredTask) -> WorkerTask:
        """Run ``acquired`` (already wrapped by :meth:`wrap` when prefetched) and settle it. An
        ``async def`` handler is run to its end by an event loop of its own."""
        task = self._begin(acquired)
        try:
            with self._guard(task), task.handling():
                pending = self.application(task).execute()
                if pending is not None:
                    asyncio.run(_awaited(pending))
        finally:
            self._end(task)
        return task

    async def run_async(self, task: WorkerTask) -> WorkerTask:
        """:meth:`run` on the running event loop (the asyncio processor's): a cancel cancels the
        handler's asyncio task, which ends as cancelled."""
        self._begin(task)
        current, loop = asyncio.current_task(), asyncio.get_running_loop()
        assert current is not None

        def interrupt(error: type[BaseException]) -> None:
            loop.call_soon_threadsafe(current.cancel)

        try:
            with self._guard(task), task.handling(interrupt):
                pending = self.application(task).execute()
                if pending is not None:
                    await _cancel_requested_on_cancel(task, pending)
        finally:
            self._end(task)
        return task

    def _begin(self, acquired: AcquiredTask) -> WorkerTask:
        task = acquired if isinstance(acquired, WorkerTask) else self.wrap(acquired)
        task.started = time.monotonic()
        task.time_limit = self.application.time_limit_for(task.type, self.config.task_time_limit)
        log.info("%s", logs.fields(event="start", id=task.key, type=task.type))
        self.monitor.started(task)
        return task

    def _end(self, task: WorkerTask) -> None:
        try:
            if task.in_hand and task.cancel_requested:
                end_cancelled(task)
            elif task.in_hand:
                _finish_on_return(task)
        finally:
            self.monitor.ended(task)
        task.when_settled(_log_outcome)  # a finish or retry handed to the acks: when answered

    @contextmanager
    def _guard(self, task: WorkerTask) -> Iterator[None]:
        """Nothing a handler raises crashes the worker: a cancel is logged, an error that escaped
        ``decide`` too (and the task retried)."""
        try:
            yield
        except CancelRequestedError:
            log.info("%s", logs.fields(event="cancel_requested", id=task.key, type=task.type))
        except TimeLimitExceeded:
            pass  # the task monitor retried the task and logged event=timeout
        except Exception as exc:  # decide() itself failed: still never crash the worker
            log.exception("%s", logs.fields(event="error", id=task.key, type=task.type, error=exc))
            if task.in_hand:
                retry(task, error=report(exc))


async def _awaited(pending: Awaitable[None]) -> None:
    await pending


async def _cancel_requested_on_cancel(task: WorkerTask, pending: Awaitable[None]) -> None:
    """Await the handler; its cancellation by a cancel request (or a time-out) is that error."""
    try:
        await pending
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if not (task.cancel_requested or task.timed_out) or current is None:
            raise  # the loop itself is ending
        current.uncancel()
        if task.timed_out:
            raise TimeLimitExceeded(f"task {task.key} timed out") from None
        raise CancelRequestedError(f"task {task.key} was cancelled") from None


def end_cancelled(task: WorkerTask) -> None:
    """Give back a task whose cancel was requested: the queue ends it as cancelled."""
    try:
        task.release()
    except CancelRequestedError:
        pass  # the expected answer: the outcome is "cancelled"
    except PerfectQueueError as exc:
        log.warning("%s", logs.fields(event="cancel_failed", id=task.key, type=task.type, error=exc))


def _finish_on_return(task: WorkerTask) -> None:
    try:
        task.finish()
    except AlreadyFinishedError:
        task.outcome = "finished"
    except PerfectQueueError as exc:
        log.warning("%s", logs.fields(event="finish_failed", id=task.key, type=task.type, error=exc))


def _log_outcome(task: WorkerTask) -> None:
    event = OUTCOME_EVENTS.get(task.outcome or "", "unsettled")
    duration = time.monotonic() - task.started
    level = logging.WARNING if event in ("preempted", "unsettled", "dead") else logging.INFO
    log.log(level, "%s", logs.fields(event=event, id=task.key, type=task.type, duration=duration))
    metrics.task_done(event, duration)
