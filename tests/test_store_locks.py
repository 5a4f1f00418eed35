"""Locks on MariaDB and PostgreSQL: the original's GET_LOCK mode and fair acquisition's table-lock
mode (PostgreSQL: the table's advisory lock), and lock conflicts retried inside the store."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import drop_table, require_server

from perfectqueue.errors import UnavailableError
from perfectqueue.service.store import AcquiredTask, Database, NewTask, QueueStore
from perfectqueue.service.store.postgres import lock_key

TAKE_LOCK = {  # the table's named lock, as another process takes and releases it
    "mysql": (lambda name: sa.func.get_lock(name, 1), sa.func.release_lock),
    "postgresql": (
        lambda name: sa.func.pg_advisory_lock(lock_key(name)),
        lambda name: sa.func.pg_advisory_unlock(lock_key(name)),
    ),
}
SHORT_LOCK_WAIT = {  # this transaction waits at most 1 s for a row lock
    "mysql": "SET SESSION innodb_lock_wait_timeout = 1",
    "postgresql": "SET LOCAL lock_timeout = '1s'",
}


@pytest.fixture(params=["mysql", "postgres"])
def server_db(request: pytest.FixtureRequest, table_name: str) -> Iterator[Database]:
    db = Database(require_server(request.param))
    yield db
    drop_table(db, table_name)
    db.dispose()


TABLE_LOCK_MODES: dict[str, dict[str, Any]] = {  # the settings that keep the table's lock
    "get_lock": {"fair": False, "lock": "get_lock"},  # every acquisition takes it
    "fair_lock table": {"fair_lock": "table"},  # fair acquisitions take it (a table Ruby processes share)
}


@pytest.mark.parametrize("mode", TABLE_LOCK_MODES)
def test_table_lock_modes_wait_for_the_originals_named_lock(
    server_db: Database, table_name: str, mode: str
) -> None:
    store = QueueStore(server_db, table_name, **TABLE_LOCK_MODES[mode])
    store.init()
    store.submit(NewTask("t1", "x", user="u", max_running=1))
    result: list[list[AcquiredTask]] = []
    take, release = TAKE_LOCK[server_db.engine.dialect.name]
    with server_db.engine.connect() as ruby:  # a Ruby PerfectQueue process holding GET_LOCK('<table>')
        assert ruby.execute(sa.select(take(table_name))).scalar() in (1, "")  # got it (void: waited)
        poller = threading.Thread(target=lambda: result.append(store.acquire(1, 60)))
        poller.start()
        poller.join(timeout=1.0)
        assert poller.is_alive() and not result, "acquire did not wait for the table's lock"
        ruby.execute(sa.select(release(table_name)))
        poller.join(timeout=10)
    assert [[a.task.id for a in acquired] for acquired in result] == [["t1"]]


def test_get_lock_mode_never_leases_a_task_twice(server_db: Database, table_name: str) -> None:
    store = QueueStore(server_db, table_name, fair=False, lock="get_lock")
    store.init()
    store.submit_many([NewTask(f"t{i}", "x") for i in range(300)])
    seen: list[str] = []
    lock = threading.Lock()

    def poll() -> None:
        while acquired := store.acquire(5, 300):
            with lock:
                seen.extend(a.task.id for a in acquired)

    pollers = [threading.Thread(target=poll) for _ in range(6)]
    for p in pollers:
        p.start()
    for p in pollers:
        p.join(timeout=60)
    assert sorted(seen) == sorted(f"t{i}" for i in range(300))


def test_a_lock_wait_timeout_is_retried_on_mariadb_answered_on_postgres(
    server_db: Database, table_name: str
) -> None:
    store = QueueStore(server_db, table_name)
    store.init()
    store.submit(NewTask("t1", "x"))
    tries: list[float] = []

    def work(conn: sa.Connection) -> int:
        tries.append(time.monotonic())
        conn.execute(sa.text(SHORT_LOCK_WAIT[server_db.engine.dialect.name]))
        query = sa.update(store.table).where(store.table.c.id == "t1").values(max_running=7)
        return int(conn.execute(query).rowcount)

    postgres = server_db.is_postgres  # there lock_timeout is the statement deadline's share
    with server_db.engine.connect() as other:
        other.execute(sa.update(store.table).where(store.table.c.id == "t1").values(max_running=3))
        releaser = threading.Timer(1.5, other.commit)  # hold the row lock past the first try's timeout
        releaser.start()
        try:
            if postgres:
                with pytest.raises(UnavailableError, match="did not answer in time"):
                    server_db.transaction(work)
            else:
                assert server_db.transaction(work) == 1
        finally:
            releaser.join()
    if postgres:  # answered at once: waiting again would take as long
        assert len(tries) == 1
        return
    assert len(tries) >= 2, "the lock-wait timeout was not retried"
    assert store.get("t1").max_running == 7
