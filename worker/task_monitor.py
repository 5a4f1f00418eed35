"""A processor's second thread: it keeps the task in hand leased and the supervisor informed.

Every ``task_heartbeat_interval`` it extends the lease of the task in hand by ``alive_time``; a
heartbeat answered Preempted (or the task gone or finished by someone else) marks the task
preempted and heart-beating stops. Every ``child_heartbeat_interval`` it tells the supervisor the
processor is alive. It is also the loop that acts on the processor's recorded signals:
TERM/INT ask for a graceful stop (the main loop takes no more tasks), QUIT for an immediate one
(the task in hand is released, then ``on_immediate_stop`` runs), USR2 reopens the log.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable

from ..errors import NotFoundError, PerfectQueueError, PreemptedError, TaskError
from . import logs
from .signals import Signals
from .task import WorkerTask

log = logging.getLogger("perfectqueue.worker")
TICK = 0.5


class TaskMonitor:
    def __init__(
        self,
        signals: Signals,
        task_heartbeat_interval: float,
        child_heartbeat_interval: float,
        child_heartbeat: Callable[[], None],
        on_immediate_stop: Callable[[], None],
    ) -> None:
        self.signals = signals
        self.task_interval, self.child_interval = task_heartbeat_interval, child_heartbeat_interval
        self.child_heartbeat, self.on_immediate_stop = child_heartbeat, on_immediate_stop
        self.graceful = threading.Event()
        self.immediate = threading.Event()
        self._task: WorkerTask | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="perfectqueue-task-monitor", daemon=True)

    def stopping(self) -> bool:
        return self.graceful.is_set() or self.immediate.is_set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self.signals.wake()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def set_task(self, task: WorkerTask | None) -> None:
        self._task = task

    def _run(self) -> None:
        next_child = next_task = time.monotonic()
        while not self._done.is_set():
            self._act_on_signals()
            if self.immediate.is_set():
                self._stop_immediately()
                return
            now = time.monotonic()
            if now >= next_child:
                self._beat_child()
                next_child = now + self.child_interval
            if now >= next_task:
                self._beat_task()
                next_task = now + self.task_interval
            self.signals.wait(min(next_child, next_task, now + TICK) - time.monotonic())

    def _act_on_signals(self) -> None:
        for signum in self.signals.take():
            if signum in (signal.SIGTERM, signal.SIGINT):
                self.graceful.set()  # repeated every child_kill_interval: escalation is the supervisor's
            elif signum == signal.SIGQUIT:
                self.immediate.set()
            elif signum == signal.SIGUSR2:
                logs.reopen()

    def _beat_child(self) -> None:
        try:
            self.child_heartbeat()
        except OSError:
            log.error("the supervisor is gone; stopping immediately")
            self.immediate.set()

    def _beat_task(self) -> None:
        task = self._task
        if task is None or not task.in_hand:
            return
        try:
            task.heartbeat()
        except (PreemptedError, NotFoundError, TaskError) as exc:
            if task.in_hand:
                log.warning("%s", logs.fields(event="preempted", id=task.key, type=task.type, error=exc))
                task.mark_preempted()
        except PerfectQueueError as exc:  # unavailable: try again at the next beat
            log.warning("%s", logs.fields(event="heartbeat_failed", id=task.key, error=exc))

    def _stop_immediately(self) -> None:
        task = self._task
        if task is not None and task.in_hand:
            try:
                task.release()
                log.info("%s", logs.fields(event="release", id=task.key, type=task.type, reason="immediate"))
            except PerfectQueueError as exc:
                log.warning("%s", logs.fields(event="release_failed", id=task.key, error=exc))
            task.cancelled.set()
        self.on_immediate_stop()
