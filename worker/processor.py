"""A processor: the loop of one child (a forked process, or a thread of the supervisor).

    until a stop is requested (or max_request_per_child tasks were handled):
        poll up to 1 + task_prefetch tasks, long-polling up to poll_interval (so the interval
        applies only when the queue is empty; a stop ends the wait at once, see :mod:`.polling`);
        run them one after another under the task monitor, which keeps every one of them leased
        while it waits its turn; their finishes and retries go to the acknowledger (:mod:`.acks`),
        which sends them merged in the background while the next ones run

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
from .acks import Acks
from .application import Base
from .config import WorkerConfig
from .polling import Poll
from .runner import Runner
from .signals import Signals
from .task import WorkerTask
from .task_monitor import TaskMonitor, release_all

log = logging.getLogger("perfectqueue.worker")
OpenQueue = Callable[[dict[str, Any]], Queue]
POLL_MAX = 100
"""The most tasks one poll may ask for (the service refuses more): a larger ``task_prefetch``
(or an asyncio processor's ``concurrency``) polls more often."""


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
            kill_on_timeout=config.processor_type == "process",
            grace=config.child_kill_interval,
        )
        self.runner = Runner(application, self.monitor, config)
        self.handled = 0
        self.abandoned_poll = False
        self.acks: Acks | None = None

    def run(self) -> None:
        queue = self.open_queue(self.config.backend)
        acks = self.acks = self.runner.acks = self.monitor.acks = Acks(
            queue, self.config.ack_batch_size, self.config.ack_delay
        )
        acks.start()
        self.monitor.start()
        try:
            self._work(queue)
        finally:
            acks.close()  # what was finished is told to the queue before the processor ends
            self.monitor.stop()
            if not self.abandoned_poll:  # else the poll closes it once it has answered
                queue.close()

    def _work(self, queue: Queue) -> None:
        while not self.monitor.stopping() and not self._recycle():
            batch = self._acquire(queue, self._allowed(1 + self.config.task_prefetch))
            self._run_batch([self.runner.wrap(task) for task in batch])

    def _allowed(self, count: int) -> int:
        """``count``, or fewer when ``max_request_per_child`` leaves fewer tasks to run."""
        limit = self.config.max_request_per_child
        return count if limit is None else max(0, min(count, limit - self.handled))

    def _close(self, queue: Queue) -> None:
        """An abandoned poll's end: close the queue, once the acknowledger has sent what it had
        (the two share the queue's connections)."""
        if self.acks is not None:
            self.acks.close()
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
                    release_all(batch[index:], "not started")
                    return
                if not task.in_hand:  # preempted while it waited its turn
                    continue
                self.runner.run(task)
                self.handled += 1
        finally:
            self.monitor.hold([])

    def _acquire(self, queue: Queue, count: int) -> list[AcquiredTask]:
        """Up to ``count`` tasks (at least one, at most the POLL_MAX a poll may ask for),
        long-polling up to ``poll_interval``."""
        started = time.monotonic()
        interval = self.config.poll_interval
        count = max(1, min(count, POLL_MAX))
        poll = Poll(queue, count, self.config.alive_time, interval, close=lambda: self._close(queue))
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
        metrics.polled(len(tasks))
        if not tasks:  # a backend without long-polls, or an error: wait out the interval here
            with self.monitor.waking(threading.Event()) as stop:
                stop.wait(interval - (time.monotonic() - started))
        return tasks
