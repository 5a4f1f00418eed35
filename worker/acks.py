"""A processor's acknowledgements, sent in the background and merged: the hot path's one request.

A handler's ``task.finish()`` (or the worker's, when the handler returns) and ``task.retry()``
do not wait for the queue: they hand the task to :class:`Acks`, whose thread sends the finishes
of up to ``ack_batch_size`` tasks in one ``finish-batch`` request and each retry on its own. A
batch leaves when it is full or when its oldest task has waited ``ack_delay`` seconds, whichever
comes first, and at once when the processor stops. Each task's answer is then acted on as its
own call's would be (see :meth:`WorkerTask.acknowledged`), and logged.

Nothing the contract promises hangs on the flush: a task whose finish was never sent (the
process was killed in between) is still leased, and comes back when its lease expires, as after
any crash (at-least-once). A service that cannot be reached is tried again every second until
the processor stops; a service that refuses the batch request (an earlier version) gets one
finish per task from then on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..client import Queue
from ..errors import PerfectQueueError, UnavailableError
from . import logs, metrics
from .task import WorkerTask

log = logging.getLogger("perfectqueue.worker")
UNAVAILABLE_PAUSE = 1.0


@dataclass(eq=False)
class Ack:
    """One task's acknowledgement: a finish (sent in a batch) or another call (sent alone)."""

    task: WorkerTask
    call: Callable[[], None] | None = None
    """None: a finish; else the call that settles the task (a retry)."""
    queued: float = field(default_factory=time.monotonic)


class Acks:
    def __init__(self, queue: Queue, batch_size: int, delay: float) -> None:
        self.queue, self.batch_size, self.delay = queue, batch_size, delay
        self._pending: list[Ack] = []
        self._closing = False
        self._batch = True  # False once the service refused a finish-batch: one finish per task
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="perfectqueue-acks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, task: WorkerTask, call: Callable[[], None] | None) -> None:
        """Send ``task``'s finish (``call`` None: merged with others) or ``call`` soon."""
        ack = Ack(task, call)
        with self._cond:
            closed = self._closing
            if not closed:
                self._pending.append(ack)
                if len(self._pending) == 1 or len(self._pending) >= self.batch_size:
                    self._cond.notify()
        if closed:  # after the stop: sent now, by the caller's thread
            self._send([ack])

    def close(self) -> None:
        """Send everything pending now, and return once it was answered."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        while batch := self._take():
            try:
                self._send(batch)
            except Exception as exc:  # never lose the thread: those tasks come back after their lease
                log.exception("%s", logs.fields(event="ack_failed", tasks=len(batch), error=exc))
                for ack in batch:
                    if ack.task.acknowledging:
                        ack.task.acknowledged(PerfectQueueError(f"{type(exc).__name__}: {exc}"))

    def _take(self) -> list[Ack]:
        """The next batch, once it is due ([] when closing and nothing is left)."""
        with self._cond:
            while not self._due():
                if self._closing and not self._pending:
                    return []
                self._cond.wait(
                    self._pending[0].queued + self.delay - time.monotonic() if self._pending else None
                )
            batch, self._pending = self._pending[: self.batch_size], self._pending[self.batch_size :]
            return batch

    def _due(self) -> bool:
        pending = self._pending
        if not pending:
            return False
        full = len(pending) >= self.batch_size
        return self._closing or full or pending[0].queued + self.delay <= time.monotonic()

    def _send(self, batch: list[Ack]) -> None:
        finishes = [ack for ack in batch if ack.call is None]
        started = time.monotonic()
        try:
            if finishes:
                self._finish(finishes)
            for ack in batch:
                if ack.call is not None:
                    self._call(ack, ack.call)
        except UnavailableError as exc:
            self._later(batch, exc)
            return
        metrics.acks_sent(len(batch), started - batch[0].queued, time.monotonic() - started)

    def _finish(self, acks: list[Ack]) -> None:
        if not self._batch or len(acks) == 1:
            for ack in acks:
                self._call(ack, ack.task.send_finish)
            return
        try:
            result = self.queue.finish_many([ack.task for ack in acks])
        except UnavailableError:
            raise
        except PerfectQueueError as exc:
            log.warning("%s", logs.fields(event="finish_batch_refused", error=exc))
            self._batch = False
            self._finish(acks)
            return
        errors = {failure.key: failure.error for failure in result.failed}
        for ack in acks:
            ack.task.acknowledged(errors.get(ack.task.key))

    def _call(self, ack: Ack, call: Callable[[], None]) -> None:
        try:
            call()
        except UnavailableError:
            raise
        except PerfectQueueError as exc:
            ack.task.acknowledged(exc)
        else:
            ack.task.acknowledged(None)

    def _later(self, batch: list[Ack], error: PerfectQueueError) -> None:
        """The service is unreachable: keep what is unanswered for the next try (in a second), or
        give it up when the processor is stopping (its lease brings it back)."""
        unanswered = [ack for ack in batch if ack.task.acknowledging]
        with self._cond:
            closing = self._closing
            if not closing:
                self._pending[:0] = unanswered
        if closing:
            for ack in unanswered:
                ack.task.acknowledged(error)
            return
        log.warning("%s", logs.fields(event="ack_failed", tasks=len(unanswered), error=error))
        with self._cond:
            self._cond.wait_for(lambda: self._closing, UNAVAILABLE_PAUSE)
