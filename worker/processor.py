"""A processor: the loop of one child (a forked process, or a thread of the supervisor).

    until a stop is requested (or max_request_per_child tasks were handled):
        poll up to 1 + task_prefetch tasks, long-polling up to poll_interval (so the interval
        applies only when the queue is empty; a stop ends the wait at once, see :mod:`.polling`);
        run them one after another under the task monitor, which keeps every one of them leased
        while it waits its turn

A graceful stop lets the running task finish and takes no more: the tasks in hand that have not
started (prefetched, or returned by a poll after the stop was requested) are released at once.
An immediate stop releases every task in hand and ends the processor from the monitor thread
(see :mod:`.task_monitor`). A prefetched task preempted while it waited is skipped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..client import AcquiredTask, Queue
from ..errors import PerfectQueueError
from . import logs, metrics
from .application import Base
from .config import WorkerConfig
from .polling import Poll
from .runner import Runner
from .signals import Signals
from .task import WorkerTask
from .task_monitor import TaskMonitor, release

log = logging.getLogger("perfectqueue.worker")
OpenQueue = Callable[[dict[str, Any]], Queue]


class Processor:
    def __init__(
        self,
        application: type[Base],
        config: WorkerConfig,
        open_queue: OpenQueue,
        *,
        signals: Signals,
        child_heartbeat: Callable[[], None],
        on_immediate_stop: Callable[[], None],
    ) -> None:
        self.config, self.open_queue = config, open_queue
        self.monitor = TaskMonitor(
            signals,
            config.task_heartbeat_interval,
            config.child_heartbeat_interval,
            child_heartbeat,
            on_immediate_stop,
        )
        self.runner = Runner(application, self.monitor, config)
        self.handled = 0
        self.abandoned_poll = False

    def run(self) -> None:
        queue = self.open_queue(self.config.backend)
        self.monitor.start()
        try:
            while not self.monitor.stopping() and not self._recycle():
                self._run_batch([self.runner.wrap(task) for task in self._acquire(queue)])
        finally:
            self.monitor.stop()
            if not self.abandoned_poll:
                queue.close()

    def _recycle(self) -> bool:
        if self._used_up():
            log.info("%s", logs.fields(event="recycle", handled=self.handled))
            return True
        return False

    def _used_up(self) -> bool:
        limit = self.config.max_request_per_child
        return limit is not None and self.handled >= limit

    def _run_batch(self, batch: list[WorkerTask]) -> None:
        """Run the tasks of one poll in order; release those a stop leaves unstarted."""
        self.monitor.hold(batch)
        try:
            for index, task in enumerate(batch):
                if self.monitor.stopping() or self._used_up():
                    for unstarted in batch[index:]:
                        if unstarted.in_hand:
                            release(unstarted, "not started")
                    return
                if not task.in_hand:  # preempted while it waited its turn
                    continue
                self.runner.run(task)
                self.handled += 1
        finally:
            self.monitor.hold([])

    def _acquire(self, queue: Queue) -> list[AcquiredTask]:
        started = time.monotonic()
        interval = self.config.poll_interval
        count = 1 + self.config.task_prefetch
        if self.config.max_request_per_child is not None:  # acquire no more than it will run
            count = max(1, min(count, self.config.max_request_per_child - self.handled))
        poll = Poll(queue, count, self.config.alive_time, interval)
        with self.monitor.waking(poll.done):
            poll.start()
            poll.done.wait()
        try:
            tasks = poll.take()
        except PerfectQueueError as exc:
            log.warning("%s", logs.fields(event="poll_failed", error=f"{type(exc).__name__}: {exc}"))
            metrics.poll_failed()
            tasks = []
        if tasks is None:  # a stop was requested: the poll is left behind, and closes the queue
            self.abandoned_poll = True
            return []
        if not tasks:  # a backend without long-polls, or an error: wait out the interval here
            with self.monitor.waking(threading.Event()) as stop:
                stop.wait(interval - (time.monotonic() - started))
        return tasks
