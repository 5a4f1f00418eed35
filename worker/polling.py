"""A processor's poll, run in a thread of its own so that a stop never waits out a long-poll.

An idle processor spends its time in a long-poll of up to ``poll_interval`` seconds. Told to stop
(the task monitor wakes it, see :meth:`TaskMonitor.waking`), it stops waiting for the answer at
once and leaves the poll behind (:meth:`Poll.take` answers None):

- a forked child exits, which closes the connection: the service gives back the tasks it acquired
  for a long-poll whose caller has gone (deliverable again at once);
- a thread processor's poll goes on until the service answers, then releases whatever tasks it
  got and closes the queue itself.

A task that the service leased in the instant before the connection closed comes back when its
lease (``alive_time``) expires, as after a crash.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from ..client import AcquiredTask, Queue
from ..errors import PerfectQueueError, UnavailableError
from . import logs

log = logging.getLogger("perfectqueue.worker")

T = TypeVar("T", bound=AcquiredTask)


def release_together(
    queue: Queue, tasks: Sequence[T], alone: Callable[[T], object]
) -> dict[str, PerfectQueueError]:
    """Give ``tasks`` back in one request (``release-batch``); one by one (``alone``) if the
    service refuses the batch (an earlier version, without it). The error of each task that was
    not given back, by key: every task's when the service did not answer."""
    try:
        return {failure.key: failure.error for failure in queue.release_many(tasks).failed}
    except UnavailableError as exc:
        return {task.key: exc for task in tasks}
    except PerfectQueueError as exc:
        log.warning("%s", logs.fields(event="release_batch_refused", error=exc))
    errors: dict[str, PerfectQueueError] = {}
    for task in tasks:
        try:
            alone(task)
        except PerfectQueueError as exc:
            errors[task.key] = exc
    return errors


class Poll:
    """One ``poll_multi`` call on a thread; ``done`` is set when it answered (or to wake the waiter)."""

    def __init__(
        self, queue: Queue, count: int, alive_time: int, wait: float, close: Callable[[], None] | None = None
    ) -> None:
        self.queue, self.count, self.alive_time, self.wait = queue, count, alive_time, wait
        self.close = close or queue.close
        """Closes the queue once an abandoned poll has given back its tasks (the processor's
        closes its acknowledger first, which may still be sending on the same queue)."""
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._answered = self._abandoned = False
        self._tasks: list[AcquiredTask] = []
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="perfectqueue-poll", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def take(self) -> list[AcquiredTask] | None:
        """The tasks acquired (raising the poll's error), or None when the poll has not answered
        yet: it is abandoned then, and gives back what it gets (see the module's docstring)."""
        with self._lock:
            if not self._answered:
                self._abandoned = True
                return None
        if self._error is not None:
            raise self._error
        return self._tasks

    def _run(self) -> None:
        tasks: list[AcquiredTask] = []
        error: Exception | None = None
        try:
            tasks = list(self.queue.poll_multi(max=self.count, alive_time=self.alive_time, wait=self.wait))
        except Exception as exc:  # handed to the processor's thread by take()
            error = exc
        with self._lock:
            self._tasks, self._error, self._answered = tasks, error, True
            abandoned = self._abandoned
        self.done.set()
        if abandoned:
            self._give_back(tasks)

    def _give_back(self, tasks: list[AcquiredTask]) -> None:
        failed = release_together(self.queue, tasks, AcquiredTask.release) if tasks else {}
        for task in tasks:
            if task.key in failed:
                log.warning("%s", logs.fields(event="release_failed", id=task.key, error=failed[task.key]))
            else:
                log.info("%s", logs.fields(event="release", id=task.key, type=task.type, reason="stopping"))
        self.close()
