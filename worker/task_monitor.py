"""A processor's second thread: it keeps the tasks in hand leased and the supervisor informed.

Every ``task_heartbeat_interval`` it extends by ``alive_time`` the lease of the task running and
of the tasks prefetched (``task_prefetch``) and waiting their turn, in one batch heartbeat when it
holds more than one (each task's answer is acted on as its own heartbeat's would be; a service
that refuses the batch gets one heartbeat per task). A heartbeat answered Preempted (or the task
gone or finished by someone else) marks that task preempted and heart-beating it stops. A
heartbeat answered CancelRequestedError (somebody cancelled the task) interrupts the running
handler with that error (see :meth:`WorkerTask.request_cancel`), or ends a task still waiting
its turn as cancelled at once. Every ``child_heartbeat_interval`` it tells the supervisor the
processor is alive.

It enforces the time limits too (:attr:`WorkerTask.time_limit`): a running task over its limit
is retried at once with ``last_error`` "TimeLimitExceeded: timed out after N s" (its lease is no
longer extended), logged ``event=timeout`` and counted. Then, with ``kill_on_timeout`` (a forked
processor), the processor stops immediately: the retry and the finishes before it are sent,
the other tasks in hand released, and the process exits, to be replaced by the supervisor.
Otherwise (a thread or asyncio processor) the handler is interrupted with TimeLimitExceeded (an
asyncio handler is cancelled); one still running ``grace`` seconds later (a thread blocked in C
code, a loop blocked by synchronous code) is given up: the processor stops immediately, and the
supervisor replaces it. It is also the loop that acts on the processor's recorded
signals: TERM/INT ask for a graceful stop (the main loop takes no more tasks), TTIN for a
detached graceful stop (the same, and the processor carries on when its supervisor exits), QUIT
for an immediate one (every task in hand is released, then ``on_immediate_stop`` runs), USR2
reopens the log.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager

from ..errors import CancelRequestedError, PerfectQueueError, TaskError, UnavailableError
from . import logs, metrics
from .acks import Acks
from .polling import release_together
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
        *,
        kill_on_timeout: bool = False,
        grace: float = 2.0,
    ) -> None:
        self.signals = signals
        self.kill_on_timeout, self.grace = kill_on_timeout, grace
        self.task_interval, self.child_interval = task_heartbeat_interval, child_heartbeat_interval
        self.child_heartbeat, self.on_immediate_stop = child_heartbeat, on_immediate_stop
        self.graceful = threading.Event()
        self.immediate = threading.Event()
        self.detached = False
        self.acks: Acks | None = None
        """The processor's acknowledger: flushed before an immediate stop ends the process."""
        self._batch = True  # False once the service refused a batch heartbeat: one per task then
        self._running: list[WorkerTask] = []
        self._held: list[WorkerTask] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._woken: set[threading.Event] = set()
        self._thread = threading.Thread(target=self._run, name="perfectqueue-task-monitor", daemon=True)

    def stopping(self) -> bool:
        return self.graceful.is_set() or self.immediate.is_set()

    @contextmanager
    def waking(self, event: threading.Event) -> Iterator[threading.Event]:
        """While in the block, a stop request (graceful or immediate) sets ``event``: the
        processor's wait for a long-poll ends at once when the worker is told to stop."""
        with self._lock:
            self._woken.add(event)
        if self.stopping():
            event.set()
        try:
            yield event
        finally:
            with self._lock:
                self._woken.discard(event)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self.signals.wake()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def started(self, task: WorkerTask) -> None:
        """``task``'s handler runs now (interrupted on a cancel, cancelled on an immediate stop)."""
        with self._lock:
            self._running.append(task)

    def ended(self, task: WorkerTask) -> None:
        with self._lock:
            self._running.remove(task)

    def hold(self, tasks: list[WorkerTask]) -> None:
        """The tasks in hand, running or waiting their turn: heart-beaten, released on an immediate stop."""
        with self._lock:
            self._held = list(tasks)

    def in_hand(self) -> list[WorkerTask]:
        """The running tasks and the held ones that are still this processor's."""
        with self._lock:
            tasks = self._running + [task for task in self._held if task not in self._running]
        return [task for task in tasks if task.in_hand]

    def _run(self) -> None:
        next_child = next_task = time.monotonic()
        while not self._done.is_set():
            self._act_on_signals()
            if self.immediate.is_set():
                self._stop_immediately()
                return
            self._enforce_limits()
            now = time.monotonic()
            if now >= next_child:
                self._beat_child()
                next_child = now + self.child_interval
            if now >= next_task:
                self._beat_task()
                next_task = now + self.task_interval
            self.signals.wait(min(next_child, next_task, now + TICK) - time.monotonic())

    def _enforce_limits(self) -> None:
        now = time.monotonic()
        with self._lock:
            running = list(self._running)
        for task in running:
            if task.over_limit(now):
                self._time_out(task)
            elif task.timed_out and now - task.started - (task.time_limit or 0) > self.grace:
                log.error("%s", logs.fields(event="timeout_ignored", id=task.key, type=task.type))
                self._request(self.immediate)  # the handler did not stop: give the processor up

    def _time_out(self, task: WorkerTask) -> None:
        try:
            if not task.time_out():
                return  # settled meanwhile
        except PerfectQueueError as exc:  # the retry failed: the lease, no longer extended, expires
            log.warning("%s", logs.fields(event="retry_failed", id=task.key, error=exc))
        log.warning(
            "%s", logs.fields(event="timeout", id=task.key, type=task.type, time_limit=task.time_limit)
        )
        metrics.timed_out()
        if self.kill_on_timeout:
            self._request(self.immediate)

    def _act_on_signals(self) -> None:
        for signum in self.signals.take():
            if signum == signal.SIGTTIN:
                self.detached = True  # the supervisor leaves after detach_wait: do not follow it
                self._request(self.graceful)
            elif signum in (signal.SIGTERM, signal.SIGINT):
                self._request(self.graceful)  # repeated every child_kill_interval: the supervisor escalates
            elif signum == signal.SIGQUIT:
                self._request(self.immediate)
            elif signum == signal.SIGUSR2:
                logs.reopen()

    def _request(self, stop: threading.Event) -> None:
        stop.set()
        with self._lock:
            for event in self._woken:
                event.set()

    def _beat_child(self) -> None:
        try:
            self.child_heartbeat()
        except OSError:
            if self.detached:
                return  # detached: finish the task in hand without the supervisor
            log.error("the supervisor is gone; stopping immediately")
            self._request(self.immediate)

    def _beat_task(self) -> None:
        tasks = self.in_hand()
        if len(tasks) > 1 and self._batch and self._beat_many(tasks):
            return
        for task in tasks:
            self._beat_one(task)

    def _beat_many(self, tasks: list[WorkerTask]) -> bool:
        """One batch heartbeat for ``tasks``, each answer acted on as a single heartbeat's; False
        when the batch itself was refused (a service of an earlier version, say): from then on
        this processor beats them one by one."""
        try:
            with ExitStack() as stack:
                for task in tasks:
                    stack.enter_context(task.calls_held())
                tasks = [task for task in tasks if task.in_hand]
                if not tasks:
                    return True
                result = tasks[0].queue.heartbeat_many(tasks, alive_time=tasks[0].alive_time)
        except UnavailableError as exc:  # try again at the next beat
            ids = ",".join(task.key for task in tasks)
            log.warning("%s", logs.fields(event="heartbeat_failed", ids=ids, error=exc))
            return True
        except PerfectQueueError as exc:
            log.warning("%s", logs.fields(event="heartbeat_batch_refused", error=exc))
            self._batch = False
            return False
        errors = {failure.key: failure.error for failure in result.failed}
        for task in tasks:
            if task.key in errors:
                self._answered(task, errors[task.key])
        return True

    def _beat_one(self, task: WorkerTask) -> None:
        try:
            task.heartbeat()
        except PerfectQueueError as exc:
            self._answered(task, exc)

    def _answered(self, task: WorkerTask, answer: PerfectQueueError) -> None:
        """Act on the error a heartbeat of ``task`` answered (alone or in a batch)."""
        if isinstance(answer, CancelRequestedError):
            if task.in_hand and not task.cancelled.is_set():
                log.info("%s", logs.fields(event="cancel_requested", id=task.key, type=task.type))
                task.request_cancel()
                if task not in self._running:
                    release(task, "cancelled")  # not started: ends cancelled now
        elif isinstance(answer, TaskError):  # preempted, or gone or finished by someone else
            if task.in_hand:
                log.warning("%s", logs.fields(event="preempted", id=task.key, type=task.type, error=answer))
                task.mark_preempted()
        else:  # unavailable: try again at the next beat
            log.warning("%s", logs.fields(event="heartbeat_failed", id=task.key, error=answer))

    def _stop_immediately(self) -> None:
        if self.acks is not None:
            self.acks.close()  # what was finished before the stop is told to the queue
        release_all(self.in_hand(), "immediate")
        for task in list(self._running):
            task.cancelled.set()
        self.on_immediate_stop()


