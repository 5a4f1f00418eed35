"""Attempts, dead tasks, requeue, recorded errors, backoff and traceparent: the store's contract
on SQLite and MariaDB."""

from __future__ import annotations

import pytest
from conftest import db_now, expire_lease

from perfectqueue.errors import AlreadyFinishedError, InvalidError, NotDeadError, PreemptedError
from perfectqueue.service.store import Database, NewTask, QueueStore, TaskStatus
from perfectqueue.service.store.model import DELETE_OFFSET, LAST_ERROR_CHARS, RetryPolicy
from perfectqueue.service.store.queue import LEASE_EXPIRED

TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def store_with(store: QueueStore, fair: bool = True, **policy: object) -> QueueStore:
    """Another store on the same table with a retry policy of its own."""
    return QueueStore(store.db, store.table.name, fair=fair, policy=RetryPolicy(**policy))  # type: ignore[arg-type]


def test_each_acquisition_counts_an_attempt_and_a_release_gives_it_back(store: QueueStore) -> None:
    store.submit(NewTask("a", "x"))
    assert store.get("a").attempts == 0
    [first] = store.acquire(1, 60)
    assert first.task.attempts == 1 and store.get("a").attempts == 1
    store.retry("a", first.lease, 0, error="ValueError: bad")
    [second] = store.acquire(1, 60)
    assert second.task.attempts == 2 and second.task.last_error == "ValueError: bad"
    store.release("a", second.lease)
    assert store.get("a").attempts == 1  # a release is not an attempt
    [third] = store.acquire(1, 60)
    assert third.task.attempts == 2
    assert [t.attempts for t in store.list().tasks] == [2]


def test_a_failing_task_is_dead_after_max_attempts_with_its_last_error(store: QueueStore) -> None:
    store.submit(NewTask("p", "x", max_attempts=2))
    [one] = store.acquire(1, 60)
    assert store.retry("p", one.lease, 0, error="KeyError: 'a'") == 0
    [two] = store.acquire(1, 60)
    long_error = "RuntimeError: " + "é" * 5000
    assert store.retry("p", two.lease, 0, error=long_error) is None  # used up: dead at once
    dead = store.get("p")
    assert (dead.status, dead.attempts, dead.created_at) == (TaskStatus.DEAD, 2, None)
    assert dead.last_error is not None and len(dead.last_error) == LAST_ERROR_CHARS
    assert dead.last_error.startswith("RuntimeError: é") and dead.user is None
    assert store.acquire(10, 60) == []
    retained = dead.timeout + DELETE_OFFSET - db_now(store)
    assert 604800 - 5 <= retained <= 604800  # its own retention (7 days by default)
    with pytest.raises(PreemptedError):
        store.finish("p", two.lease)  # the last holder cannot finish a dead task


@pytest.mark.parametrize("fair", [True, False], ids=["fair", "oldest first"])
def test_a_task_whose_lease_keeps_expiring_ends_dead(store: QueueStore, fair: bool) -> None:
    """What a worker killed on every attempt leaves behind: expired leases, each an attempt. The
    acquisition that finds its attempts used up ends it dead without counting one more."""
    limited = store_with(store, fair, max_attempts=3)  # the queue's limit, for tasks without their own
    limited.submit(NewTask("k", "x", user="acme", max_running=1))
    limited.submit(NewTask("own", "x", max_attempts=1))
    for attempt in (1, 2, 3):
        got = {a.task.id: a for a in limited.acquire(10, 60)}
        assert got["k"].task.attempts == attempt
        expire_lease(limited, "k")
        if "own" in got:
            expire_lease(limited, "own")
    assert limited.acquire(10, 60) == []  # attempt 4 would start: dead instead
    dead = limited.get("k")
    assert (dead.status, dead.attempts, dead.last_error, dead.user) == (
        TaskStatus.DEAD,
        3,
        LEASE_EXPIRED,
        "acme",
    )
    assert limited.get("own").status is TaskStatus.DEAD
    assert [t.id for t in limited.list(status=TaskStatus.DEAD).tasks] == ["k", "own"]
    assert limited.list(status=TaskStatus.FINISHED).tasks == []
    counts = limited.counts()
    assert (counts.dead, counts.finished, counts.waiting, counts.running) == (2, 0, 0, 0)
    assert store.get("k").status is TaskStatus.DEAD  # a store without the limit reads the same


def test_an_unlimited_queue_retries_forever_as_the_original(store: QueueStore) -> None:
    store.submit(NewTask("u", "x"))
    for _ in range(5):
        [got] = store.acquire(1, 60)
        store.retry("u", got.lease, 0)
    assert store.get("u").status is TaskStatus.WAITING and store.get("u").attempts == 5


