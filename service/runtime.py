"""The one door to a queue: :class:`QueueRuntime`, and :class:`Runtime`, which holds them all.

Every protocol in front of the queues (the HTTP routes, the dashboard's API) reaches a queue
through its ``QueueRuntime``, one ``await`` per operation of CONTRACT.md §3. The runtime owns
what lies between a request and the store:

- the thread hop: store calls block, so they run in worker threads, at most as many at once as
  the pools have connections (:meth:`Runtime.run`);
- merging: concurrent single submits, finishes and immediate polls share one store call
  (:mod:`.batching`);
- long-polls and the rules that wake them (:mod:`.longpoll`): a submit, release, requeue,
  force-release or a retry without wait makes a task waiting; under fair scheduling a finish
  frees a user's slot;
- the service's limits on what a call carries (data size, poll wait);
- the log context (queue and task id of the request's log lines) and what it tells its
  observer (:class:`QueueObserver`: the metrics).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, Protocol, TypeVar

import anyio

from ..errors import (
    AlreadyExistsError,
    CancelRequestedError,
    InvalidError,
    PerfectQueueError,
    PreemptedError,
    UnavailableError,
)
from ..logformat import set_context
from .announce import Announcer
from .batching import Batcher
from .clocks import ClockObserver, ClockWatch
from .config import ResolvedQueue, Settings
from .limits import check_data_size
from .longpoll import LongPoll, PollSlots
from .store import (
    AcquiredTask,
    Counts,
    Database,
    NewTask,
    Page,
    PoolOptions,
    QueueStore,
    RetryItem,
    Task,
    TaskStatus,
    UserLoad,
)
from .store.observer import StoreObserver
from .store.rows import within
from .store.throughput import MinuteCounts
from .store.tls import with_tls
from .store.wakeups import Listener

log = logging.getLogger("perfectqueue.service")

T = TypeVar("T")
Event = Literal[
    "submitted", "rejected", "acquired", "finished", "retried", "released", "preempted", "dead", "cancelled"
]
Outcomes = list[PerfectQueueError | None]
"""Per item of a batch: None (done) or the error a single call would have raised."""

REFUSED: Mapping[type[PerfectQueueError], Event] = {
    PreemptedError: "preempted",
    CancelRequestedError: "cancelled",  # the call ended the task cancelled
}
"""What a refused finish, retry or release counts."""
REFUSED_HEARTBEAT: Mapping[type[PerfectQueueError], Event] = {PreemptedError: "preempted"}
"""A heartbeat answering a cancel request is not counted: the task is not over yet."""
REFUSED_SUBMIT: Mapping[type[PerfectQueueError], Event] = {AlreadyExistsError: "rejected"}


class QueueObserver(StoreObserver, Protocol):
    """What a queue's runtime (and its store) tell the metrics."""

    def counted(self, event: Event, amount: int) -> None:
        """``amount`` tasks met ``event``."""

    def carried(self, call: Literal["submit", "finish"], tasks: int) -> None:
        """A store call carried ``tasks`` tasks (one request's batch, or single calls merged)."""

    def acquired(self, tasks: Sequence[AcquiredTask]) -> None:
        """An acquisition leased ``tasks``."""

    def unavailable(self) -> None:
        """A store call failed because the database did not answer."""

    def polled(self, seconds: float, delivered: bool) -> None:
        """A poll answered after ``seconds`` (its long-poll wait included)."""


class ServiceObserver(ClockObserver, Protocol):
    def thread_waited(self, seconds: float) -> None:
        """A store call waited ``seconds`` for a worker thread to start it."""

    def queue(self, name: str) -> QueueObserver:
        """The observer of one queue."""


class Runner(Protocol):
    def __call__(self, fn: Callable[..., T], /, *args: Any) -> Awaitable[T]: ...


