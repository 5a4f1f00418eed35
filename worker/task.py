"""The task a handler sees: an :class:`~perfectqueue.client.AcquiredTask` that knows its outcome.

Besides the SDK's ``key``, ``type``, ``data``, ``user``, ``lease``, ``finish()``, ``retry()``,
``release()``, ``heartbeat()`` and ``update_data()`` it has:

- ``preempted``: the lease was taken over (a heartbeat answered Preempted). The task is someone
  else's now; the worker never finishes it, and ``finish()``/``retry()``/``release()`` raise
  :class:`~perfectqueue.errors.PreemptedError` without asking the queue.
- ``cancelled``: a :class:`threading.Event` set when the handler should give up: the task was
  preempted, cancelled, or the worker is stopping immediately (its task was released). A long
  handler may check ``task.cancelled.is_set()`` between steps.
- ``cancel_requested``: somebody cancelled the task while it ran (a heartbeat answered
  :class:`~perfectqueue.errors.CancelRequestedError`). The task monitor then raises
  ``CancelRequestedError`` once into the running handler; the task ends as cancelled whatever the
  handler does next (returns, finishes, retries, releases).
- ``attempts`` (this delivery's attempt number) and ``traceparent`` (the W3C trace context given at
  submit, or None), from the SDK's task.
- ``time_limit``: the seconds its handler may run (the route's ``time_limit``, else the
  worker's ``task_time_limit``; None: no limit), and ``timed_out``: it ran over them. The task
  monitor then retries it (``last_error`` "TimeLimitExceeded: timed out after N s") and
  interrupts the handler with :class:`TimeLimitExceeded` (see :mod:`.task_monitor`).
- ``config``: the worker's configuration as loaded (your own keys included), reloaded on restart.
- ``outcome``: ``None`` while the task is in hand, then ``"finished"``, ``"retried"``,
  ``"dead"`` (retried on its last attempt, see ``last_attempt``), ``"released"``,
  ``"cancelled"``, ``"preempted"`` or ``"unsettled"`` (the queue could not be told: the task
  comes back after its lease).

With an :class:`Acknowledger` (the worker's :mod:`.acks`), ``finish()`` and ``retry()`` return at
once: the task is handed over to be sent with others, ``acknowledging`` until the queue answers,
and ``outcome`` is set from that answer (see :meth:`WorkerTask.acknowledged`). A second
``finish()``, ``retry()`` or ``release()`` raises :class:`~perfectqueue.errors.AlreadyFinishedError`
without asking the queue. ``release()`` is always sent at once (a stop waits for it).

Calls are serialised with the task monitor's heartbeats by a lock.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

from ..client import AcquiredTask, RetrySpec
from ..client._types import Leased
from ..errors import AlreadyFinishedError, CancelRequestedError, PerfectQueueError, PreemptedError, TaskError


class TimeLimitExceeded(BaseException):
    """Raised into a handler that ran over its time limit (its task was retried already).

    A ``BaseException``, as ``KeyboardInterrupt``: a handler's ``except Exception`` does not
    swallow it; its ``finally`` blocks and context managers still run.
    """


class Acknowledger(Protocol):
    def put(self, task: WorkerTask, retry: RetrySpec | None) -> None:
        """Send ``task``'s acknowledgement later: a finish (``retry`` None) or its retry."""


