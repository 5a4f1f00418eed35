"""A transaction whose COMMIT took effect but whose answer was lost (the connection cut right
after the server committed) is tried again on a new connection, as a frozen or killed Galera
node's are on the next node: what the repeat answers (database.py, ``Database.transaction``).

The cut is real: the server commits, then the connection's socket is shut down before the
store's own COMMIT, which therefore fails as a lost connection.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import drop_table, require_mysql

from perfectqueue.errors import AlreadyExistsError, AlreadyFinishedError
from perfectqueue.service.store import Database, NewTask, QueueStore, TaskStatus


class CommitCut:
    """Armed, the next COMMIT is made by the server, then its answer is lost."""

    def __init__(self, db: Database) -> None:
        self.armed = 0
        sa.event.listen(db.engine, "commit", self._cut)

    def _cut(self, conn: Any) -> None:
        if self.armed:
            self.armed -= 1
            raw = conn.connection.dbapi_connection
            raw.commit()
            raw._sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def store(table_name: str) -> Iterator[QueueStore]:
    store = QueueStore(Database(require_mysql()), table_name)
    store.init()
    yield store
    drop_table(store.db, table_name)
    store.db.dispose()


def test_a_submit_whose_commit_answer_was_lost_is_stored_once_and_acknowledged(store: QueueStore) -> None:
    cut = CommitCut(store.db)
    cut.armed = 1
    store.submit(NewTask(id="a", type="t", data={"n": 1}))  # the repeat finds its own row
    cut.armed = 1
    assert store.submit_many([NewTask(id="b", type="t"), NewTask(id="c", type="t", user="u")]) == [None, None]
    assert cut.armed == 0 and store.db.retried["reconnects"] == 2
    assert [store.get(i).status for i in "abc"] == [TaskStatus.WAITING] * 3
    with pytest.raises(AlreadyExistsError):  # a submit of a stored id still is one
        store.submit(NewTask(id="a", type="t", data={"n": 1}))


def test_a_repeated_submit_meeting_another_task_of_its_id_is_refused(store: QueueStore) -> None:
    """The row found is not the lost try's (other data): AlreadyExists, as without the cut."""
    store.submit(NewTask(id="a", type="t", data={"n": 1}))
    cut = CommitCut(store.db)
    cut.armed = 1
    stored, refused = store.submit_many([NewTask(id="b", type="t"), NewTask(id="a", type="t", data={"n": 2})])
    assert stored is None and isinstance(refused, AlreadyExistsError)
    assert store.db.retried["reconnects"] == 1 and store.get("a").data == {"n": 1}


def test_a_lease_call_whose_commit_answer_was_lost_ends_as_asked(store: QueueStore) -> None:
    store.submit(NewTask(id="a", type="t"))
    (acquired,) = store.acquire(1, 60)
    cut = CommitCut(store.db)
    cut.armed = 1
    store.heartbeat("a", acquired.lease, 120)  # extended again: the same lease
    cut.armed = 1
    with pytest.raises(AlreadyFinishedError):  # the repeat meets its own finish
        store.finish("a", acquired.lease)
    assert store.get("a").status is TaskStatus.FINISHED


def test_counts_are_not_added_twice(store: QueueStore) -> None:
    minute = int(time.time()) // 60 * 60
    cut = CommitCut(store.db)
    cut.armed = 1
    store.add_throughput({minute: (3, 1)})
    assert store.db.retried["reconnects"] == 1
    assert store.throughput(minute, minute + 60) == {minute: (3, 1)}