class QueueRuntime:
    """One served queue: each operation as one ``await``."""

    def __init__(
        self,
        settings: ResolvedQueue,
        service: Settings,
        store: QueueStore,
        run: Runner,
        observer: QueueObserver,
        *,
        slots: PollSlots | None = None,
    ) -> None:
        self.name, self.settings, self.service = settings.name, settings, service
        self.store, self.run, self.observer = store, run, observer
        self.finishes: Batcher[tuple[str, int], None] = Batcher(self._finish_merged)
        self.submits: Batcher[NewTask, None] = Batcher(self._submit_merged)
        slots = slots or PollSlots(service.max_long_polls)
        check = service.poll_check_interval
        self.polls = LongPoll(self._acquire, self._has_waiting, self.give_back, check, slots)
        self.announcer = Announcer(lambda: self.run(store.announce), enabled=store.announces)

    # -- producing ------------------------------------------------------------------------------

    async def submit(self, task: NewTask) -> None:
        """Store a waiting task (merged with concurrent submits); AlreadyExistsError if its id
        was used before."""
        set_context(queue=self.name, task_id=task.id)
        check_data_size(task.data, self.service.max_data_bytes)
        await self.submits.call(task)
        self.polls.notify()  # the other replicas: the store announced the task as it stored it

    async def submit_many(self, tasks: Sequence[NewTask]) -> Outcomes:
        set_context(queue=self.name)
        for task in tasks:  # named by id: the caller may have left out tasks it refused itself
            check_data_size(task.data, self.service.max_data_bytes, f"the data of task {task.id!r}")
        self.observer.carried("submit", len(tasks))
        outcomes = await self._call(self.store.submit_many, tasks)
        self._count(outcomes, "submitted", REFUSED_SUBMIT)
        self.polls.notify()  # the other replicas: the store announced the tasks as it stored them
        return outcomes

    # -- working --------------------------------------------------------------------------------

    async def poll(
        self,
        max_tasks: int,
        alive_time: int | None = None,
        wait: float = 0.0,
        gone: Callable[[], Awaitable[bool]] | None = None,
    ) -> list[AcquiredTask]:
        """Lease up to ``max_tasks`` tasks, waiting up to ``wait`` seconds for one. ``gone`` tells
        whether the caller has left meanwhile: its tasks are then given back, not leased to nobody."""
        set_context(queue=self.name)
        if wait > self.service.max_poll_wait:
            raise InvalidError(f"wait must be at most {self.service.max_poll_wait} seconds")
        started = time.perf_counter()
        tasks = await self.within_budget(
            await self.polls.poll(max_tasks, alive_time or self.settings.alive_time, wait)
        )
        if tasks and wait > 0 and gone is not None and await gone():
            await self.give_back(tasks)
            tasks = []
        self.observer.polled(time.perf_counter() - started, bool(tasks))
        return tasks

    async def within_budget(self, tasks: list[AcquiredTask]) -> list[AcquiredTask]:
        """The leading tasks whose data fits in ``max_response_bytes``; the rest are given back
        (waiting again at once, their attempt not counted)."""
        fit = len(list(within((t.task for t in tasks), self.service.max_response_bytes)))
        if fit < len(tasks):
            await self.give_back(tasks[fit:])
        return tasks[:fit]

    async def heartbeat(
        self, task_id: str, lease: int, alive_time: int | None = None, data: dict[str, Any] | None = None
    ) -> None:
        """Extend the lease (optionally replacing the data); CancelRequestedError when it was
        extended but a cancel was requested."""
        set_context(queue=self.name, task_id=task_id)
        check_data_size(data, self.service.max_data_bytes)
        alive = alive_time or self.settings.alive_time
        await self._refusable(REFUSED_HEARTBEAT, self.store.heartbeat, task_id, lease, alive, data)

    async def heartbeat_many(
        self, items: Sequence[tuple[str, int]], alive_time: int | None = None
    ) -> Outcomes:
        set_context(queue=self.name)
        outcomes = await self._call(self.store.heartbeat_many, items, alive_time or self.settings.alive_time)
        self._count(outcomes, None, REFUSED_HEARTBEAT)
        return outcomes

    async def finish(self, task_id: str, lease: int) -> None:
        """Finish a leased task (merged with concurrent finishes)."""
        set_context(queue=self.name, task_id=task_id)
        await self.finishes.call((task_id, lease))
        self._freed()

    async def finish_many(self, items: Sequence[tuple[str, int]]) -> Outcomes:
        set_context(queue=self.name)
        self.observer.carried("finish", len(items))
        outcomes = await self._call(self.store.finish_many, items)
        self._count(outcomes, "finished", REFUSED)
        self._freed()
        return outcomes

    async def retry(
        self,
        task_id: str,
        lease: int,
        retry_wait: int | None = None,
        error: str | None = None,
        dead: bool = False,
    ) -> None:
        """Give the task back for later (the queue's backoff when ``retry_wait`` is None); it ends
        dead instead when its attempts are used up, or at once with ``dead``."""
        set_context(queue=self.name, task_id=task_id)
        retry = self.store.retry
        wait = await self._refusable(REFUSED, retry, task_id, lease, retry_wait, error, dead)
        self.observer.counted("dead" if wait is None else "retried", 1)
        if wait == 0:
            self._woke()

    async def retry_many(self, items: Sequence[RetryItem]) -> Outcomes:
        """Retry many tasks in one transaction, each as :meth:`retry` alone would."""
        set_context(queue=self.name)
        results = await self._call(self.store.retry_many, items)
        outcomes = [r if isinstance(r, PerfectQueueError) else None for r in results]
        self._count(outcomes, None, REFUSED)
        waits = [r for r in results if not isinstance(r, PerfectQueueError)]
        ended: Counter[Event] = Counter("dead" if wait is None else "retried" for wait in waits)
        for event, amount in ended.items():
            self.observer.counted(event, amount)
        if 0 in waits:
            self._woke()
        return outcomes

    async def release(self, task_id: str, lease: int) -> None:
        """Give the task back, deliverable at once."""
        set_context(queue=self.name, task_id=task_id)
        await self._refusable(REFUSED, self.store.release, task_id, lease)
        self.observer.counted("released", 1)
        self._woke()

    async def release_many(self, items: Sequence[tuple[str, int]]) -> Outcomes:
        """Release many tasks in one transaction, each as :meth:`release` alone would."""
        set_context(queue=self.name)
        outcomes = await self._call(self.store.release_many, items)
        self._count(outcomes, "released", REFUSED)
        self._woke()
        return outcomes

    async def give_back(self, tasks: Iterable[AcquiredTask]) -> None:
        """Tasks leased for a caller that has gone: deliverable again at once, rather than leased
        to nobody until their alive_time ends. Never raises: a task that cannot be given back
        comes back when its lease runs out."""
        items = [(acquired.task.id, acquired.lease) for acquired in tasks]
        if not items:
            return
        try:
            outcomes = await self.release_many(items)
        except PerfectQueueError as exc:
            log.warning("could not give back %d task(s): %s", len(items), exc)
            return
        for (task_id, _), error in zip(items, outcomes, strict=True):
            if error is not None:
                log.warning("could not give back task %r: %s", task_id, error)

    # -- the operator's -------------------------------------------------------------------------

    async def force_finish(self, task_id: str) -> None:
        set_context(queue=self.name, task_id=task_id)
        await self._call(self.store.force_finish, task_id)
        self.observer.counted("finished", 1)

    async def force_release(self, task_id: str) -> None:
        set_context(queue=self.name, task_id=task_id)
        await self._call(self.store.force_release, task_id)
        self._woke()

    async def cancel(self, task_id: str, force: bool = False) -> Task:
        set_context(queue=self.name, task_id=task_id)
        task = await self._call(self.store.cancel, task_id, force)
        if task.status.value == "cancelled":  # nobody held it: it ended at once
            self.observer.counted("cancelled", 1)
        return task

    async def requeue(self, task_id: str) -> Task:
        set_context(queue=self.name, task_id=task_id)
        task = await self._call(self.store.requeue, task_id)
        self._woke()
        return task

    # -- reading --------------------------------------------------------------------------------

    async def get(self, task_id: str) -> Task:
        set_context(queue=self.name, task_id=task_id)
        return await self._call(self.store.get, task_id)

    async def list_tasks(
        self,
        *,
        status: TaskStatus | None = None,
        task_type: str | None = None,
        user: str | None = None,
        prefix: str | None = None,
        leased: bool | None = None,
        order: str = "id",
        cursor: str | None = None,
        limit: int = 100,
        with_data: bool = False,
    ) -> Page:
        """A page of tasks, filtered (``QueueStore.list``), without their data unless asked; with
        it, the page stops at ``max_response_bytes`` of data."""
        set_context(queue=self.name)
        return await self._call(
            lambda: self.store.list(
                status=status,
                task_type=task_type,
                user=user,
                prefix=prefix,
                leased=leased,
                order=order,
                cursor=cursor,
                limit=limit,
                with_data=with_data,
                max_bytes=self.service.max_response_bytes,
            )
        )

    async def counts(self, limit: int | None = None) -> Counts:
        """Tasks by state, each count stopping at ``limit`` (default: metrics_count_limit)."""
        return await self._call(self.store.counts, limit or self.service.metrics_count_limit)

    def counts_now(self) -> Counts:
        """:meth:`counts`, blocking (for a caller already in a worker thread: the gauges)."""
        try:
            return self.store.counts(self.service.metrics_count_limit)
        except UnavailableError:
            self.observer.unavailable()
            raise

    async def pause(self) -> None:
        """Polls get nothing from now on (every replica within a second); submits go on."""
        await self._call(self.store.pause)

    async def resume(self) -> None:
        await self._call(self.store.resume)
        self._woke()  # the waiting tasks are deliverable again: the long-polls here and elsewhere look

    async def users(self, users: int) -> list[UserLoad]:
        return await self._call(self.store.users, users, self.service.metrics_count_limit)

    async def ping(self) -> None:
        await self._call(self.store.ping)

    async def throughput(self, start: int, end: int) -> dict[int, tuple[int, int]]:
        """Submitted and finished tasks per minute (the side table every replica adds to)."""
        return await self._call(self.store.throughput, start, end)

    async def add_throughput(self, counts: MinuteCounts) -> None:
        await self._call(self.store.add_throughput, counts)

    async def cleanup(self, batch: int) -> int:
        """Delete up to ``batch`` expired finished rows; how many."""
        return await self._call(self.store.cleanup, batch)

    async def init(self) -> None:
        await self._call(self.store.init)

    def close(self) -> None:
        """Shutting down: waiting polls answer empty at once, and no poll waits again."""
        self.polls.close()

    def in_flight(self) -> list[asyncio.Task[None]]:
        """The work this queue started on its own (an announcement, the long-poll line, merged
        calls), which may hold a database connection in a worker thread."""
        flushers = [self.finishes.flusher, self.submits.flusher]
        flushers += [batcher.flusher for batcher in self.polls.immediate.values()]
        tasks = [self.announcer.sending, self.polls.dispatcher, *flushers]
        return [task for task in tasks if task is not None and not task.done()]

    def heard(self, origin: str | None) -> None:
        """Tasks became waiting through another replica (``origin`` None: perhaps, as a listener
        that was down may have missed it): wake the polls waiting here."""
        if origin != self.store.origin:
            self.polls.notify()

    # -- the store calls ------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """A store call in a worker thread; a database out of reach is observed."""
        try:
            return await self.run(fn, *args)
        except UnavailableError:
            self.observer.unavailable()
            raise

    async def _refusable(
        self, refused: Mapping[type[PerfectQueueError], Event], fn: Callable[..., T], *args: Any
    ) -> T:
        """A store call on one held task, whose refusals are counted."""
        try:
            return await self._call(fn, *args)
        except PerfectQueueError as exc:
            self._count([exc], None, refused)
            raise

    def _count(
        self, outcomes: Iterable[PerfectQueueError | None], done: Event | None, refused: Mapping[type, Event]
    ) -> None:
        events: Counter[Event] = Counter()
        for error in outcomes:
            event = done if error is None else refused.get(type(error))
            if event is not None:
                events[event] += 1
        for event, amount in events.items():
            self.observer.counted(event, amount)

    async def _acquire(self, max_tasks: int, alive_time: int, callers: int) -> list[AcquiredTask]:
        """One acquisition for ``callers`` polls: as much data as their answers may carry."""
        budget = callers * self.service.max_response_bytes
        tasks = await self._call(self.store.acquire, max_tasks, alive_time, budget)
        self.observer.acquired(tasks)
        return tasks

    async def _has_waiting(self) -> bool:
        return await self._call(self.store.has_waiting)

    async def _finish_merged(self, items: list[tuple[str, int]]) -> Outcomes:
        self.observer.carried("finish", len(items))
        if len(items) == 1:  # the cheaper single statement
            outcomes = await self._call(_outcome_of, self.store.finish, *items[0])
        else:
            outcomes = await self._call(self.store.finish_many, items)
        self._count(outcomes, "finished", REFUSED)
        return outcomes

    async def _submit_merged(self, tasks: list[NewTask]) -> Outcomes:
        self.observer.carried("submit", len(tasks))
        if len(tasks) == 1:
            outcomes = await self._call(_outcome_of, self.store.submit, tasks[0])
        else:
            outcomes = await self._call(self.store.submit_many, tasks)
        self._count(outcomes, "submitted", REFUSED_SUBMIT)
        return outcomes

    def _freed(self) -> None:
        """Tasks ended: under fair scheduling their users' max_running has room again, so the
        polls waiting here try at once instead of at their next periodic check (the store told
        the other replicas, in the tasks' own transaction)."""
        if self.store.fair:
            self.polls.notify()

    def _woke(self) -> None:
        """Tasks became waiting through this replica (or, under fair scheduling, a user's slot
        freed): wake the polls waiting here, and announce it to the other replicas."""
        self.polls.notify()
        self.announcer.announce()


