"""The per-queue gauges of ``/metrics``: the store's bounded counts, cached for a few seconds.

The counts are those of ``GET /v1/queues`` and the dashboard (:mod:`.store.stats`): each stops
at ``metrics_count_limit`` index entries (default 10,000), so a gauge at the limit means "at
least that many"; measured at 8 ms on MariaDB for a table of a million waiting and a hundred
thousand finished tasks, 47 ms when half of them are scheduled for later.

States (``STATES``): waiting (deliverable now), leased (held by a worker), scheduled (not yet due
and held by nobody: submitted with a future ``run_at`` or retried with a wait), and the retained
rows of tasks that ended: finished, dead, cancelled. Dead tasks also keep a gauge of their own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..errors import PerfectQueueError
from .store import Counts
from .store.stats import STATES

CACHE_SECONDS = 5.0


class QueueGauges(Collector):
    """Collects every queue's gauges at scrape time, from a cache at most ``CACHE_SECONDS`` old.

    ``counts`` reads a queue's counts (blocking: the scrape runs in a worker thread). A queue whose
    query fails (the database is down) has no gauges in that scrape (its runtime counts the failure).
    """

    def __init__(self, counts: Mapping[str, Callable[[], Counts]], limit: int) -> None:
        self.counts, self.limit = counts, limit
        self._cache: dict[str, tuple[float, Counts]] = {}
        self._lock = threading.Lock()

    def stats(self, queue: str) -> Counts | None:
        with self._lock:
            cached = self._cache.get(queue)
            if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
                return cached[1]
            try:
                stats = self.counts[queue]()
            except PerfectQueueError:
                self._cache.pop(queue, None)
                return None
            self._cache[queue] = (time.monotonic(), stats)
            return stats

    def clear(self) -> None:
        """Forget the cached values: the next scrape queries every queue."""
        with self._lock:
            self._cache.clear()

    def collect(self) -> Iterable[GaugeMetricFamily]:
        tasks = GaugeMetricFamily(
            "perfectqueue_queue_tasks",
            "Tasks in the queue's table by state (each count stops at perfectqueue_queue_count_limit).",
            labels=["queue", "state"],
        )
        dead = GaugeMetricFamily(
            "perfectqueue_queue_dead_tasks",
            'Retained dead tasks (as perfectqueue_queue_tasks{state="dead"}, kept for existing alerts).',
            labels=["queue"],
        )
        age = GaugeMetricFamily(
            "perfectqueue_queue_oldest_waiting_age_seconds",
            "Seconds the longest-waiting task has been deliverable (0: none waiting).",
            labels=["queue"],
        )
        limit = GaugeMetricFamily(
            "perfectqueue_queue_count_limit",
            "Where the task counts stop (metrics_count_limit): a count at it means at least that many.",
            labels=["queue"],
        )
        for queue in self.counts:
            stats = self.stats(queue)
            if stats is None:
                continue
            for state in STATES:
                tasks.add_metric([queue, state], getattr(stats, state))
            dead.add_metric([queue], stats.dead)
            age.add_metric([queue], stats.oldest_waiting_age or 0)
            limit.add_metric([queue], self.limit)
        return [tasks, dead, age, limit]
