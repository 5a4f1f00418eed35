"""CONTRACT.md §2 and §3 on both backends: retry, release, force_finish, get, list, counts, cleanup,
and an unreachable database."""

from __future__ import annotations

import time
import uuid

import pytest
import sqlalchemy as sa
from conftest import db_now, set_timeout

from perfectqueue.errors import (
    AlreadyFinishedError,
    InvalidError,
    NotFoundError,
    PreemptedError,
    UnavailableError,
)
from perfectqueue.service.store import Database, NewTask, QueueStore, TaskStatus
from perfectqueue.service.store.model import DELETE_OFFSET


def row_ids(store: QueueStore) -> set[str]:
    with store.db.engine.connect() as conn:
        return {r[0] for r in conn.execute(sa.select(store.table.c.id))}


def all_pages(store: QueueStore, limit: int, **filters: object) -> list[str]:
    """Every id the listing returns, following cursors (bounded, so a cursor loop fails)."""
    ids: list[str] = []
    cursor = None
    for _ in range(200):
        page = store.list(cursor=cursor, limit=limit, **filters)  # type: ignore[arg-type]
        assert len(page.tasks) <= limit
        ids += [t.id for t in page.tasks]
        if page.cursor is None:
            return ids
        assert page.cursor != cursor  # progress
        cursor = page.cursor
    raise AssertionError("the listing did not end")


def make_mixed(store: QueueStore) -> dict[str, int]:
    store.submit(NewTask("r1", "mail", {"n": 2}, user="bob"))
    store.submit(NewTask("f1", "mail", {"n": 3}, user="alice"))
    leases = {a.task.id: a.lease for a in store.acquire(10, 600)}
    store.finish("f1", leases["f1"])
    store.submit(NewTask("w1", "mail", {"n": 1}, user="alice", max_running=2))
    store.submit(NewTask("w2", "sms", {"n": 4}))
    return leases


# -- retry and release -----------------------------------------------------------------------


def test_retry_delivers_again_after_the_wait(store: QueueStore) -> None:
    store.submit(NewTask("r", "x", {"v": 1}))
    [got] = store.acquire(1, 60)
    before = db_now(store)
    store.retry("r", got.lease, 120)
    after = db_now(store)
    task = store.get("r")
    assert task.status is TaskStatus.RUNNING  # not deliverable before the wait
    assert before + 120 <= task.timeout <= after + 120
    assert store.acquire(5, 60) == []
    set_timeout(store, "r", db_now(store))  # the wait has passed
    [again] = store.acquire(5, 60)
    assert again.task.id == "r" and again.lease != got.lease and again.task.data == {"v": 1}
    for call in (
        lambda: store.heartbeat("r", got.lease, 60),
        lambda: store.finish("r", got.lease),
        lambda: store.retry("r", got.lease, 0),
        lambda: store.release("r", got.lease),
    ):
        with pytest.raises(PreemptedError):
            call()
    store.retry("r", again.lease, 0)  # retry_wait 0: deliverable at once
    assert [a.task.id for a in store.acquire(5, 60)] == ["r"]


def test_retried_task_cannot_be_touched_with_its_old_lease_before_reacquire(store: QueueStore) -> None:
    store.submit(NewTask("r2", "x"))
    [got] = store.acquire(1, 60)
    store.retry("r2", got.lease, 100)
    with pytest.raises(PreemptedError):
        store.heartbeat("r2", got.lease, 60)
    with pytest.raises(PreemptedError):
        store.finish("r2", got.lease)
    with pytest.raises(PreemptedError):
        store.retry("gone", got.lease, 0)
    with pytest.raises(InvalidError):
        store.retry("r2", got.lease, -1)


def test_release_is_deliverable_at_once(store: QueueStore) -> None:
    store.submit(NewTask("rel", "x"))
    [got] = store.acquire(1, 60)
    store.release("rel", got.lease)
    assert store.get("rel").status is TaskStatus.WAITING
    [again] = store.acquire(1, 60)
    assert again.task.id == "rel" and again.lease != got.lease
    with pytest.raises(PreemptedError):
        store.release("rel", got.lease)
    store.finish("rel", again.lease)
    with pytest.raises(PreemptedError):
        store.release("rel", again.lease)  # finished


