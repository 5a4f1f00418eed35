"""Fair acquisition's per-user locks on MariaDB and PostgreSQL (``userlocks.py``): no table-wide
lock, a user served elsewhere is passed over, a running count taken under the user's lock, and
the locks of an acquisition killed half-way let go with its connection."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from typing import Any

import sqlalchemy as sa
from test_store_fair_compat import create_original_table
from test_store_locks import TAKE_LOCK, server_db  # noqa: F401 - the fixture

from perfectqueue.service.store import AcquiredTask, Database, NewTask, QueueStore
from perfectqueue.service.store.userlocks import UserLocks

LOCK_WAIT = 10  # seconds an acquisition waits for a lock before it answers unavailable


def lock_of(store: QueueStore, user: str) -> str:
    return UserLocks(store.db, store.table, "user", store.extended).name(user)


def acquire_in_thread(store: QueueStore, max_tasks: int) -> tuple[threading.Thread, list[list[AcquiredTask]]]:
    result: list[list[AcquiredTask]] = []
    poller = threading.Thread(target=lambda: result.append(store.acquire(max_tasks, 600)))
    poller.start()
    return poller, result


def running_of(store: QueueStore, user: str) -> int:
    """What ``max_running`` caps: the user's tasks not finished and not yet due."""
    t = store.table.c
    with store.db.engine.connect() as conn:
        now = conn.execute(sa.select(store.db.now())).scalar_one()
        running = sa.and_(t.resource == user, t.timeout > now, t.created_at.is_not(None))
        return int(conn.execute(sa.select(sa.func.count()).where(running)).scalar_one())


def test_fair_acquisition_takes_no_table_lock(server_db: Database, table_name: str) -> None:  # noqa: F811
    """``fair_lock: user`` on a table this project created: a fair acquisition goes on while a
    Ruby process holds the table's lock (the original's acquisitions are not kept apart from it:
    hence the table's lock by default)."""
    store = QueueStore(server_db, table_name, fair_lock="user")
    store.init()
    store.submit(NewTask("t1", "x", user="u", max_running=1))
    take, release = TAKE_LOCK[server_db.engine.dialect.name]
    with server_db.engine.connect() as ruby:
        ruby.execute(sa.select(take(table_name)))
        assert [a.task.id for a in store.acquire(5, 60)] == ["t1"]
        ruby.execute(sa.select(release(table_name)))


def test_a_table_of_the_originals_shape_keeps_the_table_lock(server_db: Database, table_name: str) -> None:  # noqa: F811
    """Ruby processes may share a table the original created: its fair acquisitions wait for the
    table's lock, as the original's do, even with ``fair_lock: user`` (and, on MariaDB, after
    ``init`` too while its users compare without case, the original's collation)."""
    create_original_table(server_db, table_name)
    store = QueueStore(server_db, table_name, fair_lock="user")
    if server_db.is_mysql:
        store.init()
    store.submit(NewTask("t1", "x", user="u", max_running=1))
    take, release = TAKE_LOCK[server_db.engine.dialect.name]
    with server_db.engine.connect() as ruby:
        ruby.execute(sa.select(take(table_name)))
        poller, result = acquire_in_thread(store, 5)
        poller.join(timeout=1.0)
        assert poller.is_alive() and not result, "acquire did not wait for the table's lock"
        ruby.execute(sa.select(release(table_name)))
        poller.join(timeout=LOCK_WAIT)
    assert [[a.task.id for a in acquired] for acquired in result] == [["t1"]]


def test_a_user_served_elsewhere_is_passed_over_not_waited_for(server_db: Database, table_name: str) -> None:  # noqa: F811
    store = QueueStore(server_db, table_name, fair_lock="user")
    store.init()
    store.submit_many([NewTask(f"a{i}", "x", user="a", max_running=5) for i in range(3)])
    store.submit_many([NewTask(f"b{i}", "x", user="b", max_running=5) for i in range(3)])
    take, release = TAKE_LOCK[server_db.engine.dialect.name]
    with server_db.engine.connect() as other:  # another acquisition serving user a
        other.execute(sa.select(take(lock_of(store, "a"))))
        started = time.monotonic()
        assert {a.task.user for a in store.acquire(4, 60)} == {"b"}
        assert time.monotonic() - started < LOCK_WAIT / 2
        other.execute(sa.select(release(lock_of(store, "a"))))
    assert {a.task.user for a in store.acquire(4, 60)} == {"a"}


