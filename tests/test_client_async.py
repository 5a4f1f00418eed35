"""The asyncio SDK (``perfectqueue.open_async``), against the real service and the direct
``rdb_compat`` backend, each over SQLite and MariaDB. Each test drives one ``asyncio.run``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sdk_support import Target, config, next_time, target

import perfectqueue
from perfectqueue.client import AsyncAcquiredTask, AsyncQueue, AsyncTask, RetrySpec, SubmitSpec
from perfectqueue.errors import (
    AlreadyExistsError,
    AlreadyFinishedError,
    IdempotentError,
    InvalidError,
    NotFoundError,
    PreemptedError,
    UnknownQueueError,
)

__all__ = ["config", "target"]  # the fixtures

Scenario = Callable[[AsyncQueue], Awaitable[None]]


def run(config: dict[str, Any], scenario: Scenario) -> None:
    async def main() -> None:
        async with perfectqueue.open_async(config) as queue:
            assert isinstance(queue, AsyncQueue)
            await scenario(queue)

    asyncio.run(main())


async def poll_one(queue: AsyncQueue, **options: Any) -> AsyncAcquiredTask:
    task = await queue.poll(**options)
    assert task is not None
    return task


def test_submit_metadata_exists_and_already_exists(config: dict[str, Any]) -> None:
    async def scenario(queue: AsyncQueue) -> None:
        task = await queue.submit("k", "mail", {"to": "a"}, user="acme", max_running=2)
        assert isinstance(task, AsyncTask) and task.key == "k"
        meta = await task.metadata()
        assert (meta.type, meta.data, meta.user, meta.max_running, meta.status) == (
            "mail",
            {"to": "a"},
            "acme",
            2,
            "waiting",
        )
        assert await queue["k"].exists()
        assert not await queue["missing"].exists()
        with pytest.raises(AlreadyExistsError) as raised:
            await queue.submit("k", "other", {"to": "b"})
        assert isinstance(raised.value, IdempotentError)
        assert (await queue["k"].metadata()).type == "mail"

    run(config, scenario)


def test_submit_many_and_concurrent_submits(config: dict[str, Any]) -> None:
    async def scenario(queue: AsyncQueue) -> None:
        await asyncio.gather(*(queue.submit(f"c{i:02d}", "t", {"i": i}) for i in range(20)))
        result = await queue.submit_many([SubmitSpec("new", "t"), {"key": "c00", "type": "t"}])
        assert result.successful == ["new"]
        assert [f.key for f in result.failed] == ["c00"]
        assert isinstance(result.failed[0].error, AlreadyExistsError)
        keys = [t.key async for t in queue]
        assert keys == sorted([f"c{i:02d}" for i in range(20)] + ["new"])

    run(config, scenario)


def test_poll_finish_and_finish_again(config: dict[str, Any]) -> None:
    async def scenario(queue: AsyncQueue) -> None:
        assert await queue.poll() is None
        await queue.submit("k", "resize", {"w": 1}, user="u")
        task = await poll_one(queue, alive_time=60)
        assert isinstance(task, AsyncAcquiredTask)
        assert (task.key, task.type, task.data, task.user) == ("k", "resize", {"w": 1}, "u")
        assert task.lease and (await task.metadata()).is_running()
        assert await queue.poll_multi(max=5) == []
        await task.finish()
        with pytest.raises(AlreadyFinishedError):
            await task.finish()
        assert (await task.metadata()).is_finished()
        assert await queue.poll() is None

    run(config, scenario)


def test_retry_release_heartbeat_and_update_data(config: dict[str, Any]) -> None:
    async def scenario(queue: AsyncQueue) -> None:
        await queue.submit("k", "convert", {"a": 1})
        first = await poll_one(queue, alive_time=30)
        await first.retry(retry_wait=0)
        second = await poll_one(queue, alive_time=30)
        assert second.lease != first.lease
        await second.release()
        third = await poll_one(queue, alive_time=30)
        before = next_time(await third.metadata())
        await third.heartbeat(alive_time=900)
        assert next_time(await third.metadata()) >= before + 800
        await third.update_data({"b": 2})
        assert third.data == {"a": 1, "b": 2}
        meta = await third.metadata()
        assert (meta.type, meta.data) == ("convert", {"a": 1, "b": 2})
        await third.retry()  # the default retry_wait (300 s): not delivered at once
        assert await queue.poll() is None

    run(config, scenario)


def test_retry_many_and_release_many(config: dict[str, Any]) -> None:
    async def scenario(queue: AsyncQueue) -> None:
        await queue.submit_many([{"key": key, "type": "t"} for key in ("a", "b", "c")])
        held = {task.key: task for task in await queue.poll_multi(max=3, alive_time=600)}
        retried = await queue.retry_many([RetrySpec(held["a"], retry_wait=0, error="E: x"), held["b"]])
        assert (retried.successful, retried.failed) == (["a", "b"], [])
        released = await queue.release_many([held["c"], held["a"]])
        assert released.successful == ["c"]
        assert [(f.key, type(f.error)) for f in released.failed] == [("a", PreemptedError)]
        assert (await queue["a"].metadata()).last_error == "E: x"
        assert {task.key for task in await queue.poll_multi(max=3)} == {"a", "c"}  # b waits its backoff

    run(config, scenario)


def test_lease_operations_after_a_takeover_are_preempted(config: dict[str, Any]) -> None:
    async def scenario(queue: AsyncQueue) -> None:
        await queue.submit("k", "t")
        stale = await poll_one(queue, alive_time=1)
        deadline = time.monotonic() + 20
        while (current := await queue.poll(alive_time=600)) is None:
            assert time.monotonic() < deadline, "the expired lease was never taken over"
            await asyncio.sleep(0.05)
        assert current.lease != stale.lease
        for operation in (stale.heartbeat, stale.finish, stale.release, lambda: stale.retry(retry_wait=0)):
            with pytest.raises(PreemptedError):
                await operation()
        with pytest.raises(PreemptedError):
            await stale.update_data({"x": 1})
        await current.finish()

    run(config, scenario)


def test_force_finish_and_not_found(config: dict[str, Any]) -> None:
    async def scenario(queue: AsyncQueue) -> None:
        await queue.submit("k", "t")
        await queue["k"].force_finish()
        assert (await queue["k"].metadata()).is_finished()
        with pytest.raises(AlreadyFinishedError):
            await queue["k"].force_finish()
        with pytest.raises(NotFoundError):
            await queue["missing"].force_finish()
        with pytest.raises(NotFoundError):
            await queue["missing"].metadata()

    run(config, scenario)


def test_bulk_requeues_what_the_filters_select(config: dict[str, Any]) -> None:
    async def scenario(queue: AsyncQueue) -> None:
        for key in ("a1", "a2", "b1"):
            await queue.submit(key, "t", max_attempts=1)
            await (await poll_one(queue)).retry(error="boom")  # its only attempt: dead
        first = await queue.bulk("requeue", status="dead", prefix="a", limit=1)
        assert first.successful == ["a1"] and first.cursor is not None
        rest = await queue.bulk("requeue", status="dead", prefix="a", cursor=first.cursor)
        assert (rest.successful, rest.failed, rest.cursor) == (["a2"], [], None)
        assert [(await queue[k].metadata()).status for k in ("a1", "a2", "b1")] == [
            "waiting",
            "waiting",
            "dead",
        ]
        cancelled = await queue.bulk("cancel", status="waiting")
        assert sorted(cancelled.successful) == ["a1", "a2"]
        refused = await queue.bulk("requeue", status="cancelled")  # as requeue answers alone
        assert [type(f.error) for f in refused.failed] == [AlreadyFinishedError, AlreadyFinishedError]

    run(config, scenario)


def test_iteration_over_many_pages_filters_and_stats(config: dict[str, Any]) -> None:
    async def scenario(queue: AsyncQueue) -> None:
        keys = [f"t{i:03d}" for i in range(150)]
        await queue.submit_many({"key": k, "type": "a" if i < 50 else "b"} for i, k in enumerate(keys))
        listed = [t.key async for t in queue]
        assert listed == keys
        assert [t.key async for t in queue.tasks(type="a", page_size=9)] == keys[:50]
        tasks = await queue.poll_multi(max=3)
        await tasks[0].finish()
        assert len([t async for t in queue.tasks(status="running")]) == 2
        stats = await queue.stats()
        assert (stats.waiting, stats.running, stats.finished) == (147, 2, 1)

    run(config, scenario)


def test_long_poll_returns_when_a_task_is_submitted(config: dict[str, Any]) -> None:
    async def scenario(queue: AsyncQueue) -> None:
        async def submit_soon() -> None:
            await asyncio.sleep(0.3)  # the poll below is waiting by then (the test passes either way)
            async with perfectqueue.open_async(config) as other:
                await other.submit("late", "t")

        started = time.monotonic()
        polled, _ = await asyncio.gather(queue.poll_multi(max=2, wait=8), submit_soon())
        assert [t.key for t in polled] == ["late"]
        assert time.monotonic() - started < 6

    run(config, scenario)


def test_invalid_requests(config: dict[str, Any]) -> None:
    async def scenario(queue: AsyncQueue) -> None:
        with pytest.raises(InvalidError):
            await queue.submit("k", "t", {"type": "reserved"})
        with pytest.raises(InvalidError):
            await queue.poll_multi(max=0)
        assert [t async for t in queue] == []

    run(config, scenario)


@pytest.mark.parametrize("target", ["http-sqlite", "http-mysql"], indirect=True)
def test_unknown_queue(target: Target) -> None:

    async def scenario(queue: AsyncQueue) -> None:
        with pytest.raises(UnknownQueueError):
            await queue.submit("k", "t")
        with pytest.raises(UnknownQueueError):
            await queue.poll_multi(wait=1)
        with pytest.raises(UnknownQueueError):
            await queue.stats()

    run({"url": target.base, "queue": "not-declared"}, scenario)
