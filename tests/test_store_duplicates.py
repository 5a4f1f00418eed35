"""The same task twice in one batch call, on both backends: each batch operation answers every
item as the same calls made one after the other would, so that a layer merging concurrent calls
into one batch may pass duplicates through.

- submit_many: the first task of an id is stored; a later one answers AlreadyExistsError.
- finish_many: the first (id, lease) finishes the task; a repeat answers AlreadyFinished, and
  another lease for the task Preempted.
- heartbeat_many: a heartbeat changes nothing a second one would not, so a repeat answers the
  same; of two leases for one task, the one holding it extends it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import db_now, drop_table, expire_lease

from perfectqueue.errors import (
    AlreadyExistsError,
    AlreadyFinishedError,
    CancelRequestedError,
    NotFoundError,
    PerfectQueueError,
    PreemptedError,
)
from perfectqueue.service.store import Database, NewTask, QueueStore, TaskStatus

Items = list[tuple[str, int]]


@pytest.fixture
def twin(database: Database, table_name: str) -> Iterator[QueueStore]:
    """A second table, to play the same calls one at a time."""
    queue = QueueStore(database, table_name + "_twin")
    queue.init()
    yield queue
    drop_table(database, queue.table.name)


def kinds(results: list[PerfectQueueError | None]) -> list[type[PerfectQueueError] | None]:
    return [None if r is None else type(r) for r in results]


def one_at_a_time(call: Callable[[str, int], Any], items: Items) -> list[type[PerfectQueueError] | None]:
    answers: list[type[PerfectQueueError] | None] = []
    for task_id, lease in items:
        try:
            call(task_id, lease)
            answers.append(None)
        except PerfectQueueError as exc:
            answers.append(type(exc))
    return answers


def statements(store: QueueStore, call: Callable[[], Any]) -> list[str]:
    """The first word of each statement ``call`` sent on the table."""
    sent: list[str] = []

    def capture(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if store.table.name in statement:
            sent.append(statement.split(maxsplit=1)[0].upper())

    sa.event.listen(store.db.engine, "before_cursor_execute", capture)
    try:
        call()
    finally:
        sa.event.remove(store.db.engine, "before_cursor_execute", capture)
    return sent


# -- submit_many -------------------------------------------------------------------------------


def test_submit_many_stores_the_first_task_of_an_id_and_refuses_the_later_ones(store: QueueStore) -> None:
    store.submit(NewTask("old", "x", {"v": "stored"}))
    batch = [
        NewTask("a", "x", {"v": 1}),
        NewTask("old", "x", {"v": 2}),
        NewTask("a", "x", {"v": 3}),
        NewTask("b", "x"),
        NewTask("old", "x", {"v": 4}),
        NewTask("a", "x", {"v": 5}),
    ]

    results = store.submit_many(batch)

    refused = AlreadyExistsError
    assert kinds(results) == [None, refused, refused, None, refused, refused]
    assert str(results[1]) == "task 'old' already exists"
    assert str(results[2]) == "task 'a' already exists (submitted more than once at a time)"
    assert str(results[4]) == "task 'old' already exists (submitted more than once at a time)"
    assert (store.get("a").data, store.get("old").data) == ({"v": 1}, {"v": "stored"})
    assert {t.id for t in store.list().tasks} == {"old", "a", "b"}


def test_submit_many_of_one_id_only_stores_it_once(store: QueueStore) -> None:
    results = store.submit_many([NewTask("a", "x", {"v": i}) for i in range(3)])
    assert kinds(results) == [None, AlreadyExistsError, AlreadyExistsError]
    assert store.get("a").data == {"v": 0}


# -- finish_many -------------------------------------------------------------------------------


def finish_scenario(store: QueueStore) -> Items:
    """Tasks held by one acquisition, one taken over by a second, one a cancel was asked for."""
    store.submit_many([NewTask(i, "x") for i in ("a", "b", "p", "k")])
    first = {a.task.id: a.lease for a in store.acquire(10, 60)}
    store.cancel("k")  # leased: a cancel is requested
    expire_lease(store, "p")
    (taken,) = store.acquire(10, 60)
    old, new = first["a"], taken.lease
    return [
        ("a", old),
        ("b", old),
        ("a", old),  # the same finish again
        ("p", old),  # taken over: the old lease is refused
        ("p", new),
        ("p", new),
        ("p", old),  # after the new lease finished it: still not this lease's
        ("k", old),
        ("k", old),
        ("gone", old),
    ]


def test_finish_many_answers_each_item_as_finishes_one_after_the_other(
    store: QueueStore, twin: QueueStore
) -> None:
    results = store.finish_many(finish_scenario(store))

    assert kinds(results) == [
        None,
        None,
        AlreadyFinishedError,
        PreemptedError,
        None,
        AlreadyFinishedError,
        PreemptedError,
        CancelRequestedError,
        CancelRequestedError,
        NotFoundError,
    ]
    assert kinds(results) == one_at_a_time(twin.finish, finish_scenario(twin))
    statuses = {i: store.get(i).status for i in ("a", "b", "p", "k")}
    assert statuses == {
        "a": TaskStatus.FINISHED,
        "b": TaskStatus.FINISHED,
        "p": TaskStatus.FINISHED,
        "k": TaskStatus.CANCELLED,
    }


@pytest.mark.parametrize("acquisitions", [1, 2])
def test_finish_many_with_repeated_finishes_is_still_one_update(store: QueueStore, acquisitions: int) -> None:
    """Tasks held by one lease, or by two: one fenced UPDATE, the repeats answered without it."""
    store.submit_many([NewTask(i, "x") for i in ("a", "b")])
    a, b = store.acquire(2, 60) if acquisitions == 1 else store.acquire(1, 60) + store.acquire(1, 60)
    assert (a.lease == b.lease) is (acquisitions == 1)
    items = [(a.task.id, a.lease), (b.task.id, b.lease), (a.task.id, a.lease), (b.task.id, b.lease)]
    results: list[PerfectQueueError | None] = []

    sent = statements(store, lambda: results.extend(store.finish_many(items)))

    assert kinds(results) == [None, None, AlreadyFinishedError, AlreadyFinishedError]
    assert sent == ["UPDATE"]
    assert {store.get(i).status for i in ("a", "b")} == {TaskStatus.FINISHED}


# -- heartbeat_many ----------------------------------------------------------------------------


def heartbeat_scenario(store: QueueStore) -> Items:
    store.submit_many([NewTask(i, "x") for i in ("a", "p", "k")])
    first = {a.task.id: a.lease for a in store.acquire(10, 60)}
    store.cancel("k")
    expire_lease(store, "p")
    (taken,) = store.acquire(10, 60)
    old, new = first["a"], taken.lease
    return [("a", old), ("a", old), ("p", old), ("p", new), ("p", new), ("p", old), ("k", old), ("k", old)]


def test_heartbeat_many_answers_a_repeat_as_a_second_heartbeat_would(
    store: QueueStore, twin: QueueStore
) -> None:
    results = store.heartbeat_many(heartbeat_scenario(store), 600)

    preempted, stop = PreemptedError, CancelRequestedError
    assert kinds(results) == [None, None, preempted, None, None, preempted, stop, stop]
    assert kinds(results) == one_at_a_time(
        lambda i, lease: twin.heartbeat(i, lease, 600), heartbeat_scenario(twin)
    )
    now = db_now(store)
    assert all(store.get(i).timeout >= now + 590 for i in ("a", "p", "k"))
    assert store.get("k").status is TaskStatus.RUNNING  # asked to stop, not ended by a heartbeat