def _outcome_of(fn: Callable[..., object], *args: Any) -> Outcomes:
    """A single store call's outcome as a one-item batch answer."""
    try:
        fn(*args)
    except PerfectQueueError as exc:
        return [exc]
    return [None]


class Runtime:
    """What the app holds: the databases, a :class:`QueueRuntime` per queue, and the threads
    that run store calls — at most as many at once as the pools have connections, so that a
    thread never waits for a connection and a burst of polls queues here, not in the pool."""

    def __init__(self, settings: Settings, observer: ServiceObserver) -> None:
        self.settings, self.observer = settings, observer
        self.limiter = anyio.CapacityLimiter(settings.pool_size + settings.pool_overflow)
        self.draining = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.databases: dict[str, Database] = {}
        self.listeners: list[Listener] = []
        self.queues: dict[str, QueueRuntime] = {}
        self.slots = PollSlots(settings.max_long_polls)  # shared by the queues: a limit per replica
        pool = PoolOptions(size=settings.pool_size, overflow=settings.pool_overflow)
        for name in settings.queues:
            resolved = settings.queue(name)
            url = with_tls(resolved.url, resolved.sslca, resolved.ssl_mode)
            if url not in self.databases:
                self.databases[url] = Database(
                    url, pool, settings.isolation_level, settings.statement_timeout
                )
            queue_observer = observer.queue(name)
            store = QueueStore(
                self.databases[url],
                resolved.table,
                retention_time=resolved.retention_time,
                fair=resolved.fair,
                lock=resolved.acquire_lock,
                fair_lock=resolved.fair_lock,
                policy=resolved.retry_policy(),
                observer=queue_observer,
                max_data_bytes=settings.max_data_bytes,
            )
            runtime = QueueRuntime(resolved, settings, store, self.run, queue_observer, slots=self.slots)
            self.queues[name] = runtime
        self.clocks = ClockWatch(self.databases, self.run, observer, settings.max_clock_skew)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking call in a worker thread (its wait for the thread observed)."""
        asked = time.perf_counter()

        def started() -> T:
            self.observer.thread_waited(time.perf_counter() - asked)
            return fn(*args)

        return await anyio.to_thread.run_sync(started, limiter=self.limiter)

    async def start(self) -> None:
        """On the serving loop: create missing tables where told to (by default on SQLite)."""
        self.loop = asyncio.get_running_loop()
        auto_init = self.settings.auto_init
        for queue in self.queues.values():
            if auto_init or (auto_init is None and queue.store.db.is_sqlite):
                await queue.init()
        await self.clocks.measure()
        for db in self.databases.values():
            served = [queue for queue in self.queues.values() if queue.store.db is db]
            listener = db.listen({queue.store.table.name for queue in served}, self._heard)
            if listener is not None:
                self.listeners.append(listener)

    def _heard(self, table: str, origin: str | None) -> None:
        """A listener's notification (in its thread): the queues of that table are woken on the
        serving loop."""
        if self.loop is None or self.loop.is_closed():
            return
        for queue in self.queues.values():
            if queue.store.table.name == table:
                self.loop.call_soon_threadsafe(queue.heard, origin)

    def check(self) -> None:
        """Before serving: refuse databases that cannot work (ConfigError), e.g. a url whose hosts
        are not nodes of one Galera cluster."""
        for db in self.databases.values():
            db.check()

    def begin_shutdown(self) -> None:
        """Readiness fails and every waiting long-poll returns empty, at once."""
        self.draining = True
        for queue in self.queues.values():
            queue.close()

    async def settle(self) -> None:
        """Wait (at most a statement's deadline) for the work the queues started on their own, so
        that no connection is still in use when the databases are disposed."""
        tasks = [task for queue in self.queues.values() for task in queue.in_flight()]
        if tasks:
            await asyncio.wait(tasks, timeout=self.settings.statement_timeout + 1)

    def dispose(self) -> None:
        for listener in self.listeners:
            listener.stop()
        for db in self.databases.values():
            db.dispose()

    async def cleanup_forever(self) -> None:
        """Delete expired finished rows in bounded batches, off the request path (and measure the
        databases' clocks)."""
        batch = self.settings.cleanup_batch
        while True:
            await asyncio.sleep(self.settings.cleanup_interval * random.uniform(0.5, 1.5))
            await self.clocks.measure()
            for queue in self.queues.values():
                try:
                    while await queue.cleanup(batch) == batch:
                        await asyncio.sleep(0.05)
                except PerfectQueueError as exc:
                    log.warning("cleanup of queue %s failed: %s", queue.name, exc)
