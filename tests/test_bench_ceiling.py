"""The ceiling scenario's drain (bench/ceiling.py) loses no work when its finish meets a lock
conflict after the lease was committed: the finish itself is tried again, and counted (on
MariaDB and on PostgreSQL)."""

from __future__ import annotations

import secrets
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import require_server

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the bench package, beside tests/
from bench.ceiling import Statements, finish, lease, transaction
from bench.common import CLOCK, Backend

WAITING = {  # how long the connection's statement has been waiting for a row lock, if it is
    # (MariaDB's INNODB_TRX does not list a transaction whose first statement waits)
    "mysql": "SELECT TIME_MS / 1000 FROM information_schema.PROCESSLIST"
    " WHERE ID = %s AND STATE = 'Updating' AND INFO LIKE 'UPDATE%%'",
    "postgres": "SELECT EXTRACT(EPOCH FROM clock_timestamp() - query_start) FROM pg_stat_activity"
    " WHERE pid = %s AND wait_event_type = 'Lock'",
}


def waited(backend: Backend, connection_id: int) -> float | None:
    """While the connection waits for a lock: for how many seconds."""
    rows = backend.execute(WAITING[backend.kind], (connection_id,))
    return float(rows[0][0]) if rows else None


def hold_until_second_wait(backend: Backend, holder: Any, waiter_id: int, seen: list[int]) -> None:
    """Keep ``holder``'s row lock until the waiter has timed out once and waits again (a wait
    seen shorter than the one seen before it is a second wait), or 30 s; ``seen`` gains how
    many waits were seen."""
    waits, last = 0, None
    deadline = time.monotonic() + 30
    while waits < 2 and time.monotonic() < deadline:
        seconds = waited(backend, waiter_id)
        if seconds is not None and (last is None or seconds < last):
            waits += 1
        last = seconds if seconds is not None else last
        time.sleep(0.02)
    seen.append(waits)
    holder.rollback()


@pytest.mark.parametrize("kind", [pytest.param("mysql", marks=pytest.mark.mysql), "postgres"])
def test_a_finish_that_meets_a_lock_timeout_is_retried_and_finishes(kind: str, tmp_path: Path) -> None:
    url = require_server(kind)
    backend = Backend.create(kind, tmp_path, url, url)
    table = "t_ceiling_" + uuid.uuid4().hex[:12]
    backend.create_table(table)
    try:
        backend.execute(
            f"INSERT INTO {table} (id, timeout, data, created_at) VALUES"
            f" ('a', {CLOCK[kind]} - 5, '{{}}', 1), ('b', {CLOCK[kind]} - 4, '{{}}', 1)"
        )
        drainer, holder = backend.connect("READ COMMITTED"), backend.connect()
        if kind == "mysql":
            drainer.cursor().execute("SET SESSION innodb_lock_wait_timeout = 1")
            waiter_id = drainer.thread_id()
        else:
            drainer.execute("SET lock_timeout = '1s'")
            drainer.commit()
            waiter_id = drainer.info.backend_pid
        stmts = Statements(backend, table, 10)
        token = secrets.randbelow(2**62) + 1
        ids, _ = transaction(drainer, stmts, lambda cur: lease(cur, stmts, token))
        assert sorted(ids) == ["a", "b"]
        holder.cursor().execute(f"SELECT id FROM {table} WHERE id = 'a' FOR UPDATE")
        seen: list[int] = []
        releaser = threading.Thread(target=hold_until_second_wait, args=(backend, holder, waiter_id, seen))
        releaser.start()
        _, retries = transaction(drainer, stmts, lambda cur: finish(cur, stmts, ids, token))
        releaser.join()
        assert seen == [2], "the finish was not seen waiting twice for the row"
        assert retries >= 1
        rows = backend.execute(f"SELECT COUNT(*) FROM {table} WHERE created_at IS NULL")
        assert rows[0][0] == 2  # both finished: nothing left leased for the lease's 300 s
        drainer.close()
        holder.close()
    finally:
        backend.execute(f"DROP TABLE IF EXISTS {table}")
