"""The asyncio SDK: the same queue, tasks and calls as :mod:`.queue`, awaited."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, Literal, Protocol

from ..errors import NotFoundError
from . import _calls as calls
from ._calls import R
from ._types import BatchResult, BulkResult, Leased, QueueStats, RetrySpec, SubmitSpec, TaskMetadata
from .queue import _spec


class AsyncBackend(Protocol):
    async def execute(self, call: calls.Call[R]) -> R: ...

    async def close(self) -> None: ...


class AsyncQueue:
    """One queue, for asyncio applications. Use ``async with``, or await :meth:`close`."""

    def __init__(self, backend: AsyncBackend) -> None:
        self.backend = backend

    async def __aenter__(self) -> AsyncQueue:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.backend.close()

    async def submit(
        self,
        key: str,
        type: str,
        data: Mapping[str, Any] | None = None,
        *,
        user: str | None = None,
        max_running: int | None = None,
        run_at: int | None = None,
        compression: str | None = None,
        max_attempts: int | None = None,
        traceparent: str | None = None,
    ) -> AsyncTask:
        spec = SubmitSpec(
            key, type, dict(data or {}), user, max_running, run_at, compression, max_attempts, traceparent
        )
        await self.backend.execute(calls.Submit(spec))
        return AsyncTask(self, key)

    async def submit_many(self, tasks: Iterable[SubmitSpec | Mapping[str, Any]]) -> BatchResult:
        return await self.backend.execute(calls.SubmitMany([_spec(t) for t in tasks]))

    async def poll(self, *, alive_time: int | None = None) -> AsyncAcquiredTask | None:
        tasks = await self.poll_multi(max=1, alive_time=alive_time)
        return tasks[0] if tasks else None

    async def poll_multi(
        self, *, max: int = 10, alive_time: int | None = None, wait: float = 0.0
    ) -> list[AsyncAcquiredTask]:
        leased = await self.backend.execute(calls.Poll(max, alive_time, wait))
        return [AsyncAcquiredTask(self, item) for item in leased]

    async def heartbeat_many(
        self, tasks: Iterable[AsyncAcquiredTask], *, alive_time: int | None = None
    ) -> BatchResult:
        """Extend the leases of up to 1,000 tasks in one request; per-task results (see
        :meth:`Queue.heartbeat_many <perfectqueue.client.Queue.heartbeat_many>`)."""
        return await self.backend.execute(calls.HeartbeatMany.of(tasks, alive_time))

    async def finish_many(self, tasks: Iterable[AsyncAcquiredTask]) -> BatchResult:
        """Finish up to 1,000 tasks in one request; per-task results (see
        :meth:`Queue.finish_many <perfectqueue.client.Queue.finish_many>`)."""
        return await self.backend.execute(calls.FinishMany.of(tasks))

    async def retry_many(self, tasks: Iterable[AsyncAcquiredTask | RetrySpec]) -> BatchResult:
        """Retry up to 1,000 tasks in one request; per-task results (see
        :meth:`Queue.retry_many <perfectqueue.client.Queue.retry_many>`)."""
        return await self.backend.execute(calls.RetryMany.of(tasks))

    async def release_many(self, tasks: Iterable[AsyncAcquiredTask]) -> BatchResult:
        """Give up to 1,000 tasks back in one request; per-task results (see
        :meth:`Queue.release_many <perfectqueue.client.Queue.release_many>`)."""
        return await self.backend.execute(calls.ReleaseMany.of(tasks))

    def __getitem__(self, key: str) -> AsyncTask:
        return AsyncTask(self, key)

    async def tasks(
        self,
        *,
        status: str | None = None,
        type: str | None = None,
        user: str | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[TaskMetadata]:
        cursor: str | None = None
        while True:
            page = await self.backend.execute(calls.ListTasks(status, type, user, cursor, page_size))
            for task in page.tasks:
                yield task
            if page.cursor is None:
                return
            cursor = page.cursor

    def __aiter__(self) -> AsyncIterator[TaskMetadata]:
        return self.tasks()

    async def stats(self) -> QueueStats:
        return await self.backend.execute(calls.Stats())

    async def pause(self) -> QueueStats:
        return await self.backend.execute(calls.Pause(True))

    async def resume(self) -> QueueStats:
        return await self.backend.execute(calls.Pause(False))

    async def bulk(
        self,
        action: Literal["requeue", "cancel"],
        *,
        status: str,
        type: str | None = None,
        user: str | None = None,
        prefix: str | None = None,
        cursor: str | None = None,
        limit: int = 1000,
    ) -> BulkResult:
        return await self.backend.execute(calls.Bulk(action, status, type, user, prefix, cursor, limit))


class AsyncTask:
    def __init__(self, queue: AsyncQueue, key: str) -> None:
        self.queue, self.key = queue, key

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.key!r})"

    async def metadata(self) -> TaskMetadata:
        return await self.queue.backend.execute(calls.Get(self.key))

    async def exists(self) -> bool:
        try:
            await self.metadata()
        except NotFoundError:
            return False
        return True

    async def force_finish(self) -> None:
        await self.queue.backend.execute(calls.ForceFinish(self.key))

    async def cancel(self, force: bool = False) -> TaskMetadata:
        return await self.queue.backend.execute(calls.Cancel(self.key, force))

    async def requeue(self) -> TaskMetadata:
        return await self.queue.backend.execute(calls.Requeue(self.key))


class AsyncAcquiredTask(AsyncTask):
    def __init__(self, queue: AsyncQueue, leased: Leased) -> None:
        super().__init__(queue, leased.metadata.key)
        self.acquired = leased.metadata
        self.lease = leased.lease
        self.data: dict[str, Any] = dict(leased.metadata.data)

    @property
    def type(self) -> str:
        return self.acquired.type

    @property
    def user(self) -> str | None:
        return self.acquired.user

    @property
    def attempts(self) -> int:
        return self.acquired.attempts

    @property
    def traceparent(self) -> str | None:
        return self.acquired.traceparent

    async def finish(self) -> None:
        await self.queue.backend.execute(calls.Finish(self.key, self.lease))

    async def retry(
        self, retry_wait: int | None = None, error: str | None = None, *, dead: bool = False
    ) -> None:
        await self.queue.backend.execute(calls.Retry(self.key, self.lease, retry_wait, error, dead))

    async def release(self) -> None:
        await self.queue.backend.execute(calls.Release(self.key, self.lease))

    async def heartbeat(self, alive_time: int | None = None) -> None:
        await self.queue.backend.execute(calls.Heartbeat(self.key, self.lease, alive_time))

    async def update_data(self, changes: Mapping[str, Any], alive_time: int | None = None) -> None:
        data = {**self.data, **changes}
        await self.queue.backend.execute(calls.Heartbeat(self.key, self.lease, alive_time, data))
        self.data = data
