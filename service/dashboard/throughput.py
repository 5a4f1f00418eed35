"""Submitted and finished tasks per minute, for the whole cluster of service replicas.

The queue's table cannot tell it: a finished row forgets when it was submitted, and it is deleted
after ``retention_time``. So each replica adds up per minute the submits and finishes its
metrics counted (:class:`~..metrics.PerMinute`, the same counts as
``perfectqueue_tasks_submitted_total`` and ``..._finished_total``) and every ``interval`` seconds
adds them, through the queue's runtime, into the side table of the queue's database
(:mod:`..store.throughput`). Replicas add, never overwrite, so any number of them sum up. A
replica flushes once more when it stops; one killed outright loses at most ``interval`` seconds
of counts. Tasks finished by processes that do not go through the service (the direct
``rdb_compat`` backend, Ruby PerfectQueue) are not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass

from ...errors import PerfectQueueError
from ..metrics import PER_MINUTE, PerMinute
from ..runtime import QueueRuntime
from ..store.throughput import KEEP, STATS_TABLE

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

    def __init__(self, queues: Mapping[str, QueueRuntime], counts: PerMinute, interval: float = 10.0) -> None:
        self.queues, self.counts, self.interval = queues, counts, interval
        self.failing: set[tuple[str, str]] = set()  # (writing or reading, queue) that failed last

    def _failed(self, doing: str, queue: str, exc: PerfectQueueError) -> None:
        """Warn once per failing streak (a table never upgraded fails every flush), not every time."""
        if (doing, queue) in self.failing:
            log.debug("%s throughput counts of queue %s failed again: %s", doing, queue, exc)
            return
        self.failing.add((doing, queue))
        log.warning(
            "%s throughput counts of queue %s failed (said once until it works again; `perfectqueue "
            "init` creates the side table %s if it is missing): %s",
            doing,
            queue,
            STATS_TABLE,
            exc,
        )

    def _worked(self, doing: str, queue: str) -> None:
        if (doing, queue) in self.failing:
            self.failing.discard((doing, queue))
            log.info("%s throughput counts of queue %s works again", doing, queue)

    async def write(self, pending: dict[tuple[str, int], list[int]]) -> None:
        """Add counts to each queue's side table; what a failed write did not store is put back,
        to go with the next write (unless older than KEEP)."""
        by_queue: dict[str, dict[int, tuple[int, int]]] = {}
        for (queue, minute), (submitted, finished) in pending.items():
            by_queue.setdefault(queue, {})[minute] = (submitted, finished)
        for queue, counts in by_queue.items():
            try:
                await self.queues[queue].add_throughput(counts)
            except PerfectQueueError as exc:
                self._failed("writing", queue, exc)  # the counts are kept for the next try
                self._restore(queue, counts)
            else:
                self._worked("writing", queue)

    def _restore(self, queue: str, counts: Mapping[int, tuple[int, int]]) -> None:
        oldest = int(time.time()) - KEEP
        for minute, values in counts.items():
            if minute >= oldest:
                for event, amount in zip(PER_MINUTE, values, strict=True):
                    if amount:
                        self.counts.add(queue, event, amount, minute)

    async def history(self, queue: QueueRuntime) -> History:
        """The last WINDOW minutes of a queue as the side table holds them (zeros before any)."""
        end = int(time.time()) // 60 * 60
        start = end - (WINDOW - 1) * 60
        submitted, finished = [0] * WINDOW, [0] * WINDOW
        try:
            rows = await queue.throughput(start, end)
        except PerfectQueueError as exc:  # the counts are not the queue: show zeros
            self._failed("reading", queue.name, exc)
            rows = {}
        else:
            self._worked("reading", queue.name)
        for minute, (sub, fin) in rows.items():
            submitted[(minute - start) // 60] += sub
            finished[(minute - start) // 60] += fin
        return History(end, submitted, finished)

    async def flush(self) -> None:
        """Write what is pending."""
        pending = self.counts.take()
        if pending:
            await self.write(pending)

    async def flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval * random.uniform(0.8, 1.2))
            await self.flush()

    async def stop(self, task: asyncio.Task[None]) -> None:
        """Stop the periodic flush and write what is left (a graceful stop loses no counts)."""
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await self.flush()
