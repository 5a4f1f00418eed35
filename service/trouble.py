"""What an operator should notice soon, as this replica saw it: per queue, the database errors
and the slowest wait for an acquisition's lock (the table's, or a user's) of the last ``WINDOW`` seconds.

The metrics observer (:mod:`.metrics`) feeds it; the dashboard's overview reads it. It is kept in
memory, per replica: the replica that answers the overview tells what it saw (Prometheus has
every replica's counters, ``perfectqueue_database_errors_total`` and
``perfectqueue_acquire_lock_wait_seconds``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

WINDOW = 900
"""Seconds of errors and lock waits remembered."""


@dataclass(frozen=True, slots=True)
class Recent:
    """One queue's trouble of the last WINDOW seconds on this replica."""

    database_errors: int = 0
    lock_wait_max: float = 0.0
    """The longest wait for an acquisition's lock, in seconds."""


class Trouble:
    """Per queue, the database errors and lock waits of the last WINDOW seconds (thread-safe:
    the store's threads report, the event loop reads)."""

    def __init__(self) -> None:
        self._errors: dict[str, deque[float]] = {}
        self._waits: dict[str, deque[tuple[float, float]]] = {}
        self._lock = threading.Lock()

    def error(self, queue: str) -> None:
        with self._lock:
            self._errors.setdefault(queue, deque()).append(time.monotonic())

    def waited(self, queue: str, seconds: float) -> None:
        """An acquisition waited ``seconds`` for its lock (only the notable ones are kept)."""
        if seconds >= 0.1:
            with self._lock:
                self._waits.setdefault(queue, deque()).append((time.monotonic(), seconds))

    def recent(self, queue: str) -> Recent:
        since = time.monotonic() - WINDOW
        with self._lock:
            errors = self._errors.get(queue, deque())
            waits = self._waits.get(queue, deque())
            while errors and errors[0] < since:
                errors.popleft()
            while waits and waits[0][0] < since:
                waits.popleft()
            return Recent(len(errors), max((w for _, w in waits), default=0.0))
