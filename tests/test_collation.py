"""Ids and users compare byte for byte in tables this project creates, on every backend (``Acme``,
``acme`` and ``acme `` are three users, ``R7.2`` and ``r7.2`` two ids); a MySQL table the original
created compares them without case and trailing spaces until ``init --binary-collation`` converts
it, and a submit it refuses names the id it collided with.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import drop_table, require_mysql
from test_store_fair_compat import create_original_table

from perfectqueue.errors import AlreadyExistsError
from perfectqueue.service.store import Database, NewTask, QueueStore


def test_users_differing_in_case_or_trailing_spaces_are_different_users(store: QueueStore) -> None:
    """Each user may run one task at a time: three users, so one poll leases three tasks."""
    store.init()
    users = ["acme", "Acme", "acme "]
    for n, user in enumerate(users * 2):
        store.submit(NewTask(id=f"t{n}", type="t", user=user, max_running=1))
    leased = store.acquire(10, 60)
    assert sorted(a.task.user or "" for a in leased) == sorted(users)
    store.submit(NewTask(id="R7.2", type="t"))
    store.submit(NewTask(id="r7.2", type="t"))  # another id


@pytest.fixture
def original(table_name: str) -> QueueStore:
    db = Database(require_mysql())
    create_original_table(db, table_name)  # the original's DDL: the server's default collation
    store = QueueStore(db, table_name)
    store.init()  # adds the columns and indexes, leaves the collation as it is
    yield store
    drop_table(db, table_name)
    db.dispose()


def test_an_original_table_names_the_id_a_submit_collided_with(original: QueueStore) -> None:
    original.submit(NewTask(id="r7.2", type="t"))
    with pytest.raises(AlreadyExistsError, match=r"'R7\.2' already exists as 'r7\.2'.*--binary-collation"):
        original.submit(NewTask(id="R7.2", type="t"))
    with pytest.raises(AlreadyExistsError, match=r"^task 'r7\.2' already exists$"):
        original.submit(NewTask(id="r7.2", type="t"))  # the same id: the plain refusal


def test_init_binary_collation_converts_an_original_table(original: QueueStore, table_name: str) -> None:
    original.submit(NewTask(id="r7.2", type="t", user="acme", max_running=1))
    command = ["init", "--url", require_mysql(), "--table", table_name, "--binary-collation"]
    done = subprocess.run(
        [sys.executable, "-m", "perfectqueue", *command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and "converted id and resource to utf8mb4_" in done.stdout, done.stderr
    original.submit(NewTask(id="R7.2", type="t", user="Acme", max_running=1))  # now another id
    assert sorted(a.task.user or "" for a in original.acquire(10, 60)) == ["Acme", "acme"]
    assert original.get("r7.2").id == "r7.2"
    assert original.init(binary_collation=True) == []  # converted once


@pytest.mark.parametrize("name", ["pq-tasks", "9queue", "q$1", "t" * 63])
def test_table_names_the_original_can_use_work(db_url: str, name: str) -> None:
    """Quoted everywhere: the table, its indexes (hashed past 64 characters), the lock, the hints."""
    if db_url.startswith("postgresql") and len(name) > 63:
        pytest.skip("PostgreSQL's names hold 63 bytes")
    db = Database(db_url)
    store = QueueStore(db, name)
    try:
        store.init()
        for n in range(3):
            store.submit(NewTask(id=f"t{n}", type="t", user="u", max_running=2))
        leased = store.acquire(10, 60)
        assert len(leased) == 2  # fair: the user's max_running, under the table's lock
        store.finish(leased[0].task.id, leased[0].lease)
        assert store.counts().waiting == 1
        assert store.init() == []  # every index found again by its derived name
    finally:
        drop_table(db, name)
        db.dispose()
