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
- ``config``: the worker's configuration as loaded (your own keys included), reloaded on restart.
- ``outcome``: ``None`` while the task is in hand, then ``"finished"``, ``"retried"``,
  ``"dead"`` (retried on its last attempt, see ``last_attempt``), ``"released"``,
  ``"cancelled"`` or ``"preempted"``.

Calls are serialised with the task monitor's heartbeats by a lock.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ..client import AcquiredTask
from ..client._types import Leased
from ..errors import CancelRequestedError, PreemptedError


class WorkerTask(AcquiredTask):
    def __init__(
        self,
        task: AcquiredTask,
        retry_wait: int | None,
        alive_time: int,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(task.queue, Leased(task.acquired, task.lease))
        self.default_retry_wait, self.alive_time = retry_wait, alive_time
        self.config: Mapping[str, Any] = config or {}
        self.cancelled = threading.Event()
        self.outcome: str | None = None
        self.started = time.monotonic()
        self._lock = threading.RLock()
        self._cancel_requested = task.acquired.cancel_requested
        self._handler_thread: int | None = None
        self._interrupted = False

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
            if self._handler_thread is not None and not self._interrupted:
                self._interrupted = True
                _raise_in(self._handler_thread, CancelRequestedError)

    @contextmanager
    def handling(self) -> Iterator[None]:
        """While the handler runs in this thread, a cancel interrupts it (see request_cancel)."""
        with self._lock:
            if self._cancel_requested:
                raise CancelRequestedError(f"task {self.key} was cancelled before its handler started")
            self._handler_thread = threading.get_ident()
        try:
            yield
        finally:
            with self._lock:
                self._handler_thread = None
                if self._interrupted:
                    _raise_in(threading.get_ident(), None)  # clear one not delivered yet

    @property
    def in_hand(self) -> bool:
        return self.outcome is None

    def finish(self) -> None:
        self._settle("finished", super().finish)

    def retry(self, retry_wait: int | None = None, error: str | None = None, *, dead: bool = False) -> None:
        wait = self.default_retry_wait if retry_wait is None else retry_wait
        outcome = "dead" if dead or self.last_attempt else "retried"
        self._settle(outcome, lambda: AcquiredTask.retry(self, wait, error, dead=dead))

    @property
    def last_attempt(self) -> bool:
        """This delivery is the task's last: a retry ends it dead. The service's retry does not say
        so; the worker compares ``attempts`` with the task's own ``max_attempts`` (from the task's
        metadata it polled). A task under the queue's default limit is not told it: False then."""
        limit = self.acquired.max_attempts
        return limit is not None and self.attempts >= limit

    def release(self) -> None:
        self._settle("released", super().release)

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

    def _settle(self, outcome: str, call: Any) -> None:
        with self._lock:
            self._check_in_hand()
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


def _raise_in(thread_id: int, error: type[BaseException] | None) -> None:
    """Raise ``error`` in another thread at its next Python instruction (None: withdraw one not
    raised yet). A thread blocked in a C call (a socket read, a sleep) sees it when that returns."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(error) if error else None
    )
