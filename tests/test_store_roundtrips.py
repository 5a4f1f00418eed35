"""The statements each hot store call sends to MariaDB, counted by the server itself, and to
PostgreSQL, counted as the driver's cursor sends them.

Every statement is a round trip and a share of the database's CPU; these counts are what the
benchmarks' numbers rest on, so a change that adds one fails here rather than only showing up as
a slower benchmark. Counted on MariaDB with the session's own status counters on a pool of one
connection.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import drop_table, require_mysql, require_postgres
from sqlalchemy import event

from perfectqueue.errors import PreemptedError
from perfectqueue.service.store import Database, NewTask, PoolOptions, QueueStore, pausing

COUNTERS = ("Questions", "Com_select", "Com_insert", "Com_update", "Com_commit", "Com_rollback")


@pytest.fixture
def one_connection() -> Iterator[tuple[Database, QueueStore]]:
    db = Database(require_mysql(), PoolOptions(size=1, overflow=0))
    table = "t_" + uuid.uuid4().hex[:16]
    store = QueueStore(db, table, fair=False)
    store.init()
    db.supports_skip_locked()  # asked of the server once per database, by the first acquisition
    yield db, store
    drop_table(db, table)
    db.dispose()


def session_counters(db: Database) -> dict[str, int]:
    names = ", ".join(f"'{name}'" for name in COUNTERS)
    sql = sa.text(f"SHOW SESSION STATUS WHERE Variable_name IN ({names})")
    return {name: int(value) for name, value in db.transaction(lambda conn: conn.execute(sql).all())}


def sent_by(db: Database, call: Callable[[], Any]) -> dict[str, int]:
    """The statements ``call`` sent, less what reading the counters costs (measured alike)."""
    first = session_counters(db)
    second = session_counters(db)
    call()
    third = session_counters(db)
    return {
        name: (third[name] - second[name]) - (second[name] - first[name])
        for name in COUNTERS
        if (third[name] - second[name]) - (second[name] - first[name])
    }


def test_each_hot_call_is_its_statements_and_one_commit(
    one_connection: tuple[Database, QueueStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    db, store = one_connection
    assert sent_by(db, lambda: store.submit(NewTask("one", "x"))) == {
        "Questions": 2,
        "Com_insert": 1,
        "Com_commit": 1,
    }
    batch = [NewTask(f"b{i}", "x", {"i": i}) for i in range(100)]
    # existing ids and the clock in one SELECT, then one multi-row INSERT for all hundred
    assert sent_by(db, lambda: store.submit_many(batch)) == {
        "Questions": 3,
        "Com_select": 1,
        "Com_insert": 1,
        "Com_commit": 1,
    }
    acquired: list[Any] = []
    monkeypatch.setattr(pausing, "PAUSE_RECHECK", 3600.0)  # however slow this machine is
    store._pause.paused_at()  # the pause flag: read once per PAUSE_RECHECK (1 s), not per acquisition
    assert sent_by(db, lambda: acquired.extend(store.acquire(1, 60))) == {
        "Questions": 3,
        "Com_select": 1,
        "Com_update": 1,
        "Com_commit": 1,
    }
    task = acquired.pop()
    assert sent_by(db, lambda: store.finish(task.task.id, task.lease)) == {
        "Questions": 2,
        "Com_update": 1,
        "Com_commit": 1,
    }
    acquired.extend(store.acquire(10, 60))
    items = [(t.task.id, t.lease) for t in acquired]
    assert sent_by(db, lambda: store.finish_many(items)) == {"Questions": 2, "Com_update": 1, "Com_commit": 1}
    assert store.counts(1000).waiting == 101 - 1 - 10


LOCK_PLAN_ROWS_LEASE = {
    # GET_LOCK('<table>'), the plan, the rows, the lease, COMMIT, RELEASE_LOCK
    "table": {"Questions": 6, "Com_select": 4, "Com_update": 1, "Com_commit": 1},
    # the plan, the users' GET_LOCKs, their running count, the rows, the lease, COMMIT, RELEASE_LOCKs
    "user": {"Questions": 7, "Com_select": 5, "Com_update": 1, "Com_commit": 1},
}


@pytest.mark.parametrize("fair_lock", LOCK_PLAN_ROWS_LEASE)
def test_a_fair_acquisition_is_its_lock_plan_rows_and_lease(
    one_connection: tuple[Database, QueueStore], fair_lock: str
) -> None:
    """The table's lock: GET_LOCK, one planning statement, one statement for the planned users'
    rows, the lease, COMMIT, RELEASE_LOCK; the users' locks: the plan, their locks (one
    statement), their count, the rows, the lease, COMMIT, their release (one statement). The
    lock statements need no COMMIT of their own. A head's max_running is looked up (one more
    SELECT) only for a head not seen before: the rows an acquisition reads include each planned
    user's next one, so the heads it moves itself are known at the next plan."""
    db, oldest_first = one_connection
    store = QueueStore(db, oldest_first.table.name, fair_lock=fair_lock)  # fair, as by default
    for user in "AB":
        store.submit_many([NewTask(f"{user}{i}", "x", user=user, max_running=5) for i in range(4)])
    with db.engine.begin() as conn:  # a second between a user's tasks: each taken task moves a head
        conn.execute(
            sa.text(
                f"UPDATE {store.table.name} SET timeout = timeout - 100 + CAST(SUBSTRING(id, 2) AS UNSIGNED)"
            )
        )
    store.acquire(2, 60)  # A0 and B0 (and, once, the table's indexes and columns)
    lock_plan_rows_lease = LOCK_PLAN_ROWS_LEASE[fair_lock]
    assert sent_by(db, lambda: store.acquire(2, 60)) == lock_plan_rows_lease  # A1 and B1
    oldest_first.acquire(1, 60)  # A2 or B2: that user's head moves to a row not read yet
    assert sent_by(db, lambda: store.acquire(2, 60)) == {
        **lock_plan_rows_lease,
        "Questions": lock_plan_rows_lease["Questions"] + 1,
        "Com_select": lock_plan_rows_lease["Com_select"] + 1,
    }
    assert store.counts(1000).waiting == 1


