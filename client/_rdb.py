"""The direct ``rdb_compat`` backend: the seed's configuration (``url`` of the database and
``table``) served in-process by the store, with no service in between.

Only this module imports the store (and so SQLAlchemy and the driver), and only when a queue is
opened with ``type: rdb_compat``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from ..errors import PerfectQueueError
from ..settings import QueueSettings
from ._calls import Bulk, Call, R, RetryItem
from ._types import (
    INSTANTS,
    STATES,
    BatchResult,
    BulkResult,
    Failure,
    Leased,
    Page,
    QueueStats,
    SubmitSpec,
    TaskMetadata,
    from_unix,
)

WAIT_STEP = 0.2
T = TypeVar("T")


class RdbBackend:
    """Synchronous backend over :class:`perfectqueue.service.store.QueueStore`: each call is
    carried out by the method of the :class:`~._calls.Direct` protocol it names."""

    def __init__(self, url: str, table: str, **settings: Any) -> None:
        """``settings``: the queue's keys (:class:`perfectqueue.settings.QueueSettings`)."""
        from ..service.store import Database, QueueStore
        from ..service.store.model import RetryPolicy
        from ..service.store.tls import with_tls

        queue = QueueSettings(url=url, table=table, **settings)
        self.db = Database(with_tls(url, queue.sslca, queue.ssl_mode))
        self.store = QueueStore(
            self.db,
            table,
            retention_time=queue.retention_time,
            fair=queue.fair,
            lock=queue.acquire_lock,
            fair_lock=queue.fair_lock,
            policy=RetryPolicy(queue),
        )
        self.alive_time, self.name = queue.alive_time, table

    def execute(self, call: Call[R]) -> R:
        return call.direct(self)

    def close(self) -> None:
        self.db.dispose()

    def submit(self, task: SubmitSpec) -> None:
        self.store.submit(_new_task(task))

    def submit_many(self, tasks: list[SubmitSpec]) -> BatchResult:
        results = self.store.submit_many([_new_task(t) for t in tasks])
        return _batch([t.key for t in tasks], results)

    def poll(self, max: int, alive_time: int | None, wait: float) -> list[Leased]:
        deadline = time.monotonic() + wait
        while True:
            acquired = self.store.acquire(max, alive_time or self.alive_time)
            if acquired or time.monotonic() >= deadline:
                return [Leased(_metadata(a.task), str(a.lease)) for a in acquired]
            time.sleep(min(WAIT_STEP, deadline - time.monotonic()))

    def heartbeat(self, id: str, lease: str, alive_time: int | None, data: dict[str, Any] | None) -> None:
        self.store.heartbeat(id, int(lease), alive_time or self.alive_time, data)

    def heartbeat_many(self, tasks: list[tuple[str, str]], alive_time: int | None) -> BatchResult:
        items = [(key, int(lease)) for key, lease in tasks]
        results = self.store.heartbeat_many(items, alive_time or self.alive_time)
        return _batch([key for key, _ in tasks], results)

    def finish(self, id: str, lease: str) -> None:
        self.store.finish(id, int(lease))

    def finish_many(self, tasks: list[tuple[str, str]]) -> BatchResult:
        results = self.store.finish_many([(key, int(lease)) for key, lease in tasks])
        return _batch([key for key, _ in tasks], results)

    def retry(self, id: str, lease: str, retry_wait: int | None, error: str | None, dead: bool) -> None:
        self.store.retry(id, int(lease), retry_wait, error, dead)

    def retry_many(self, tasks: list[RetryItem]) -> BatchResult:
        from ..service.store import RetryItem as StoreItem

        items = [StoreItem(key, int(lease), wait, error, dead) for key, lease, wait, error, dead in tasks]
        results = self.store.retry_many(items)
        errors = [r if isinstance(r, PerfectQueueError) else None for r in results]
        return _batch([key for key, *_ in tasks], errors)

    def cancel(self, id: str, force: bool = False) -> TaskMetadata:
        return _metadata(self.store.cancel(id, force))

    def requeue(self, id: str) -> TaskMetadata:
        return _metadata(self.store.requeue(id))

    def release(self, id: str, lease: str) -> None:
        self.store.release(id, int(lease))

    def release_many(self, tasks: list[tuple[str, str]]) -> BatchResult:
        results = self.store.release_many([(key, int(lease)) for key, lease in tasks])
        return _batch([key for key, _ in tasks], results)

    def force_finish(self, id: str) -> None:
        self.store.force_finish(id)

    def get(self, id: str) -> TaskMetadata:
        return _metadata(self.store.get(id))

    def list_tasks(
        self, status: str | None, type: str | None, user: str | None, cursor: str | None, limit: int
    ) -> Page:
        from ..service.store import TaskStatus

        page = self.store.list(
            status=TaskStatus(status) if status else None,
            task_type=type,
            user=user,
            cursor=cursor,
            limit=limit,
        )
        return Page([_metadata(t) for t in page.tasks], page.cursor)

    def stats(self) -> QueueStats:
        counts = self.store.counts()
        states = {name: getattr(counts, name) for name in STATES}
        return QueueStats(self.name, **states, capped=counts.capped, paused_at=from_unix(counts.paused_at))

    def pause(self, paused: bool) -> QueueStats:
        if paused:
            self.store.pause()
        else:
            self.store.resume()
        return self.stats()

    def bulk(self, call: Bulk) -> BulkResult:
        """The service's bulk action (:mod:`perfectqueue.service.bulk`) on the store itself."""
        from ..service import bulk
        from ..service.store import TaskStatus

        selection = bulk.Selection(
            TaskStatus(call.status), call.task_type, call.user, call.prefix, call.cursor, call.limit
        )
        done = _completed(bulk.apply(_StoreNow(self.store), call.action, selection))
        keys = [key for key, _ in done.outcomes]
        batch = _batch(keys, [error for _, error in done.outcomes])
        return BulkResult(batch.successful, batch.failed, done.cursor)


