"""Prometheus metrics of the service, served at ``/metrics`` (docs/operations.md lists them all).

:class:`ServiceMetrics` is the observer the runtime is built with (:class:`~.runtime.ServiceObserver`)
and :class:`QueueMetrics` a queue's (:class:`~.runtime.QueueObserver`): the queue runtime and the
store tell them each operation's outcome, the one place events are counted (the dashboard's
per-minute throughput adds up the same counts, :class:`PerMinute`). :class:`~.httpmetrics.HttpMetrics`
(fed by the request log's middleware) counts requests by method, route template and status.
The per-queue gauges are computed at scrape time by :mod:`.gauges`. Each app has a registry of
its own (never the process-wide one), so that any number of apps can live in one process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from .gauges import QueueGauges
from .runtime import Event
from .store import AcquiredTask, Counts
from .store.model import Outcome
from .trouble import Trouble

EVENTS: dict[Event, str] = {
    "submitted": "Tasks stored by a submit.",
    "rejected": "Submits refused by the queue because the id exists (finished within retention included).",
    "acquired": "Tasks leased to a poller.",
    "finished": "Tasks finished, by their worker or by an operator's force-finish.",
    "retried": "Tasks given back by a retry, to be delivered again later.",
    "released": "Tasks given back by a release (or by a long-poll whose client had gone).",
    "preempted": "Heartbeats, finishes, retries and releases refused: the lease is no longer the caller's.",
    "dead": "Tasks whose attempts were used up (at a retry, or at an acquisition after a lease expired).",
    "cancelled": "Tasks that ended cancelled (by a cancel, at their holder's next call after one, or "
    "at an acquisition after the holder's lease expired).",
}
"""One counter ``perfectqueue_tasks_<event>_total{queue}`` per entry."""

WAIT_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
POLL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
LOCK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
THREAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 10)
CALL_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
PER_MINUTE = ("submitted", "finished")
"""The events also added up per minute, for the dashboard's throughput chart."""


class PerMinute:
    """Counts of PER_MINUTE events per (queue, minute) not yet written to the side table."""

    def __init__(self) -> None:
        self.pending: dict[tuple[str, int], list[int]] = {}
        self._lock = threading.Lock()  # counted in store threads, taken on the event loop

    def add(self, queue: str, event: str, amount: int, minute: int | None = None) -> None:
        minute = int(time.time()) // 60 * 60 if minute is None else minute
        with self._lock:
            self.pending.setdefault((queue, minute), [0, 0])[PER_MINUTE.index(event)] += amount

    def take(self) -> dict[tuple[str, int], list[int]]:
        with self._lock:
            pending, self.pending = self.pending, {}
        return pending


