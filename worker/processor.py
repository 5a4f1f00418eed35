"""A processor: the loop of one child (a forked process, or a thread of the supervisor).

    until a stop is requested (or max_request_per_child tasks were handled):
        poll one task, long-polling up to poll_interval (so the interval applies only when the
        queue is empty); run it under the task monitor

A graceful stop lets the task in hand finish and takes no more (a task that a poll returned after
the stop was requested is released at once). An immediate stop releases the task in hand and
ends the processor from the monitor thread (see :mod:`.task_monitor`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ..client import AcquiredTask, Queue
from ..errors import PerfectQueueError
from . import logs
from .application import Base
from .config import WorkerConfig
from .runner import Runner
from .signals import Signals
from .task_monitor import TaskMonitor

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

    def run(self) -> None:
        queue = self.open_queue(self.config.backend)
        self.monitor.start()
        try:
            while not self.monitor.stopping() and not self._recycle():
                task = self._acquire(queue)
                if task is None:
                    continue
                if self.monitor.stopping():
                    _release(task)
                    break
                self.runner.run(task)
                self.handled += 1
        finally:
            self.monitor.stop()
            queue.close()

    def _recycle(self) -> bool:
        limit = self.config.max_request_per_child
        if limit is not None and self.handled >= limit:
            log.info("%s", logs.fields(event="recycle", handled=self.handled))
            return True
        return False

    def _acquire(self, queue: Queue) -> AcquiredTask | None:
        started = time.monotonic()
        interval = self.config.poll_interval
        try:
            tasks = queue.poll_multi(max=1, alive_time=self.config.alive_time, wait=interval)
        except PerfectQueueError as exc:
            log.warning("%s", logs.fields(event="poll_failed", error=f"{type(exc).__name__}: {exc}"))
            tasks = []
        if not tasks:  # a backend without long-polls, or an error: wait out the interval here
            self.monitor.signals.wait(interval - (time.monotonic() - started))
            return None
        return tasks[0]


def _release(task: AcquiredTask) -> None:
    try:
        task.release()
    except PerfectQueueError as exc:
        log.warning("%s", logs.fields(event="release_failed", id=task.key, error=exc))