class WorkerTask(AcquiredTask):
    def __init__(
        self,
        task: AcquiredTask,
        retry_wait: int | None,
        alive_time: int,
        config: Mapping[str, Any] | None = None,
        acks: Acknowledger | None = None,
    ) -> None:
        super().__init__(task.queue, Leased(task.acquired, task.lease))
        self.default_retry_wait, self.alive_time = retry_wait, alive_time
        self.config: Mapping[str, Any] = config or {}
        self.cancelled = threading.Event()
        self.outcome: str | None = None
        self.acks = acks
        self._acknowledging: str | None = None  # the outcome asked for, until the queue answers
        self._on_settled: list[Callable[[WorkerTask], None]] = []
        self.started = time.monotonic()
        self._lock = threading.RLock()
        self._cancel_requested = task.acquired.cancel_requested
        self._interrupt: Callable[[type[BaseException]], None] | None = None
        self._interrupted = False
        self.time_limit: float | None = None
        self.timed_out = False

    @property
    def preempted(self) -> bool:
        return self.outcome == "preempted"

    @property
    def cancel_requested(self) -> bool:
        return self._cancel_requested

    def request_cancel(self) -> None:
        """A cancel was requested: tell the handler, and interrupt it once if it is running."""
        with self._lock:
            if self._cancel_requested and self.cancelled.is_set():
                return
            self._cancel_requested = True
            self.cancelled.set()
            self._interrupt_once(CancelRequestedError)

    def over_limit(self, now: float) -> bool:
        """Running past its time limit (and not yet timed out)."""
        limit = self.time_limit
        return limit is not None and not self.timed_out and now - self.started > limit

    def time_out(self) -> bool:
        """Over its time limit: retry the task with the error recorded (the queue counts the
        attempt, and a last attempt ends dead), then interrupt the handler once with
        :class:`TimeLimitExceeded`. False when the task was settled meanwhile."""
        with self._lock:
            if not self.in_hand or self.timed_out:
                return False
            self.timed_out = True
            try:
                self.retry(error=f"TimeLimitExceeded: timed out after {self.time_limit:g} s")
            finally:
                if self.in_hand:  # the retry failed: never heart-beaten again, the lease expires
                    self.outcome = "unsettled"
                self.cancelled.set()
                self._interrupt_once(TimeLimitExceeded)
        return True

    def _interrupt_once(self, error: type[BaseException]) -> None:
        if self._interrupt is not None and not self._interrupted:
            self._interrupted = True
            self._interrupt(error)

    @contextmanager
    def handling(self, interrupt: Callable[[type[BaseException]], None] | None = None) -> Iterator[None]:
        """While the handler runs, a cancel or a time-out interrupts it (see request_cancel and
        time_out): by ``interrupt`` (an asyncio processor cancels the handler's asyncio task),
        else by raising the error (CancelRequestedError, TimeLimitExceeded) in this thread."""
        with self._lock:
            if self._cancel_requested:
                raise CancelRequestedError(f"task {self.key} was cancelled before its handler started")
            thread = threading.get_ident()
            self._interrupt = interrupt or (lambda error: _raise_in(thread, error))
        try:
            yield
        finally:
            with self._lock:
                self._interrupt = None
                if self._interrupted and interrupt is None:
                    _raise_in(thread, None)  # clear one not delivered yet

    @property
    def in_hand(self) -> bool:
        return self.outcome is None and self._acknowledging is None

    @property
    def acknowledging(self) -> bool:
        """Finished or retried, and the queue has not answered yet."""
        return self._acknowledging is not None

    def finish(self) -> None:
        self._settle("finished", None)

    def send_finish(self) -> None:
        """The finish call itself (the acknowledger's, when a batch is not possible)."""
        super().finish()

    def retry(self, retry_wait: int | None = None, error: str | None = None, *, dead: bool = False) -> None:
        wait = self.default_retry_wait if retry_wait is None else retry_wait
        outcome = "dead" if dead or self.last_attempt else "retried"
        self._settle(outcome, RetrySpec(self, wait, error, dead))

    def send_retry(self, spec: RetrySpec) -> None:
        """The retry call itself (the acknowledger's, when a batch is not possible)."""
        AcquiredTask.retry(self, spec.retry_wait, spec.error, dead=spec.dead)

    @property
    def last_attempt(self) -> bool:
        """This delivery is the task's last: a retry ends it dead. The service's retry does not say
        so; the worker compares ``attempts`` with the task's own ``max_attempts`` (from the task's
        metadata it polled). A task under the queue's default limit is not told it: False then."""
        limit = self.acquired.max_attempts
        return limit is not None and self.attempts >= limit

    def release(self) -> None:
        """Sent at once, not through the acknowledger (a stop waits for it)."""
        with self._lock:
            self._check_in_hand()
            self._send("released", self.send_release)

    def send_release(self) -> None:
        """The release call itself."""
        super().release()

    def releasing(self) -> bool:
        """Mark the task as being given back by a release of many (see :func:`release_all`):
        False, and nothing marked, if it is no longer in hand."""
        with self._lock:
            if not self.in_hand:
                return False
            self._acknowledging = "released"
            return True

    def heartbeat(self, alive_time: int | None = None) -> None:
        with self._lock:
            self._check_in_hand()
            super().heartbeat(self.alive_time if alive_time is None else alive_time)

    def update_data(self, changes: Mapping[str, Any], alive_time: int | None = None) -> None:
        with self._lock:
            self._check_in_hand()
            super().update_data(changes, self.alive_time if alive_time is None else alive_time)

    @contextmanager
    def calls_held(self) -> Iterator[None]:
        """Hold the task's own calls while the task monitor's batch heartbeat covers it (its
        single heartbeat holds them the same way)."""
        with self._lock:
            yield

    def mark_preempted(self) -> None:
        """The lease is lost: forget the task and tell the handler to give up."""
        with self._lock:
            if self.outcome is None:
                self.outcome = "preempted"
        self.cancelled.set()

    def acknowledged(self, error: PerfectQueueError | None) -> None:
        """The queue answered the finish or retry handed to the acknowledger (``error`` None:
        done); the outcome follows, and whoever waits for it (:meth:`when_settled`) is told."""
        with self._lock:
            self.outcome = self._answer(self._acknowledging or "finished", error)
            self._acknowledging = None
            waiting, self._on_settled = self._on_settled, []
        for done in waiting:
            done(self)

    def when_settled(self, done: Callable[[WorkerTask], None]) -> None:
        """``done(self)`` once the outcome is known: now, or when the queue answers (a handler
        may ask too, e.g. to record a finish only once the queue has it)."""
        with self._lock:
            if self._acknowledging is not None:
                self._on_settled.append(done)
                return
        done(self)

    def _answer(self, asked: str, error: PerfectQueueError | None) -> str:
        if error is None or (isinstance(error, AlreadyFinishedError) and asked == "finished"):
            return asked
        if isinstance(error, CancelRequestedError):  # the queue ended it as cancelled
            self._cancel_requested = True
        self.cancelled.set()
        if isinstance(error, CancelRequestedError):
            return "cancelled"
        return "preempted" if isinstance(error, TaskError) else "unsettled"

    def _settle(self, outcome: str, retry: RetrySpec | None) -> None:
        """Finish (``retry`` None) or retry the task: handed to the acknowledger when there is
        one, else sent now."""
        with self._lock:
            self._check_in_hand()
            if self.acks is not None:
                self._acknowledging = outcome
                self.acks.put(self, retry)
                return
            self._send(outcome, self.send_finish if retry is None else lambda: self.send_retry(retry))

    def _send(self, outcome: str, call: Callable[[], None]) -> None:
        try:
            call()
        except PreemptedError:
            self.mark_preempted()
            raise
        except CancelRequestedError:
            self.outcome = "cancelled"  # the queue ended it as cancelled
            self._cancel_requested = True
            self.cancelled.set()
            raise
        self.outcome = outcome

    def _check_in_hand(self) -> None:
        if self.outcome == "preempted":
            raise PreemptedError(f"task {self.key} was preempted: its lease is held by another worker")
        if self.outcome == "cancelled":
            raise CancelRequestedError(f"task {self.key} was cancelled")
        settled = self._acknowledging or self.outcome
        if settled is not None:
            raise AlreadyFinishedError(f"task {self.key} was already {settled} by this worker")


def _raise_in(thread_id: int, error: type[BaseException] | None) -> None:
    """Raise ``error`` in another thread at its next Python instruction (None: withdraw one not
    raised yet). A thread blocked in a C call (a socket read, a sleep) sees it when that returns."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(error) if error else None
    )