class _StoreNow:
    """The store's calls as the awaitables a bulk action awaits: each is done when awaited."""

    def __init__(self, store: Any) -> None:
        self.store = store

    async def list_tasks(self, **filters: Any) -> Any:
        return self.store.list(with_data=False, **filters)

    async def requeue(self, task_id: str) -> Any:
        return self.store.requeue(task_id)

    async def cancel(self, task_id: str) -> Any:
        return self.store.cancel(task_id)


def _completed(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (it awaits only :class:`_StoreNow`) to its end, here
    and now: no event loop, so it works in any thread, a running loop's included."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise RuntimeError("a bulk action on the store suspended")


class AsyncRdbBackend:
    """The asyncio face of :class:`RdbBackend`: each call runs in a worker thread."""

    def __init__(self, **options: Any) -> None:
        self.sync = RdbBackend(**options)

    async def execute(self, call: Call[R]) -> R:
        return await asyncio.to_thread(self.sync.execute, call)

    async def close(self) -> None:
        self.sync.close()


def _new_task(spec: SubmitSpec) -> Any:
    from ..service.store import NewTask

    return NewTask(
        spec.key,
        spec.type,
        spec.data,
        spec.user,
        spec.max_running,
        spec.run_at,
        spec.compression,
        spec.max_attempts,
        spec.traceparent,
    )


def _metadata(task: Any) -> TaskMetadata:
    return TaskMetadata(
        key=task.id,
        type=task.type,
        data=task.data,
        status=task.status.value,
        user=task.user,
        created_at=from_unix(task.created_at),
        max_running=task.max_running,
        compression=task.compression,
        attempts=task.attempts,
        max_attempts=task.max_attempts,
        last_error=task.last_error,
        cancel_requested=task.cancel_requested,
        traceparent=task.traceparent,
        leased=task.leased,
        holder=task.holder,
        **{name: from_unix(getattr(task, name)) for name in INSTANTS},
    )


def _batch(keys: list[str], results: list[Any]) -> BatchResult:
    failed = [Failure(key, err) for key, err in zip(keys, results, strict=True) if err is not None]
    return BatchResult([key for key, err in zip(keys, results, strict=True) if err is None], failed)