PG_ACQUISITION = {
    # oldest first: the rows read, locked and leased in one statement
    "oldest first": ["WITH picked"],
    # the table's advisory lock, the plan (clock, running counts and heads: one statement), the
    # rows, the lease
    "table": ["SELECT pg_advisory_xact_lock", "WITH RECURSIVE", "SELECT", "UPDATE"],
    # the plan, the users' try-locks, their running count, the rows, the lease
    "user": ["WITH RECURSIVE", "SELECT pg_try_advisory_xact_lock", "SELECT", "SELECT", "UPDATE"],
}


@pytest.mark.parametrize("mode", PG_ACQUISITION)
def test_an_acquisition_on_postgresql_is_its_lock_plan_rows_and_lease(mode: str) -> None:
    """Oldest first reads and leases in one statement. Under the table's lock every statement of
    a fair acquisition is one round trip more with the lock held: the clock, the running counts
    and every user's head are one statement."""
    db = Database(require_postgres())
    table = "t_" + uuid.uuid4().hex[:16]
    fair = mode != "oldest first"
    store = QueueStore(db, table, fair=fair, fair_lock=mode if fair else "table")
    try:
        store.init()
        for user in "AB":
            store.submit_many([NewTask(f"{user}{i}", "x", user=user, max_running=5) for i in range(4)])
        store.acquire(2, 60)  # once: the table's indexes and columns
        sent: list[str] = []

        def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            sent.append(statement)

        event.listen(db.engine, "before_cursor_execute", count)
        try:
            acquired = store.acquire(2, 60)
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
        if fair:  # one more of each user; oldest first, any two (they were submitted in one second)
            assert sorted(t.task.id for t in acquired) == ["A1", "B1"]
        assert len(acquired) == 2
        expected = PG_ACQUISITION[mode]
        assert len(sent) == len(expected), sent
        for statement, start in zip(sent, expected, strict=True):
            assert statement.startswith(start), (start, statement)
    finally:
        drop_table(db, table)
        db.dispose()


def test_a_batch_with_a_present_id_is_answered_per_item_in_the_same_round_trips(
    one_connection: tuple[Database, QueueStore],
) -> None:
    db, store = one_connection
    store.submit(NewTask("taken", "x"))
    batch = [NewTask("taken", "x"), NewTask("new-1", "x"), NewTask("new-2", "x")]
    results: list[Any] = []
    assert sent_by(db, lambda: results.extend(store.submit_many(batch))) == {
        "Questions": 3,
        "Com_select": 1,
        "Com_insert": 1,
        "Com_commit": 1,
    }
    assert [type(r).__name__ for r in results] == ["AlreadyExistsError", "NoneType", "NoneType"]


def test_a_failed_call_leaves_no_lock_behind_on_the_pooled_connection(
    one_connection: tuple[Database, QueueStore],
) -> None:
    """The pool does not roll back at check-in (one round trip fewer per call), so every path
    must end its own transaction: a call that fails after touching the row rolls back, and the
    row is free for another session at once."""
    _db, store = one_connection
    store.submit(NewTask("a", "x"))
    [task] = store.acquire(1, 60)
    with pytest.raises(PreemptedError):
        store.finish("a", task.lease + 1)
    other = Database(require_mysql())
    try:
        with other.engine.connect() as conn:
            conn.execute(sa.text("SET SESSION innodb_lock_wait_timeout = 1"))
            changed = conn.execute(
                sa.text(f"UPDATE {store.table.name} SET owner = owner WHERE id = 'a'")
            ).rowcount
            conn.rollback()
    finally:
        other.dispose()
    assert changed == 1


def test_new_connections_share_one_preferred_tls_context() -> None:
    """With no TLS options PyMySQL tries TLS if the server offers it, and used to build that
    attempt's context (loading the system's CA certificates, ~25 ms of CPU) for every new
    connection: one context per process now serves them all."""
    db = Database(require_mysql(), PoolOptions(size=1, overflow=0))
    try:
        contexts = []
        for _ in range(3):
            with db.engine.connect() as conn:
                contexts.append(conn.connection.dbapi_connection.ctx)  # type: ignore[union-attr]
                assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
            db.engine.dispose()  # the next connect opens a new connection
        assert contexts[0] is not None
        assert all(ctx is contexts[0] for ctx in contexts)
    finally:
        db.dispose()


def test_postgresql_sessions_plan_every_statement_for_its_values() -> None:
    """psycopg prepares a statement run often; a generic plan made while the table was small (a
    new or truncated one) kept a sequential scan, checking each row against the id array, as the
    table grew: the store's sessions plan every execution for its own values."""
    db = Database(require_postgres())
    try:
        with db.connect() as conn:
            assert conn.execute(sa.text("SHOW plan_cache_mode")).scalar_one() == "force_custom_plan"
    finally:
        db.dispose()
