"""Run one acquired task through the application, and settle it.

The application (a :class:`~perfectqueue.worker.Dispatch` subclass, or any :class:`Base`) runs
under the task monitor. Afterwards:

- the handler finished, retried or released the task: nothing more to do;
- the task was preempted (its lease taken over): it is left alone, never finished;
- the handler returned without settling it: the worker finishes it (returning is success);
- the handler (or its ``decide``) raised: the task is retried with the error recorded, after the
  queue's backoff (or the worker's ``retry_wait`` if its configuration sets one); a retry of the
  task's last attempt ends it dead (logged ``event=dead``, see :attr:`WorkerTask.last_attempt`);
- a cancel was requested while it ran (the handler was interrupted with CancelRequestedError, or
  ignored it): the task ends as cancelled.

One log line per task start and one per outcome, with the task's id, type and duration.
"""

from __future__ import annotations

import logging
import time

from ..client import AcquiredTask
from ..errors import AlreadyFinishedError, CancelRequestedError, PerfectQueueError
from . import logs, metrics
from .application import Base, report, retry
from .config import WorkerConfig
from .task import WorkerTask
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

    def wrap(self, acquired: AcquiredTask) -> WorkerTask:
        config = self.config
        return WorkerTask(acquired, config.retry_wait, config.alive_time, config.raw)

    def run(self, acquired: AcquiredTask) -> WorkerTask:
        """Run ``acquired`` (already wrapped by :meth:`wrap` when prefetched) and settle it."""
        task = acquired if isinstance(acquired, WorkerTask) else self.wrap(acquired)
        task.started = time.monotonic()
        log.info("%s", logs.fields(event="start", id=task.key, type=task.type))
        self.monitor.set_task(task)
        try:
            self._execute(task)
            if task.in_hand and task.cancel_requested:
                end_cancelled(task)
            elif task.in_hand:
                _finish_on_return(task)
        finally:
            self.monitor.set_task(None)
        _log_outcome(task)
        return task

    def _execute(self, task: WorkerTask) -> None:
        try:
            with task.handling():
                self.application(task).execute()
        except CancelRequestedError:
            log.info("%s", logs.fields(event="cancel_requested", id=task.key, type=task.type))
        except Exception as exc:  # decide() itself failed: still never crash the worker
            log.exception("%s", logs.fields(event="error", id=task.key, type=task.type, error=exc))
            if task.in_hand:
                retry(task, error=report(exc))


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
