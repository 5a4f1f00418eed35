"""Prometheus metrics of the service, served at ``/metrics`` (docs/operations.md lists them all).

Counters and histograms are counted from outside the store: :class:`MeteredQueueStore` is the
store with each operation's outcome counted (the one place events are counted: the dashboard's
per-minute throughput adds up the same counts, :class:`PerMinute`), :class:`MeteredLongPoll`
times polls, and :class:`~.httpmetrics.HttpMetrics` (fed by the request log's middleware) counts
requests by method, route template and status. The per-queue gauges are computed at scrape time
by :mod:`.gauges`. Each app has a registry of its own (never the process-wide one), so that any
number of apps can live in one process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from ..errors import (
    AlreadyExistsError,
    CancelRequestedError,
    PerfectQueueError,
    PreemptedError,
    UnavailableError,
)
from ..logformat import log_context, set_context
from .longpoll import LongPoll
from .store import AcquiredTask, NewTask, QueueStore
from .store.model import Outcome

T = TypeVar("T")

EVENTS: dict[str, str] = {
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
        r = self.registry
        self.events = {
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
            "Seconds an acquisition waited for the table's named lock (fair scheduling, or "
            "acquire_lock: get_lock, on MySQL).",
            ["queue"],
            buckets=LOCK_BUCKETS,
            registry=r,
        )
        self.lock_held = Histogram(
            "perfectqueue_acquire_lock_held_seconds",
            "Seconds an acquisition held the table's named lock, its commit included.",
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

    def exposition(self) -> bytes:
        """The text format of every metric (this runs the gauge queries: call it off the loop)."""
        return generate_latest(self.registry)


class MeteredQueueStore(QueueStore):
    """The store, with every operation's outcome counted under its queue's name."""

    def __init__(self, metrics: ServiceMetrics, queue: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.metrics, self.queue = metrics, queue

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        set_context(queue=self.queue)
        try:
            return fn(*args, **kwargs)
        except UnavailableError:
            self.metrics.database_errors.labels(self.queue).inc()
            raise

    def _lease_call(self, fn: Callable[..., T], task_id: str, *args: Any, **kwargs: Any) -> T:
        """A call on one task, whose refusals are counted (preempted; cancelled: the call ended
        the task cancelled); the task id goes into the request's log lines."""
        set_context(task_id=task_id)
        try:
            return self._call(fn, task_id, *args, **kwargs)
        except PreemptedError:
            self.metrics.count("preempted", self.queue)
            raise
        except CancelRequestedError:
            self.metrics.count("cancelled", self.queue)
            raise

    def _carries(self, call: str, tasks: int) -> None:
        self.metrics.call_tasks.labels(self.queue, call).observe(tasks)

    def submit(self, task: NewTask) -> None:
        set_context(task_id=task.id)
        self._carries("submit", 1)
        try:
            self._call(super().submit, task)
        except AlreadyExistsError:
            self.metrics.count("rejected", self.queue)
            raise
        self.metrics.count("submitted", self.queue)

    def submit_many(self, tasks: Sequence[NewTask]) -> list[PerfectQueueError | None]:
        self._carries("submit", len(tasks))
        results = self._call(super().submit_many, tasks)
        self._count_results(results, "submitted", rejected=AlreadyExistsError)
        return results

    def acquire(self, max_tasks: int, alive_time: int) -> list[AcquiredTask]:
        tasks = self._call(super().acquire, max_tasks, alive_time)
        self._carries("acquire", len(tasks))
        self.metrics.count("acquired", self.queue, len(tasks))
        now = time.time()
        for acquired in tasks:
            if acquired.task.created_at is not None:
                self.metrics.queue_wait.labels(self.queue).observe(max(0.0, now - acquired.task.created_at))
        return tasks

    def locked(self, waited: float, held: float) -> None:
        self.metrics.lock_wait.labels(self.queue).observe(waited)
        self.metrics.lock_held.labels(self.queue).observe(held)

    def ended(self, outcome: Outcome, count: int) -> None:
        """Tasks an acquisition ended dead or cancelled."""
        self.metrics.count(outcome.value, self.queue, count)

    def heartbeat(self, task_id: str, *args: Any, **kwargs: Any) -> Any:
        set_context(task_id=task_id)
        try:  # a cancel request it answers is not counted: the task is not over yet
            return self._call(super().heartbeat, task_id, *args, **kwargs)
        except PreemptedError:
            self.metrics.count("preempted", self.queue)
            raise

    def heartbeat_many(
        self, items: Sequence[tuple[str, int]], alive_time: int
    ) -> list[PerfectQueueError | None]:
        results = self._call(super().heartbeat_many, items, alive_time)
        preempted = sum(isinstance(error, PreemptedError) for error in results)
        if preempted:  # as for one heartbeat, a cancel request answered is not counted
            self.metrics.count("preempted", self.queue, preempted)
        return results

    def retry(self, task_id: str, *args: Any, **kwargs: Any) -> Any:
        result = self._lease_call(super().retry, task_id, *args, **kwargs)
        # None: the task's attempts were used up and the retry ended it dead
        self.metrics.count("dead" if result is None else "retried", self.queue)
        return result

    def release(self, task_id: str, *args: Any, **kwargs: Any) -> Any:
        result = self._lease_call(super().release, task_id, *args, **kwargs)
        self.metrics.count("released", self.queue)
        return result

    def finish(self, task_id: str, *args: Any, **kwargs: Any) -> Any:
        self._carries("finish", 1)
        result = self._lease_call(super().finish, task_id, *args, **kwargs)
        self.metrics.count("finished", self.queue)
        return result

    def finish_many(self, items: Sequence[tuple[str, int]]) -> list[PerfectQueueError | None]:
        self._carries("finish", len(items))
        results = self._call(super().finish_many, items)
        self._count_results(results, "finished")
        return results

    def force_finish(self, task_id: str, *args: Any, **kwargs: Any) -> Any:
        set_context(task_id=task_id)
        result = self._call(super().force_finish, task_id, *args, **kwargs)
        self.metrics.count("finished", self.queue)
        return result

    def cancel(self, task_id: str, *args: Any, **kwargs: Any) -> Any:
        set_context(task_id=task_id)
        task = self._call(super().cancel, task_id, *args, **kwargs)
        if getattr(task, "status", None) == "cancelled":  # nobody held it: it ended at once
            self.metrics.count("cancelled", self.queue)
        return task

    def _count_results(
        self, results: Sequence[PerfectQueueError | None], done: str, rejected: type | None = None
    ) -> None:
        for error in results:
            if error is None:
                self.metrics.count(done, self.queue)
            elif rejected is not None and isinstance(error, rejected):
                self.metrics.count("rejected", self.queue)
            elif isinstance(error, PreemptedError):
                self.metrics.count("preempted", self.queue)
            elif isinstance(error, CancelRequestedError):
                self.metrics.count("cancelled", self.queue)

    # The reads: counted only when the database fails them.

    def get(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(super().get, *args, **kwargs)

    def list(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(super().list, *args, **kwargs)

    def counts(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(super().counts, *args, **kwargs)

    def users(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(super().users, *args, **kwargs)

    def ping(self) -> None:
        self._call(super().ping)

    def has_waiting(self) -> bool:
        return self._call(super().has_waiting)

    def force_release(self, task_id: str) -> None:
        set_context(task_id=task_id)
        self._call(super().force_release, task_id)

    def cleanup(self, batch: int = 1000) -> int:
        return self._call(super().cleanup, batch)


class MeteredLongPoll(LongPoll):
    """Long-polls, each timed into ``perfectqueue_poll_duration_seconds``."""

    def __init__(self, metrics: ServiceMetrics, queue: str, *args: Any) -> None:
        super().__init__(*args)
        self.metrics, self.queue = metrics, queue

    async def poll(self, max_tasks: int, alive_time: int, wait: float) -> list[AcquiredTask]:
        started = time.perf_counter()
        tasks = await super().poll(max_tasks, alive_time, wait)
        result = "tasks" if tasks else "empty"
        self.metrics.poll_duration.labels(self.queue, result).observe(time.perf_counter() - started)
        return tasks

    def _start_dispatcher(self) -> None:
        """The dispatcher serves every waiter: it must not carry the log context of the request
        that happened to start it (a task copies the context it is created in)."""
        token = log_context.set(None)
        try:
            super()._start_dispatcher()
        finally:
            log_context.reset(token)


def endpoint(run: Callable[..., Any], metrics: ServiceMetrics) -> Callable[[Request], Any]:
    """``GET /metrics``: the exposition is built in a worker thread (the gauges query)."""

    async def serve_metrics(_request: Request) -> Response:
        body = await run(metrics.exposition)
        return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)

    return serve_metrics