# -- force_finish ----------------------------------------------------------------------------


def test_force_finish(store: QueueStore) -> None:
    store.submit(NewTask("waiting", "x"))
    store.submit(NewTask("running", "x", user="u", max_running=1))
    [got] = [a for a in store.acquire(5, 60) if a.task.id == "running"]
    store.submit(NewTask("still", "x"))
    store.force_finish("waiting")
    store.force_finish("running")
    for task_id in ("waiting", "running"):
        task = store.get(task_id)
        assert (task.status, task.created_at, task.user) == (TaskStatus.FINISHED, None, None)
    with pytest.raises(NotFoundError):
        store.force_finish("unknown")
    with pytest.raises(AlreadyFinishedError):
        store.force_finish("running")
    with pytest.raises(AlreadyFinishedError):
        store.finish("running", got.lease)  # the holder learns it is finished
    with pytest.raises(PreemptedError):
        store.heartbeat("running", got.lease, 60)
    assert [a.task.id for a in store.acquire(5, 60)] == ["still"]


# -- get -------------------------------------------------------------------------------------


def test_get_unknown_is_not_found(store: QueueStore) -> None:
    with pytest.raises(NotFoundError):
        store.get("nope")
    store.submit(NewTask("yes", "x"))
    with pytest.raises(NotFoundError):
        store.get("Yes")
    assert store.get("yes").id == "yes"


def test_get_reads_every_field_in_each_state(store: QueueStore) -> None:
    make_mixed(store)
    now = db_now(store)
    w1, r1, f1 = store.get("w1"), store.get("r1"), store.get("f1")
    assert (w1.status, w1.type, w1.data, w1.user, w1.max_running) == (
        TaskStatus.WAITING,
        "mail",
        {"n": 1},
        "alice",
        2,
    )
    assert w1.created_at is not None and w1.created_at <= now and w1.timeout <= now
    assert (r1.status, r1.user, r1.data) == (TaskStatus.RUNNING, "bob", {"n": 2})
    assert r1.created_at is not None and r1.timeout > now
    assert (f1.status, f1.user, f1.created_at, f1.data) == (TaskStatus.FINISHED, None, None, {"n": 3})
    assert f1.timeout <= now - DELETE_OFFSET + store.retention_time


# -- list and counts -------------------------------------------------------------------------


def test_list_filters_by_status_type_and_user(store: QueueStore) -> None:
    make_mixed(store)

    def ids(**filters: object) -> list[str]:
        page = store.list(**filters)  # type: ignore[arg-type]
        assert page.cursor is None
        return [t.id for t in page.tasks]

    assert ids() == ["f1", "r1", "w1", "w2"]
    assert ids(status=TaskStatus.WAITING) == ["w1", "w2"]
    assert ids(status=TaskStatus.RUNNING) == ["r1"]
    assert ids(status=TaskStatus.FINISHED) == ["f1"]
    assert ids(task_type="mail") == ["f1", "r1", "w1"]
    assert ids(task_type="sms") == ["w2"]
    assert ids(task_type="none") == []
    assert ids(user="alice") == ["w1"]  # a finished task has no user any more
    assert ids(user="bob", status=TaskStatus.RUNNING) == ["r1"]
    assert ids(user="bob", status=TaskStatus.WAITING) == []
    assert ids(task_type="mail", status=TaskStatus.WAITING) == ["w1"]
    statuses = {t.id: t.status for t in store.list().tasks}
    assert statuses == {
        "f1": TaskStatus.FINISHED,
        "r1": TaskStatus.RUNNING,
        "w1": TaskStatus.WAITING,
        "w2": TaskStatus.WAITING,
    }
    with pytest.raises(InvalidError):
        store.list(limit=0)


def test_counts(store: QueueStore) -> None:
    assert (store.counts().waiting, store.counts().running, store.counts().finished) == (0, 0, 0)
    make_mixed(store)
    counts = store.counts()
    assert (counts.waiting, counts.running, counts.finished) == (2, 1, 1)


def test_list_pagination_visits_every_task_once(store: QueueStore) -> None:
    ids = sorted(f"task-{i:03d}-{uuid.uuid4().hex[:4]}" for i in range(37))
    assert store.submit_many([NewTask(i, "x") for i in ids]) == [None] * len(ids)
    for limit in (1, 7, 37, 100):
        assert all_pages(store, limit) == ids


