"""Submitted and finished tasks per minute, for the whole cluster of service replicas.

The queue's table cannot tell it: a finished row forgets when it was submitted, and it is deleted
after ``retention_time``. So each replica adds up per minute the submits and finishes its
metered store counted (:class:`~..metrics.PerMinute`, the same counts as
``perfectqueue_tasks_submitted_total`` and ``..._finished_total``) and every ``interval`` seconds
adds them into the side table of the queue's database (:mod:`..store.throughput`). Replicas add,
never overwrite, so any number of them sum up. A replica flushes once more when it stops; one
killed outright loses at most ``interval`` seconds of counts. Tasks finished by processes that do
not go through the service (the direct ``rdb_compat`` backend, Ruby PerfectQueue) are not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ...errors import PerfectQueueError
from ..metrics import PER_MINUTE, PerMinute
from ..store import QueueStore
from ..store.throughput import KEEP

log = logging.getLogger("perfectqueue.service")

WINDOW = 60
"""Minutes of the series the dashboard shows."""


@dataclass(frozen=True, slots=True)
class History:
    """Per-minute counts of the last ``WINDOW`` minutes, oldest first, ending with ``end``."""

    end: int
    submitted: list[int]
    finished: list[int]


class Throughput:
    """Writes this replica's per-minute counts, and reads everyone's."""

    def __init__(self, stores: Mapping[str, QueueStore], counts: PerMinute, interval: float = 10.0) -> None:
        self.stores, self.counts, self.interval = stores, counts, interval

    def write(self, pending: dict[tuple[str, int], list[int]]) -> None:
        """Add counts to each queue's side table (blocking: run in a thread); what a failed write
        did not store is put back, to go with the next write (unless older than KEEP)."""
        by_queue: dict[str, dict[int, tuple[int, int]]] = {}
        for (queue, minute), (submitted, finished) in pending.items():
            by_queue.setdefault(queue, {})[minute] = (submitted, finished)
        for queue, counts in by_queue.items():
            try:
                self.stores[queue].add_throughput(counts)
            except PerfectQueueError as exc:
                log.warning(
                    "writing throughput counts of queue %s failed (kept for the next try): %s", queue, exc
                )
                self._restore(queue, counts)

    def _restore(self, queue: str, counts: Mapping[int, tuple[int, int]]) -> None:
        oldest = int(time.time()) - KEEP
        for minute, values in counts.items():
            if minute >= oldest:
                for event, amount in zip(PER_MINUTE, values, strict=True):
                    if amount:
                        self.counts.add(queue, event, amount, minute)

    def history(self, store: QueueStore) -> History:
        """The last WINDOW minutes of a queue as the side table holds them (zeros before any)."""
        end = int(time.time()) // 60 * 60
        start = end - (WINDOW - 1) * 60
        submitted, finished = [0] * WINDOW, [0] * WINDOW
        try:
            rows = store.throughput(start, end)
        except PerfectQueueError as exc:  # the counts are not the queue: show zeros
            log.warning("reading throughput counts failed: %s", exc)
            rows = {}
        for minute, (sub, fin) in rows.items():
            submitted[(minute - start) // 60] += sub
            finished[(minute - start) // 60] += fin
        return History(end, submitted, finished)

    # -- on the event loop ---------------------------------------------------------------------

    async def flush(self, run: Callable[..., Any]) -> None:
        """Write what is pending through ``run`` (the runtime's thread runner)."""
        pending = self.counts.take()
        if pending:
            await run(self.write, pending)

    async def flush_forever(self, run: Callable[..., Any]) -> None:
        while True:
            await asyncio.sleep(self.interval * random.uniform(0.8, 1.2))
            await self.flush(run)

    async def stop(self, task: asyncio.Task[None], run: Callable[..., Any]) -> None:
        """Stop the periodic flush and write what is left (a graceful stop loses no counts)."""
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await self.flush(run)
