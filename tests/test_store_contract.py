"""CONTRACT.md §3 on both backends: submit, acquire and the lease operations, with each failure.

Every test runs against a real SQLite file and a real MariaDB table (the ``store`` fixture).
Times are read from the database's clock, as the store does.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import db_now, expire_lease, set_timeout

from perfectqueue.errors import (
    AlreadyExistsError,
    AlreadyFinishedError,
    IdempotentError,
    InvalidError,
    NotFoundError,
    PreemptedError,
)
from perfectqueue.service.store import NewTask, QueueStore, TaskStatus
from perfectqueue.service.store.model import DELETE_OFFSET, EVENT_HORIZON, MAX_TIMESTAMP
from perfectqueue.service.store.owners import SLOT


def raw_row(store: QueueStore, task_id: str) -> Any:
    with store.db.engine.connect() as conn:
        return conn.execute(sa.select(store.table).where(store.table.c.id == task_id)).one()


def total_rows(store: QueueStore) -> int:
    with store.db.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(store.table)).scalar_one())


# -- submit ----------------------------------------------------------------------------------


def test_submit_stores_a_waiting_task(store: QueueStore) -> None:
    before = db_now(store)
    store.submit(NewTask("t1", "mail", {"to": "x@example.com", "n": [1, 2]}, user="alice", max_running=3))
    after = db_now(store)
    task = store.get("t1")
    assert task.status is TaskStatus.WAITING
    assert (task.id, task.type, task.data) == ("t1", "mail", {"to": "x@example.com", "n": [1, 2]})
    assert (task.user, task.max_running, task.compression) == ("alice", 3, None)
    assert task.created_at is not None
    assert before <= task.created_at <= after
    assert before <= task.timeout <= after  # waiting from now on


@pytest.mark.parametrize("state", ["waiting", "running", "finished"])
def test_submit_duplicate_id_is_already_exists_in_every_state(store: QueueStore, state: str) -> None:
    store.submit(NewTask("dup", "first", {"v": 1}))
    if state != "waiting":
        [got] = store.acquire(1, 60)
        if state == "finished":
            store.finish("dup", got.lease)
    with pytest.raises(AlreadyExistsError) as info:
        store.submit(NewTask("dup", "second", {"v": 2}))
    assert isinstance(info.value, IdempotentError)
    task = store.get("dup")
    assert task.status.value == state
    assert task.type == "first"
    assert total_rows(store) == 1
    if state != "finished":
        assert task.data == {"v": 1}


def test_submit_with_run_at_in_the_future_waits_for_its_time(store: QueueStore) -> None:
    run_at = db_now(store) + 2
    store.submit(NewTask("later", "x", run_at=run_at))
    store.submit(NewTask("now", "x"))
    assert [a.task.id for a in store.acquire(10, 60)] == ["now"]
    task = store.get("later")
    assert task.status is TaskStatus.RUNNING  # by the time model: created_at set, timeout > now
    assert task.timeout == run_at
    deadline = time.monotonic() + 10
    acquired: list[str] = []
    while not acquired and time.monotonic() < deadline:
        before = db_now(store)
        acquired = [a.task.id for a in store.acquire(10, 60)]
        if not acquired:
            assert before < run_at  # its time had come before this acquire began, yet it was not taken
            time.sleep(0.05)
    assert acquired == ["later"]
    assert db_now(store) >= run_at


def test_submit_run_at_bounds(store: QueueStore) -> None:
    for bad in (EVENT_HORIZON, 0, MAX_TIMESTAMP + 1):
        with pytest.raises(InvalidError):
            store.submit(NewTask("r", "x", run_at=bad))
    assert total_rows(store) == 0


def test_submit_gzip_round_trips_and_is_stored_gzipped(store: QueueStore) -> None:
    data = {"text": "ünïcode " * 50, "n": 7}
    store.submit(NewTask("gz", "compress", data, compression="gzip"))
    stored = raw_row(store, "gz").data
    assert bytes(stored[:2]) == b"\x1f\x8b"
    task = store.get("gz")
    assert (task.type, task.data, task.compression) == ("compress", data, "gzip")
    [got] = store.acquire(1, 60)
    assert (got.task.type, got.task.data, got.task.compression) == ("compress", data, "gzip")


def test_submit_plain_data_is_json_with_the_type_inside(store: QueueStore) -> None:
    store.submit(NewTask("plain", "kind", {"a": 1}))
    assert bytes(raw_row(store, "plain").data) in (b'{"a":1,"type":"kind"}', b'{"type":"kind","a":1}')


def test_submit_data_with_key_type_is_invalid_and_stores_nothing(store: QueueStore) -> None:
    with pytest.raises(InvalidError):
        store.submit(NewTask("bad", "x", {"type": "y"}))
    assert total_rows(store) == 0


@pytest.mark.parametrize(
    "bad_id", ["", "a" * 256, "é" * 128, "tab\there", "new\nline", "nul\x00", "del\x7f", "c1\x85"]
)
def test_submit_invalid_id_is_invalid_and_stores_nothing(store: QueueStore, bad_id: str) -> None:
    with pytest.raises(InvalidError):
        store.submit(NewTask(bad_id, "x"))
    # a lookup takes what the id column can hold (another writer may have stored it): not found
    lookup_error: Any = InvalidError if bad_id in ("", "a" * 256) else NotFoundError
    if bad_id == "nul\x00" and store.db.is_postgres:
        lookup_error = InvalidError  # PostgreSQL's text cannot hold NUL: no row can have it
    with pytest.raises(lookup_error):
        store.get(bad_id)
    assert total_rows(store) == 0


ODD_IDS = [
    "a/b/c",
    "a.b.c",
    "100%",
    "50%_off",
    "with space",
    "ünïcödé",
    "日本語",
    "😀 emoji",
    "x" * 255,
    "é" * 127,
]


def test_odd_ids_work_for_submit_get_acquire_finish(store: QueueStore) -> None:
    for i, task_id in enumerate(ODD_IDS):
        store.submit(NewTask(task_id, "odd", {"i": i}))
    for i, task_id in enumerate(ODD_IDS):
        task = store.get(task_id)
        assert (task.id, task.data) == (task_id, {"i": i})
    acquired = store.acquire(100, 60)
    assert sorted(a.task.id for a in acquired) == sorted(ODD_IDS)
    for a in acquired:
        assert a.task.data == {"i": ODD_IDS.index(a.task.id)}
        store.finish(a.task.id, a.lease)
    for task_id in ODD_IDS:
        assert store.get(task_id).status is TaskStatus.FINISHED


def test_ids_differing_in_case_or_trailing_space_are_distinct(store: QueueStore) -> None:
    ids = ["Task", "task", "task ", "TASK", "tâsk"]
    for task_id in ids:
        store.submit(NewTask(task_id, "t_" + str(ids.index(task_id))))
    assert total_rows(store) == len(ids)
    for task_id in ids:
        assert store.get(task_id).type == "t_" + str(ids.index(task_id))
    [got] = [a for a in store.acquire(10, 60) if a.task.id == "task"]
    store.finish("task", got.lease)
    assert store.get("task").status is TaskStatus.FINISHED
    assert store.get("task ").status is TaskStatus.RUNNING
    assert store.get("Task").status is TaskStatus.RUNNING


# -- submit_many -----------------------------------------------------------------------------


def test_submit_many_reports_per_item_and_stores_the_rest(store: QueueStore) -> None:
    store.submit(NewTask("old", "x", {"v": "original"}))
    results = store.submit_many(
        [
            NewTask("a", "x", {"v": 1}),
            NewTask("old", "x", {"v": "new"}),
            NewTask("b", "y", {"v": 2}, user="u"),
            NewTask("a", "x", {"v": 3}),
        ]
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], AlreadyExistsError)
    assert isinstance(results[3], AlreadyExistsError)
    assert total_rows(store) == 3
    assert store.get("a").data == {"v": 1}
    assert store.get("old").data == {"v": "original"}
    assert (store.get("b").type, store.get("b").user) == ("y", "u")
    assert store.submit_many([]) == []


def test_submit_many_stores_every_field_with_the_database_clock(store: QueueStore) -> None:
    before = db_now(store)
    later = before + 3600
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    batch = [
        NewTask("now", "x"),
        NewTask("later", "y", {"k": "v"}, user="u", max_running=2, run_at=later, compression="gzip"),
        NewTask("capped", "z", max_attempts=3, traceparent=trace),
    ]
    assert store.submit_many(batch) == [None, None, None]
    after = db_now(store)
    now, scheduled, capped = store.get("now"), store.get("later"), store.get("capped")
    assert now.created_at is not None and before <= now.created_at <= after
    assert now.timeout == now.created_at and now.status is TaskStatus.WAITING
    assert scheduled.created_at is not None and before <= scheduled.created_at <= after
    assert (scheduled.timeout, scheduled.status, scheduled.leased) == (later, TaskStatus.RUNNING, False)
    assert (scheduled.type, scheduled.data, scheduled.user) == ("y", {"k": "v"}, "u")
    assert (scheduled.max_running, scheduled.compression) == (2, "gzip")
    assert (capped.max_attempts, capped.traceparent) == (3, trace)
    assert sorted(t.task.id for t in store.acquire(10, 60)) == ["capped", "now"]


# -- acquire ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fair", [True, False])
def test_acquire_leases_up_to_max_oldest_first(store: QueueStore, fair: bool) -> None:
    queue = QueueStore(store.db, store.table.name, fair=fair)
    now = db_now(store)
    for task_id, age in [("t1", 30), ("t2", 10), ("t3", 40), ("t4", 20)]:
        store.submit(NewTask(task_id, "x"))
        set_timeout(store, task_id, now - age)
    before = db_now(store)
    first = queue.acquire(2, 77)
    after = db_now(store)
    assert [a.task.id for a in first] == ["t3", "t1"]
    leases = {a.lease for a in first}
    assert len(leases) == 1
    lease = leases.pop()
    assert isinstance(lease, int) and lease > 0
    for a in first:
        assert a.task.status is TaskStatus.RUNNING
        assert before + 77 <= a.task.timeout <= after + 77
        row = raw_row(store, a.task.id)
        assert (row.timeout, row.owner) == (a.task.timeout, lease + row.timeout % SLOT)  # owners.py
        assert store.get(a.task.id).status is TaskStatus.RUNNING
    second = queue.acquire(10, 60)
    assert [a.task.id for a in second] == ["t4", "t2"]
    assert second[0].lease != lease
    assert queue.acquire(10, 60) == []


def test_acquire_empty_when_nothing_waits(store: QueueStore) -> None:
    assert store.acquire(5, 60) == []
    with pytest.raises(InvalidError):
        store.acquire(0, 60)
    with pytest.raises(InvalidError):
        store.acquire(1, 0)


def test_acquire_never_returns_finished_tasks(store: QueueStore) -> None:
    store.submit(NewTask("f", "x"))
    store.submit(NewTask("f2", "x"))
    store.force_finish("f2")
    [got] = store.acquire(5, 60)
    store.finish("f", got.lease)
    assert store.acquire(5, 60) == []
    row = raw_row(store, "f")  # retained, never delivered
    assert row.created_at is None
    assert row.timeout <= db_now(store) - DELETE_OFFSET + store.retention_time
    assert store.get("f").status is TaskStatus.FINISHED


@pytest.mark.parametrize("fair", [True, False])
def test_acquire_skips_rows_at_or_below_the_event_horizon(store: QueueStore, fair: bool) -> None:
    queue = QueueStore(store.db, store.table.name, fair=fair)
    store.submit(NewTask("low", "x"))
    store.submit(NewTask("low_user", "x", user="u", max_running=5))
    set_timeout(store, "low", EVENT_HORIZON)
    set_timeout(store, "low_user", EVENT_HORIZON)
    assert queue.acquire(5, 60) == []
    set_timeout(store, "low", EVENT_HORIZON + 1)
    assert [a.task.id for a in queue.acquire(5, 60)] == ["low"]


def test_expired_lease_is_delivered_again_and_the_old_holder_is_fenced(store: QueueStore) -> None:
    store.submit(NewTask("job", "x", {"v": 1}))
    [old] = store.acquire(1, 60)
    assert store.acquire(1, 60) == []  # no double lease while valid
    expire_lease(store, "job")
    assert store.get("job").status is TaskStatus.WAITING  # the time model makes it waiting again
    [new] = store.acquire(1, 60)
    assert new.task.id == "job" and new.lease != old.lease
    timeout = raw_row(store, "job").timeout
    with pytest.raises(PreemptedError):
        store.heartbeat("job", old.lease, 600)
    with pytest.raises(PreemptedError):
        store.heartbeat("job", old.lease, 600, data={"v": "stolen"})
    with pytest.raises(PreemptedError):
        store.retry("job", old.lease, 0)
    with pytest.raises(PreemptedError):
        store.release("job", old.lease)
    with pytest.raises(PreemptedError):
        store.finish("job", old.lease)
    row = raw_row(store, "job")  # the failed calls changed nothing
    assert (row.timeout, row.owner, row.created_at is not None) == (timeout, new.lease + timeout % SLOT, True)
    assert store.get("job").data == {"v": 1}
    store.heartbeat("job", new.lease, 60)
    store.finish("job", new.lease)
    with pytest.raises(PreemptedError):
        store.finish("job", old.lease)  # not AlreadyFinished: someone else finished it


# -- heartbeat -------------------------------------------------------------------------------


def test_heartbeat_extends_the_lease(store: QueueStore) -> None:
    store.submit(NewTask("hb", "x", {"v": 1}))
    [got] = store.acquire(1, 10)
    before = db_now(store)
    store.heartbeat("hb", got.lease, 500)
    after = db_now(store)
    task = store.get("hb")
    assert before + 500 <= task.timeout <= after + 500
    assert task.status is TaskStatus.RUNNING and task.data == {"v": 1}
    row = raw_row(store, "hb")
    assert row.owner == got.lease + task.timeout % SLOT and row.timeout == task.timeout
    with pytest.raises(InvalidError):
        store.heartbeat("hb", got.lease, 0)


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_heartbeat_with_data_replaces_data_and_keeps_type(store: QueueStore, compression: str | None) -> None:
    store.submit(NewTask("hbd", "kind", {"old": True}, compression=compression))
    [got] = store.acquire(1, 60)
    store.heartbeat("hbd", got.lease, 60, data={"progress": 50})
    task = store.get("hbd")
    assert (task.type, task.data, task.compression) == ("kind", {"progress": 50}, compression)
    assert (bytes(raw_row(store, "hbd").data[:2]) == b"\x1f\x8b") == (compression == "gzip")
    with pytest.raises(InvalidError):
        store.heartbeat("hbd", got.lease, 60, data={"type": "other"})
    assert store.get("hbd").type == "kind"


def test_heartbeat_failures_are_preempted(store: QueueStore) -> None:
    store.submit(NewTask("h", "x"))
    [got] = store.acquire(1, 60)
    for data in (None, {"d": 1}):
        with pytest.raises(PreemptedError):
            store.heartbeat("h", got.lease + 1, 60, data=data)  # wrong lease
        with pytest.raises(PreemptedError):
            store.heartbeat("gone", got.lease, 60, data=data)  # no such task
    store.finish("h", got.lease)
    for data in (None, {"d": 1}):
        with pytest.raises(PreemptedError):
            store.heartbeat("h", got.lease, 60, data=data)  # finished
    assert store.get("h").status is TaskStatus.FINISHED


# -- finish ----------------------------------------------------------------------------------


def test_finish_marks_finished_and_retains(store: QueueStore) -> None:
    store.submit(NewTask("fin", "x", {"v": 1}, user="bob", max_running=2))
    [got] = store.acquire(1, 60)
    before = db_now(store)
    store.finish("fin", got.lease)
    after = db_now(store)
    task = store.get("fin")
    assert task.status is TaskStatus.FINISHED
    assert (task.created_at, task.user, task.type) == (None, None, "x")
    assert before - DELETE_OFFSET + 300 <= task.timeout <= after - DELETE_OFFSET + 300
    with pytest.raises(AlreadyExistsError):
        store.submit(NewTask("fin", "x"))
    with pytest.raises(AlreadyFinishedError) as info:
        store.finish("fin", got.lease)
    assert isinstance(info.value, IdempotentError)
    with pytest.raises(PreemptedError):
        store.finish("fin", got.lease + 1)
    with pytest.raises(NotFoundError):
        store.finish("unknown", got.lease)
    assert store.get("fin").timeout == task.timeout  # the failed finishes changed nothing


def test_finish_many_reports_per_item(store: QueueStore) -> None:
    for task_id in ("a", "b", "c", "d"):
        store.submit(NewTask(task_id, "x"))
    got = {a.task.id: a.lease for a in store.acquire(10, 60)}
    store.finish("c", got["c"])
    results = store.finish_many(
        [
            ("a", got["a"]),
            ("b", got["b"] + 1),
            ("missing", 5),
            ("a", got["a"]),
            ("c", got["c"]),
            ("d", got["d"]),
        ]
    )
    assert results[0] is None and results[5] is None
    assert isinstance(results[1], PreemptedError)
    assert isinstance(results[2], NotFoundError)
    assert isinstance(results[3], AlreadyFinishedError)
    assert isinstance(results[4], AlreadyFinishedError)
    status = {task_id: store.get(task_id).status for task_id in ("a", "b", "c", "d")}
    assert status == {
        "a": TaskStatus.FINISHED,
        "b": TaskStatus.RUNNING,
        "c": TaskStatus.FINISHED,
        "d": TaskStatus.FINISHED,
    }
    assert store.get("a").user is None and store.get("a").created_at is None
    assert store.finish_many([]) == []


def test_finish_many_of_distinct_tasks_with_one_not_held(store: QueueStore) -> None:
    """A batch of distinct ids: one fenced UPDATE; a short row count rolls it back and answers
    item by item, finishing only the held tasks."""
    store.submit_many([NewTask(i, "x") for i in ("a", "b", "c", "d")])
    first = {a.task.id: a.lease for a in store.acquire(2, 60)}
    second = {a.task.id: a.lease for a in store.acquire(2, 60)}
    assert store.finish_many([("a", first["a"]), ("c", second["c"])]) == [None, None]
    results = store.finish_many([("b", first["b"]), ("d", second["d"] + 1), ("a", first["a"])])
    assert results[0] is None
    assert isinstance(results[1], PreemptedError)
    assert isinstance(results[2], AlreadyFinishedError)
    status = {task_id: store.get(task_id).status for task_id in ("a", "b", "c", "d")}
    assert status == {
        "a": TaskStatus.FINISHED,
        "b": TaskStatus.FINISHED,
        "c": TaskStatus.FINISHED,
        "d": TaskStatus.RUNNING,
    }
