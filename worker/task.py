"""The task a handler sees: an :class:`~perfectqueue.client.AcquiredTask` that knows its outcome.

Besides the SDK's ``key``, ``type``, ``data``, ``user``, ``lease``, ``finish()``, ``retry()``,
``release()``, ``heartbeat()`` and ``update_data()`` it has:

- ``preempted``: the lease was taken over (a heartbeat answered Preempted). The task is someone
  else's now; the worker never finishes it, and ``finish()``/``retry()``/``release()`` raise
  :class:`~perfectqueue.errors.PreemptedError` without asking the queue.
- ``cancelled``: a :class:`threading.Event` set when the handler should give up: the task was
  preempted, or the worker is stopping immediately (its task was released). A long handler may
  check ``task.cancelled.is_set()`` between steps.
- ``config``: the worker's configuration as loaded (your own keys included), reloaded on restart.
- ``outcome``: ``None`` while the task is in hand, then ``"finished"``, ``"retried"``,
  ``"released"`` or ``"preempted"``.

Calls are serialised with the task monitor's heartbeats by a lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from ..client import AcquiredTask
from ..client._types import Leased
from ..errors import PreemptedError


class WorkerTask(AcquiredTask):
    def __init__(
        self, task: AcquiredTask, retry_wait: int, alive_time: int, config: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(task.queue, Leased(task.acquired, task.lease))
        self.default_retry_wait, self.alive_time = retry_wait, alive_time
        self.config: Mapping[str, Any] = config or {}
        self.cancelled = threading.Event()
        self.outcome: str | None = None
        self.started = time.monotonic()
        self._lock = threading.RLock()

    @property
    def preempted(self) -> bool:
        return self.outcome == "preempted"

    @property
    def in_hand(self) -> bool:
        return self.outcome is None

    def finish(self) -> None:
        self._settle("finished", super().finish)

    def retry(self, retry_wait: int | None = None) -> None:
        wait = self.default_retry_wait if retry_wait is None else retry_wait
        self._settle("retried", lambda: AcquiredTask.retry(self, wait))

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
            self.outcome = outcome

    def _check_in_hand(self) -> None:
        if self.outcome == "preempted":
            raise PreemptedError(f"task {self.key} was preempted: its lease is held by another worker")