def release(task: WorkerTask, reason: str) -> None:
    """Give ``task`` back to the queue (deliverable again at once), logging a failure to do so."""
    try:
        task.release()
    except PerfectQueueError as exc:
        _released(task, reason, exc)
    else:
        _released(task, reason, None)


def release_all(tasks: Iterable[WorkerTask], reason: str) -> None:
    """Give the tasks still in hand back in one request (``release-batch``), each logged as
    :func:`release` logs it; one by one if the service refuses the batch (an earlier version)."""
    in_hand = [task for task in tasks if task.in_hand]
    if len(in_hand) < 2:
        for task in in_hand:
            release(task, reason)
        return
    held = [task for task in in_hand if task.releasing()]
    errors = release_together(in_hand[0].queue, held, WorkerTask.send_release)
    for task in held:
        task.acknowledged(errors.get(task.key))
        _released(task, reason, errors.get(task.key))


def _released(task: WorkerTask, reason: str, error: PerfectQueueError | None) -> None:
    if error is None:
        log.info("%s", logs.fields(event="release", id=task.key, type=task.type, reason=reason))
    elif isinstance(error, CancelRequestedError):
        log.info("%s", logs.fields(event="cancelled", id=task.key, type=task.type))
    else:
        log.warning("%s", logs.fields(event="release_failed", id=task.key, error=error))