def test_the_running_count_is_taken_again_under_the_users_lock(
    server_db: Database,  # noqa: F811
    table_name: str,
) -> None:
    """An acquisition that planned from a count another acquisition then changed (it leased one
    of the user's tasks and let go of the user's lock after its commit) counts again under the
    lock: it takes one task, not the two the stale count allowed."""
    store = QueueStore(server_db, table_name, fair_lock="user")
    store.init()
    store.submit_many([NewTask(f"a{i}", "x", user="a", max_running=2) for i in range(4)])
    take, release = TAKE_LOCK[server_db.engine.dialect.name]
    with server_db.engine.connect() as other:
        other.execute(sa.select(take(lock_of(store, "a"))))
        other.commit()
        poller, result = acquire_in_thread(store, 5)  # plans 2 of a, finds a busy, waits for it
        poller.join(timeout=1.0)
        assert poller.is_alive() and not result, "acquire did not wait for the only user's lock"
        now = other.execute(sa.select(server_db.now())).scalar_one()
        t = store.table.c
        other.execute(sa.update(store.table).where(t.id == "a0").values(timeout=now + 600, owner=1))
        other.commit()
        other.execute(sa.select(release(lock_of(store, "a"))))
        other.commit()
        poller.join(timeout=LOCK_WAIT)
    assert [len(acquired) for acquired in result] == [1]
    assert running_of(store, "a") == 2


def hold_a_user_and_hang(url: str, table: str, holding: Any) -> None:
    """A replica's acquisition stopped half-way: it holds user ``a``'s lock and has written the
    leases of the rows it read, uncommitted, when it hangs (runs in a process of its own)."""
    db = Database(url)
    store = QueueStore(db, table, fair_lock="user")
    acquisition = store._acquisition
    read_rows = acquisition.rows

    def rows_then_hang(conn: sa.Connection, limit: int, lock: str | None) -> Any:
        now, rows = read_rows(conn, limit, lock)
        ids = [row.id for row in rows]
        conn.execute(sa.update(store.table).where(store.table.c.id.in_(ids)).values(timeout=now + 600))
        holding.set()
        time.sleep(120)
        return now, rows

    acquisition.rows = rows_then_hang  # type: ignore[method-assign]
    store.acquire(5, 600)


def test_a_replica_killed_while_it_holds_a_users_lock_lets_go_of_it(
    server_db: Database,  # noqa: F811
    table_name: str,
) -> None:
    """SIGKILL while an acquisition holds a user's lock and its uncommitted leases: the server
    ends its session, which lets go of the lock and rolls the leases back; the acquisition
    waiting for that user goes on at once and takes the user's max_running, no more."""
    store = QueueStore(server_db, table_name, fair_lock="user")
    store.init()
    store.submit_many([NewTask(f"a{i}", "x", user="a", max_running=2) for i in range(6)])
    ctx = multiprocessing.get_context("spawn")
    holding = ctx.Event()
    replica = ctx.Process(target=hold_a_user_and_hang, args=(str(server_db.url), table_name, holding))
    replica.start()
    try:
        assert holding.wait(30), "the replica did not reach the middle of its acquisition"
        poller, result = acquire_in_thread(store, 5)
        poller.join(timeout=1.0)
        assert poller.is_alive() and not result, "acquire did not wait for the user's lock"
        assert replica.pid is not None
        os.kill(replica.pid, signal.SIGKILL)
        killed = time.monotonic()
        poller.join(timeout=LOCK_WAIT)
        assert not poller.is_alive()
        assert time.monotonic() - killed < LOCK_WAIT / 2, "the lock was let go only by a timeout"
    finally:
        replica.kill()
        replica.join()
    assert [len(acquired) for acquired in result] == [2]
    assert running_of(store, "a") == 2
