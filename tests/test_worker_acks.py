"""The worker's acknowledger (worker/acks.py): finishes merged into batch requests, each task's
answer acted on as its own finish's, over the direct backend on each database."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import expire_lease
from sdk_support import wait_for

import perfectqueue
from perfectqueue.client._http import error_of
from perfectqueue.errors import AlreadyFinishedError, UnavailableError
from perfectqueue.service.store import QueueStore, TaskStatus
from perfectqueue.worker.acks import Acks
from perfectqueue.worker.polling import Poll
from perfectqueue.worker.task import WorkerTask
from perfectqueue.worker.task_monitor import release_all


@pytest.fixture
def queue(db_url: str, table_name: str, store: QueueStore) -> Iterator[perfectqueue.Queue]:
    with perfectqueue.open({"type": "rdb_compat", "url": db_url, "table": table_name}) as opened:
        yield opened


def recorded(queue: perfectqueue.Queue, refuse: str | None = None) -> list[tuple[str, int]]:
    """The calls ``queue`` makes from now on, as (operation, tasks); ``refuse``: that operation
    answers as a service of an earlier version would (no such endpoint)."""
    ops: list[tuple[str, int]] = []
    execute = queue.backend.execute

    def recording(call: Any) -> Any:
        ops.append((call.op, len(getattr(call, "tasks", [None]))))
        if call.op == refuse:
            raise error_of("unknown_endpoint", "no such endpoint", 404)
        return execute(call)

    queue.backend.execute = recording  # type: ignore[method-assign]
    return ops


def leased(queue: perfectqueue.Queue, acks: Acks | None, count: int) -> list[WorkerTask]:
    queue.submit_many([{"key": f"t{i:02}", "type": "x"} for i in range(count)])
    return [WorkerTask(task, None, 600, acks=acks) for task in queue.poll_multi(max=count, alive_time=600)]


def test_finishes_go_in_batches_of_ack_batch_size_and_all_are_sent_on_close(
    queue: perfectqueue.Queue, store: QueueStore
) -> None:
    acks = Acks(queue, batch_size=10, delay=30)
    tasks = leased(queue, acks, 25)
    ops = recorded(queue)
    settled: list[str] = []
    acks.start()
    for task in tasks:
        task.finish()
        task.when_settled(lambda t: settled.append(t.key))
    assert all(task.acknowledging and not task.in_hand for task in tasks[20:])  # waiting for more
    wait_for(lambda: len(settled) == 20)  # two full batches left at once, without the delay
    acks.close()  # the rest now
    assert ops == [("finish_many", 10), ("finish_many", 10), ("finish_many", 5)]
    assert sorted(settled) == sorted(task.key for task in tasks)
    assert {task.outcome for task in tasks} == {"finished"}
    assert queue.stats().finished == 25


def test_a_lone_finish_leaves_within_ack_delay(queue: perfectqueue.Queue) -> None:
    acks = Acks(queue, batch_size=100, delay=0.2)
    (task,) = leased(queue, acks, 1)
    acks.start()
    try:
        started = time.monotonic()
        task.finish()
        wait_for(lambda: task.outcome == "finished", timeout=5)
        assert 0.15 <= time.monotonic() - started < 2
    finally:
        acks.close()


def test_each_answer_of_a_batch_settles_its_own_task(queue: perfectqueue.Queue, store: QueueStore) -> None:
    acks = Acks(queue, batch_size=100, delay=30)
    tasks = {task.key: task for task in leased(queue, acks, 4)}
    queue["t01"].cancel()  # cancel requested while it runs: its finish ends it cancelled
    expire_lease(store, "t02")
    assert [a.task.id for a in store.acquire(1, 60)] == ["t02"]  # another worker's now
    store.finish("t03", int(tasks["t03"].lease))  # finished already (a repeated finish)
    acks.start()
    for task in tasks.values():
        task.finish()
    acks.close()
    outcomes = {key: task.outcome for key, task in tasks.items()}
    assert outcomes == {"t00": "finished", "t01": "cancelled", "t02": "preempted", "t03": "finished"}
    assert tasks["t02"].cancelled.is_set() and tasks["t01"].cancel_requested
    assert store.get("t01").status is TaskStatus.CANCELLED
    assert store.get("t02").status is TaskStatus.RUNNING  # the other worker's lease is untouched


def test_a_refused_batch_falls_back_to_one_finish_per_task(
    queue: perfectqueue.Queue, store: QueueStore
) -> None:
    acks = Acks(queue, batch_size=100, delay=30)
    tasks = leased(queue, acks, 3)
    ops = recorded(queue, refuse="finish_many")
    acks.start()
    for task in tasks:
        task.finish()
    acks.close()
    assert ops == [("finish_many", 3), ("finish", 1), ("finish", 1), ("finish", 1)]
    assert {task.outcome for task in tasks} == {"finished"} and queue.stats().finished == 3


def test_a_retry_is_sent_by_the_acknowledger_on_its_own(queue: perfectqueue.Queue, store: QueueStore) -> None:
    acks = Acks(queue, batch_size=100, delay=30)
    done, again = leased(queue, acks, 2)
    ops = recorded(queue)
    acks.start()
    again.retry(retry_wait=60, error="boom")
    done.finish()
    assert again.acknowledging and ops == []  # the handler did not wait for the queue
    acks.close()
    assert sorted(ops) == [("finish", 1), ("retry", 1)]  # a batch of one is a plain finish
    assert (done.outcome, again.outcome) == ("finished", "retried")
    assert store.get(again.key).last_error == "boom"


def test_retries_go_in_one_batch_each_with_its_own_wait_and_error(
    queue: perfectqueue.Queue, store: QueueStore
) -> None:
    acks = Acks(queue, batch_size=100, delay=30)
    later, now, dead, done = leased(queue, acks, 4)
    ops = recorded(queue)
    acks.start()
    later.retry(retry_wait=600, error="ValueError: later")
    now.retry(retry_wait=0, error="ValueError: now")
    dead.retry(error="UnknownType: no route", dead=True)
    done.finish()
    acks.close()
    assert sorted(ops) == [("finish", 1), ("retry_many", 3)]
    outcomes = [task.outcome for task in (later, now, dead, done)]
    assert outcomes == ["retried", "retried", "dead", "finished"]
    rows = {key: store.get(key) for key in (later.key, now.key, dead.key)}
    assert [row.last_error for row in rows.values()] == [
        "ValueError: later",
        "ValueError: now",
        "UnknownType: no route",
    ]
    assert rows[dead.key].status is TaskStatus.DEAD and rows[now.key].status is TaskStatus.WAITING
    assert rows[later.key].timeout >= int(time.time()) + 500


def test_a_refused_retry_batch_falls_back_to_one_retry_per_task(queue: perfectqueue.Queue) -> None:
    acks = Acks(queue, batch_size=100, delay=30)
    tasks = leased(queue, acks, 2)
    ops = recorded(queue, refuse="retry_many")
    acks.start()
    for task in tasks:
        task.retry(retry_wait=0)
    acks.close()
    assert ops == [("retry_many", 2), ("retry", 1), ("retry", 1)]
    assert {task.outcome for task in tasks} == {"retried"} and queue.stats().waiting == 2


@pytest.mark.parametrize("refuse", [None, "release_many"])
def test_tasks_given_back_together_go_in_one_release(
    queue: perfectqueue.Queue, store: QueueStore, refuse: str | None
) -> None:
    tasks = leased(queue, None, 4)
    tasks[3].finish()  # not in hand: not released
    expire_lease(store, tasks[2].key)
    assert [a.task.id for a in store.acquire(1, 60)] == [tasks[2].key]  # another worker's now
    ops = recorded(queue, refuse)
    release_all(tasks, "stopping")
    alone = [("release", 1)] * 3 if refuse else []
    assert ops == [("release_many", 3), *alone]
    assert [task.outcome for task in tasks] == ["released", "released", "preempted", "finished"]
    assert queue.stats().waiting == 2


@pytest.mark.parametrize("refuse", [None, "release_many"])
def test_an_abandoned_poll_gives_its_tasks_back_in_one_release(
    queue: perfectqueue.Queue, refuse: str | None
) -> None:
    queue.submit_many([{"key": f"t{i}", "type": "x"} for i in range(3)])
    ops = recorded(queue, refuse)
    poll = Poll(queue, 3, 600, 0.0, close=lambda: None)
    assert poll.take() is None  # abandoned before it answered: it gives back what it gets
    poll.start()
    alone = [("release", 1)] * 3 if refuse else []
    wait_for(lambda: len(ops) == 2 + len(alone), timeout=10)
    assert ops == [("poll", 1), ("release_many", 3), *alone]
    assert queue.stats().waiting == 3


def test_a_second_settle_is_refused_without_asking_the_queue(queue: perfectqueue.Queue) -> None:
    acks = Acks(queue, batch_size=100, delay=30)
    (task,) = leased(queue, acks, 1)
    ops = recorded(queue)
    task.finish()
    for second in (task.finish, task.retry, task.release):
        with pytest.raises(AlreadyFinishedError):
            second()
    assert ops == []
    acks.start()
    acks.close()
    assert task.outcome == "finished"


def unavailable_for(queue: perfectqueue.Queue, calls: int) -> list[str]:
    """The first ``calls`` requests answer as an unreachable service would (after the SDK's own
    retries); the operations asked, in order."""
    ops: list[str] = []
    execute = queue.backend.execute

    def flaky(call: Any) -> Any:
        ops.append(call.op)
        if len(ops) <= calls:
            raise UnavailableError("the service is out of reach")
        return execute(call)

    queue.backend.execute = flaky  # type: ignore[method-assign]
    return ops


def test_finishes_the_service_could_not_take_are_sent_again(queue: perfectqueue.Queue) -> None:
    acks = Acks(queue, batch_size=100, delay=0)
    tasks = leased(queue, acks, 2)
    ops = unavailable_for(queue, 1)
    acks.start()
    try:
        for task in tasks:
            task.finish()
        wait_for(lambda: all(task.outcome == "finished" for task in tasks), timeout=10)
    finally:
        acks.close()
    assert len(ops) >= 2 and queue.stats().finished == 2  # tried again after the outage


def test_at_a_stop_an_unreachable_service_leaves_the_task_to_its_lease(
    queue: perfectqueue.Queue, store: QueueStore
) -> None:
    acks = Acks(queue, batch_size=100, delay=30)
    (task,) = leased(queue, acks, 1)
    unavailable_for(queue, 1)
    acks.start()
    task.finish()
    acks.close()
    assert task.outcome == "unsettled" and task.cancelled.is_set()
    assert store.get(task.key).status is TaskStatus.RUNNING  # comes back when its lease expires