class ServiceMetrics:
    """The service's metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.per_minute = PerMinute()
        self.trouble = Trouble()
        self.gauges: QueueGauges | None = None
        r = self.registry
        self.events: dict[str, Counter] = {
            name: Counter(f"perfectqueue_tasks_{name}", text, ["queue"], registry=r)
            for name, text in EVENTS.items()
        }
        self.database_errors = Counter(
            "perfectqueue_database_errors",
            "Store operations that failed because the database did not answer (answered 503).",
            ["queue"],
            registry=r,
        )
        self.queue_wait = Histogram(
            "perfectqueue_queue_wait_seconds",
            "Seconds from a task's submit to its acquisition (whole seconds: the table's resolution).",
            ["queue"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.poll_duration = Histogram(
            "perfectqueue_poll_duration_seconds",
            "Seconds a poll took to answer, long-poll wait included, by whether it delivered tasks.",
            ["queue", "result"],
            buckets=POLL_BUCKETS,
            registry=r,
        )
        self.lock_wait = Histogram(
            "perfectqueue_acquire_lock_wait_seconds",
            "Seconds an acquisition waited for its named locks: the table's (acquire_lock: get_lock, "
            "fair_lock: table) or those of the users a fair acquisition served.",
            ["queue"],
            buckets=LOCK_BUCKETS,
            registry=r,
        )
        self.lock_held = Histogram(
            "perfectqueue_acquire_lock_held_seconds",
            "Seconds an acquisition held its named locks (the table's, or users'), its commit included.",
            ["queue"],
            buckets=LOCK_BUCKETS,
            registry=r,
        )
        self.call_tasks = Histogram(
            "perfectqueue_store_call_tasks",
            "Tasks per store call, by call (submit, finish: the tasks it carried, one request's batch "
            "or the single calls merged into it; acquire: the tasks it leased).",
            ["queue", "call"],
            buckets=CALL_BUCKETS,
            registry=r,
        )
        self.thread_wait = Histogram(
            "perfectqueue_store_thread_wait_seconds",
            "Seconds a store call waited for a worker thread to start it (every thread busy, or the "
            "interpreter lock held by the event loop).",
            buckets=THREAD_BUCKETS,
            registry=r,
        )
        self.database_clock = Gauge(
            "perfectqueue_database_clock_skew_seconds",
            "Seconds the database's clock is ahead of this replica's host (negative: behind), "
            "measured at start and at every cleanup round.",
            ["database"],
            registry=r,
        )
        self.http_requests = Counter(
            "perfectqueue_http_requests", "HTTP requests answered.", ["method", "route", "status"], registry=r
        )
        self.http_duration = Histogram(
            "perfectqueue_http_request_duration_seconds",
            "Seconds to answer an HTTP request.",
            ["method", "route"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.http_in_flight = Gauge(
            "perfectqueue_http_requests_in_flight", "HTTP requests being answered now.", registry=r
        )

    def count(self, event: str, queue: str, amount: int = 1) -> None:
        if amount:
            self.events[event].labels(queue).inc(amount)
            if event in PER_MINUTE:
                self.per_minute.add(queue, event, amount)

    def watch(self, counts: Mapping[str, Callable[[], Counts]], limit: int) -> None:
        """Export the gauges of the queues whose counts ``counts`` reads (at scrape time)."""
        self.gauges = QueueGauges(counts, limit)
        self.registry.register(self.gauges)

    def thread_waited(self, seconds: float) -> None:
        self.thread_wait.observe(seconds)

    def clock_skew(self, database: str, seconds: float) -> None:
        self.database_clock.labels(database).set(seconds)

    def queue(self, name: str) -> QueueMetrics:
        return QueueMetrics(self, name)

    def exposition(self) -> bytes:
        """The text format of every metric (this runs the gauge queries: call it off the loop)."""
        return generate_latest(self.registry)


class QueueMetrics:
    """One queue's observer (:class:`~.runtime.QueueObserver`): what its runtime and its store
    tell, counted under the queue's name."""

    def __init__(self, metrics: ServiceMetrics, queue: str) -> None:
        self.metrics, self.queue = metrics, queue

    def counted(self, event: Event, amount: int) -> None:
        self.metrics.count(event, self.queue, amount)

    def carried(self, call: Literal["submit", "finish"], tasks: int) -> None:
        self.metrics.call_tasks.labels(self.queue, call).observe(tasks)

    def acquired(self, tasks: Sequence[AcquiredTask]) -> None:
        self.metrics.call_tasks.labels(self.queue, "acquire").observe(len(tasks))
        self.metrics.count("acquired", self.queue, len(tasks))
        now, queue_wait = time.time(), self.metrics.queue_wait.labels(self.queue)
        for acquired in tasks:
            if acquired.task.created_at is not None:
                queue_wait.observe(max(0.0, now - acquired.task.created_at))

    def unavailable(self) -> None:
        self.metrics.database_errors.labels(self.queue).inc()
        self.metrics.trouble.error(self.queue)

    def polled(self, seconds: float, delivered: bool) -> None:
        self.metrics.poll_duration.labels(self.queue, "tasks" if delivered else "empty").observe(seconds)

    def lock_held(self, waited: float, held: float) -> None:
        self.metrics.lock_wait.labels(self.queue).observe(waited)
        self.metrics.trouble.waited(self.queue, waited)
        self.metrics.lock_held.labels(self.queue).observe(held)

    def ended(self, outcome: Outcome, count: int) -> None:
        self.metrics.count(outcome.value, self.queue, count)


def endpoint(run: Callable[..., Any], metrics: ServiceMetrics) -> Callable[[Request], Any]:
    """``GET /metrics``: the exposition is built in a worker thread (the gauges query)."""

    async def serve_metrics(_request: Request) -> Response:
        body = await run(metrics.exposition)
        return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)

    return serve_metrics