def test_list_pagination_with_a_sparse_type_filter(store: QueueStore) -> None:
    tasks = [NewTask(f"t{i:04d}", "rare" if i % 29 == 3 else "common") for i in range(300)]
    store.submit_many(tasks)
    rare = [t.id for t in tasks if t.type == "rare"]
    assert len(rare) == 11
    for limit in (1, 2, 5, 50):
        assert all_pages(store, limit, task_type="rare") == rare
    assert all_pages(store, 40, task_type="common") == [t.id for t in tasks if t.type == "common"]


def test_list_pagination_with_status_filter(store: QueueStore) -> None:
    store.submit_many([NewTask(f"s{i:02d}", "x") for i in range(20)])
    leased = {a.task.id for a in store.acquire(7, 600)}
    running = all_pages(store, 3, status=TaskStatus.RUNNING)
    waiting = all_pages(store, 3, status=TaskStatus.WAITING)
    assert running == sorted(leased)
    assert waiting == sorted({f"s{i:02d}" for i in range(20)} - leased)


# -- cleanup ---------------------------------------------------------------------------------


def test_cleanup_deletes_expired_finished_rows_in_bounded_batches(store: QueueStore) -> None:
    quick = QueueStore(store.db, store.table.name, retention_time=0)
    ids = [f"c{i}" for i in range(5)]
    quick.submit_many([NewTask(i, "x") for i in ids])
    leases = {a.task.id: a.lease for a in quick.acquire(4, 600)}
    finished = ["c0", "c1", "c2"]
    for task_id in finished:
        quick.finish(task_id, leases[task_id])
    # c3 is running, c4 waiting.
    deleted = 0
    deadline = time.monotonic() + 10
    while deleted < len(finished) and time.monotonic() < deadline:
        n = quick.cleanup(batch=2)
        assert 0 <= n <= 2
        deleted += n
        if n == 0:
            time.sleep(0.05)
    assert deleted == len(finished)
    assert row_ids(store) == {"c3", "c4"}
    assert quick.cleanup(batch=2) == 0
    for task_id in finished:
        with pytest.raises(NotFoundError):
            quick.get(task_id)
    quick.submit(NewTask("c0", "x"))  # a cleaned id may be submitted again
    assert quick.get("c0").status is TaskStatus.WAITING
    assert quick.get("c3").status is TaskStatus.RUNNING
    with pytest.raises(InvalidError):
        quick.cleanup(batch=0)


def test_cleanup_keeps_rows_within_retention(store: QueueStore) -> None:
    store.submit(NewTask("done", "x"))
    [got] = store.acquire(1, 600)
    store.finish("done", got.lease)
    store.submit(NewTask("run", "x"))
    assert [a.task.id for a in store.acquire(1, 600)] == ["run"]
    store.submit(NewTask("wait", "x"))
    assert store.cleanup() == 0  # "done" is within its 300 s retention
    assert row_ids(store) == {"done", "run", "wait"}
    expired = db_now(store) - DELETE_OFFSET  # its retention has passed
    with store.db.engine.begin() as conn:
        conn.execute(sa.update(store.table).where(store.table.c.id == "done").values(timeout=expired))
    assert store.cleanup() == 1
    assert row_ids(store) == {"run", "wait"}
    assert (store.get("run").status, store.get("wait").status) == (TaskStatus.RUNNING, TaskStatus.WAITING)


# -- unavailable database --------------------------------------------------------------------


def test_unreachable_mysql_is_unavailable_not_a_driver_error() -> None:
    db = Database("mysql://root@127.0.0.1:1/test")
    try:
        store = QueueStore(db, "t_unreachable")
        operations = [
            lambda: store.submit(NewTask("a", "x")),
            lambda: store.acquire(1, 60),
            lambda: store.get("a"),
            lambda: store.finish("a", 1),
            store.counts,
        ]
        for operation in operations:
            with pytest.raises(UnavailableError) as info:
                operation()
            assert isinstance(info.value.__cause__, sa.exc.DBAPIError)
    finally:
        db.dispose()