def test_requeue_resets_a_dead_task_and_force_finish_finishes_one(store: QueueStore) -> None:
    store.submit(NewTask("d", "x", {"n": 1}, user="acme", max_attempts=1))
    store.submit(NewTask("e", "x", max_attempts=1))
    for got in store.acquire(10, 60):
        store.retry(got.task.id, got.lease, 0, error="boom")
    store.submit(NewTask("w", "x"))
    with pytest.raises(NotDeadError):
        store.requeue("w")
    requeued = store.requeue("d")
    assert (requeued.status, requeued.attempts, requeued.user, requeued.data) == (
        TaskStatus.WAITING,
        0,
        "acme",
        {"n": 1},
    )
    again = {a.task.id: a for a in store.acquire(10, 60)}["d"]
    assert again.task.attempts == 1
    store.finish("d", again.lease)
    with pytest.raises(AlreadyFinishedError):
        store.requeue("d")
    store.force_finish("e")  # an operator finishes a dead task: an ordinary finished one now
    assert store.get("e").status is TaskStatus.FINISHED
    with pytest.raises(AlreadyFinishedError):
        store.force_finish("e")


def test_dead_rows_outlive_finished_ones_in_cleanup(store: QueueStore) -> None:
    short = QueueStore(
        store.db, store.table.name, retention_time=0, policy=RetryPolicy(dead_retention_time=3600)
    )
    short.submit_many([NewTask("f", "x"), NewTask("g", "x", max_attempts=1)])
    for got in short.acquire(10, 60):
        if got.task.id == "f":
            short.finish("f", got.lease)
        else:
            short.retry("g", got.lease, 0)
    expired = db_now(store) - DELETE_OFFSET
    assert short.get("f").timeout <= expired < short.get("g").timeout
    assert short.cleanup() == 1
    assert short.get("g").status is TaskStatus.DEAD


def test_retry_without_a_wait_uses_the_queues_backoff(store: QueueStore) -> None:
    constant = store_with(store, retry_wait=40, backoff="constant")
    exponential = store_with(store, retry_wait=10, backoff="exponential", retry_wait_max=35, retry_jitter=0)
    constant.submit(NewTask("c", "x"))
    [got] = constant.acquire(1, 60)
    constant.retry("c", got.lease)
    assert 38 <= constant.get("c").timeout - db_now(store) <= 40
    exponential.submit(NewTask("e", "x"))
    waits = []
    for _ in range(4):
        [got] = exponential.acquire(1, 60)
        waits.append(exponential.retry("e", got.lease))
        expire_lease(exponential, "e")  # deliverable again without waiting it out
    assert waits == [10, 20, 35, 35]  # doubling per attempt, capped at retry_wait_max


def test_backoff_jitter_stays_within_its_fraction() -> None:
    policy = RetryPolicy(retry_wait=100, backoff="exponential", retry_wait_max=10_000, retry_jitter=0.5)
    waits = {policy.wait(3) for _ in range(200)}
    assert min(waits) >= 200 and max(waits) <= 400 and len(waits) > 10
    assert RetryPolicy(retry_wait=7, backoff="constant").wait(9) == 7  # the original's retry_wait
    with pytest.raises(InvalidError):
        RetryPolicy(backoff="linear")
    assert RetryPolicy(max_attempts=2).exhausted(2, None) and not RetryPolicy(max_attempts=None).exhausted(
        10**6, None
    )
    assert not RetryPolicy(max_attempts=2).exhausted(2, 5)  # the task's own limit wins


def test_traceparent_is_stored_and_validated_strictly(store: QueueStore) -> None:
    store.submit(NewTask("t", "x", traceparent=TRACE))
    assert store.get("t").traceparent == TRACE
    [got] = store.acquire(1, 60)
    assert got.task.traceparent == TRACE
    for bad in (
        TRACE.upper(),
        "01" + TRACE[2:],
        "00-" + "0" * 32 + TRACE[35:],
        TRACE[:36] + "0" * 16 + "-01",
        TRACE + "-x",
        TRACE.replace("-", "_"),
        " " + TRACE,
    ):
        with pytest.raises(InvalidError):
            NewTask("bad", "x", traceparent=bad)
    for bad_limit in (0, -1, True):
        with pytest.raises(InvalidError):
            NewTask("bad", "x", max_attempts=bad_limit)  # type: ignore[arg-type]


def test_a_table_without_the_columns_is_served_as_the_original_until_init(
    database: Database, table_name: str
) -> None:
    from test_store_fair_compat import create_original_table

    create_original_table(database, table_name)
    store = QueueStore(database, table_name, policy=RetryPolicy(max_attempts=1))
    store.submit(NewTask("o", "x"))
    [got] = store.acquire(1, 60)
    assert got.task.attempts == 0  # not counted: there is no column for it yet
    store.retry("o", got.lease, 0, error="ignored")
    assert store.get("o").status is TaskStatus.WAITING  # never dead without the columns
    assert store.counts().dead == 0 and store.list(status=TaskStatus.DEAD).tasks == []
    store.init()
    [got] = store.acquire(1, 60)
    assert got.task.attempts == 1
    assert store.retry("o", got.lease, 0, error="now kept") is None
    assert (store.get("o").status, store.get("o").last_error) == (TaskStatus.DEAD, "now kept")
