"""A processor's acknowledgements, sent in the background and merged: the hot path's one request.

A handler's ``task.finish()`` (or the worker's, when the handler returns) and ``task.retry()``
do not wait for the queue: they hand the task to :class:`Acks`, whose thread sends the finishes
of up to ``ack_batch_size`` tasks in one ``finish-batch`` request and their retries in one
``retry-batch``. A batch leaves when it is full or when its oldest task has waited ``ack_delay``
seconds, whichever comes first, and at once when the processor stops. Each task's answer is then
acted on as its own call's would be (see :meth:`WorkerTask.acknowledged`), and logged.

Nothing the contract promises hangs on the flush: a task whose finish was never sent (the
process was killed in between) is still leased, and comes back when its lease expires, as after
any crash (at-least-once). A service that cannot be reached is tried again every second until
the processor stops; a service that refuses a batch request (an earlier version) gets one
call per task from then on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..client import BatchResult, Queue, RetrySpec
from ..errors import PerfectQueueError, UnavailableError
from . import logs, metrics
from .task import WorkerTask

log = logging.getLogger("perfectqueue.worker")
UNAVAILABLE_PAUSE = 1.0


@dataclass(eq=False)
class Ack:
    """One task's acknowledgement: a finish or a retry."""

    task: WorkerTask
    retry: RetrySpec | None = None
    """None: a finish; else the task's retry."""
    queued: float = field(default_factory=time.monotonic)

    def send(self) -> None:
        """This acknowledgement alone."""
        if self.retry is None:
            self.task.send_finish()
        else:
            self.task.send_retry(self.retry)


class Acks:
    def __init__(self, queue: Queue, batch_size: int, delay: float) -> None:
        self.queue, self.batch_size, self.delay = queue, batch_size, delay
        self._pending: list[Ack] = []
        self._closing = False
        self._unbatched: set[str] = set()  # the batch requests the service refused: one call per task
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="perfectqueue-acks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, task: WorkerTask, retry: RetrySpec | None) -> None:
        """Send ``task``'s finish (``retry`` None) or its retry soon, merged with others."""
        ack = Ack(task, retry)
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
        started = time.monotonic()
        finishes = [ack for ack in batch if ack.retry is None]
        retries = [ack for ack in batch if ack.retry is not None]
        try:
            if finishes:
                self._many("finish", finishes, lambda: self.queue.finish_many([a.task for a in finishes]))
            if retries:
                specs = [ack.retry for ack in retries if ack.retry is not None]
                self._many("retry", retries, lambda: self.queue.retry_many(specs))
        except UnavailableError as exc:
            self._later(batch, exc)
            return
        metrics.acks_sent(len(batch), started - batch[0].queued, time.monotonic() - started)

    def _many(self, kind: str, acks: list[Ack], send: Callable[[], BatchResult]) -> None:
        """Send ``acks`` (all finishes or all retries) in one request, or one by one."""
        if kind in self._unbatched or len(acks) == 1:
            for ack in acks:
                self._one(ack)
            return
        try:
            result = send()
        except UnavailableError:
            raise
        except PerfectQueueError as exc:
            log.warning("%s", logs.fields(event=f"{kind}_batch_refused", error=exc))
            self._unbatched.add(kind)
            self._many(kind, acks, send)
            return
        errors = {failure.key: failure.error for failure in result.failed}
        for ack in acks:
            ack.task.acknowledged(errors.get(ack.task.key))

    def _one(self, ack: Ack) -> None:
        try:
            ack.send()
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
