"""A table the original created, with tasks in flight, upgraded by two ``init`` at once while a
poller of the original's statements and one of this implementation's run: nothing is lost.

The original's poller runs the Ruby PerfectQueue's own statements (its acquire without a resource
limit, under ``GET_LOCK('<table>')`` on MariaDB, and its finish), as a Ruby process sharing the
table would; it never reads the added columns.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from test_store_fair_compat import create_original_table

from perfectqueue.errors import PerfectQueueError
from perfectqueue.service.store import Database, NewTask, QueueStore, TaskStatus
from perfectqueue.service.store import columns as columns_module
from perfectqueue.service.store.model import DELETE_OFFSET, EVENT_HORIZON
from perfectqueue.service.store.schema import EXTENSION_DEFAULTS

ORIGINAL_ACQUIRE = (
    "SELECT id, timeout, data, created_at, resource FROM {t} "
    "WHERE {horizon} < timeout AND timeout <= :now AND timeout <= :now AND created_at IS NOT NULL "
    "ORDER BY timeout ASC LIMIT 5"
)
ORIGINAL_LEASE = (
    "UPDATE {t} SET timeout=:next WHERE timeout <= :now AND id IN :ids AND created_at IS NOT NULL"
)
ORIGINAL_FINISH = (
    "UPDATE {t} SET timeout=:gone, created_at=NULL, resource=NULL WHERE id=:id AND created_at IS NOT NULL"
)
ORIGINAL_INSERT = (
    "INSERT INTO {t} (id, timeout, data, created_at, resource, max_running) "
    "VALUES (:id, :timeout, :data, :created_at, :resource, :max_running)"
)


class Poller(threading.Thread):
    """Takes and finishes tasks until told to stop; records what it finished and what failed."""

    def __init__(self, take: Callable[[], list[str]], finish: Callable[[str], None]) -> None:
        super().__init__(daemon=True)
        self.take, self.finish = take, finish
        self.done: list[str] = []
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                for task_id in self.take():
                    self.finish(task_id)
                    self.done.append(task_id)
            except (PerfectQueueError, sa.exc.SQLAlchemyError) as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.01)


T = TypeVar("T")


def as_the_original(work: Callable[[], T]) -> T:
    """The original retries a statement that met a deadlock ("try restarting transaction")."""
    for _ in range(9):
        try:
            return work()
        except sa.exc.OperationalError as exc:
            if "try restarting transaction" not in str(exc):
                raise
    return work()


def original_poller(db: Database, table: str) -> Poller:
    lock = None if db.is_sqlite else table  # the original takes GET_LOCK('<table>') to acquire

    def take() -> list[str]:
        with db.connect(lock=lock) as conn:
            now = conn.execute(sa.select(db.now())).scalar_one()
            sql = ORIGINAL_ACQUIRE.format(t=table, horizon=EVENT_HORIZON)
            ids = [row.id for row in conn.execute(sa.text(sql), {"now": now})]
            if ids:
                lease = sa.text(ORIGINAL_LEASE.format(t=table)).bindparams(
                    sa.bindparam("ids", expanding=True)
                )
                conn.execute(lease, {"next": now + 60, "now": now, "ids": ids})
            return ids

    def finish(task_id: str) -> None:
        with db.connect() as conn:
            now = conn.execute(sa.select(db.now())).scalar_one()
            conn.execute(
                sa.text(ORIGINAL_FINISH.format(t=table)), {"gone": now - DELETE_OFFSET + 300, "id": task_id}
            )

    return Poller(lambda: as_the_original(take), lambda task_id: as_the_original(lambda: finish(task_id)))


def our_poller(store: QueueStore) -> Poller:
    leases: dict[str, int] = {}

    def take() -> list[str]:
        acquired = store.acquire(5, 60)
        leases.update({a.task.id: a.lease for a in acquired})
        return [a.task.id for a in acquired]

    return Poller(take, lambda task_id: store.finish(task_id, leases.pop(task_id)))


def insert_in_flight(db: Database, table: str, count: int) -> list[str]:
    """Rows as the original writes them: waiting, leased by a worker that died, and finished."""
    now = db_now_of(db)
    rows: list[dict[str, Any]] = []
    for i in range(count):
        state = ("waiting", "leased", "waiting", "finished")[i % 4]
        timeout = {"waiting": now - 5, "leased": now + 2, "finished": now - DELETE_OFFSET + 300}[state]
        rows.append(
            {
                "id": f"{state}.{i}",
                "timeout": timeout,
                "data": json.dumps({"type": "old", "n": i}).encode(),
                "created_at": None if state == "finished" else now - 10,
                "resource": None if state == "finished" else f"u{i % 3}",
                "max_running": 50,
            }
        )
    with db.engine.begin() as conn:
        conn.execute(sa.text(ORIGINAL_INSERT.format(t=table)), rows)
    return [r["id"] for r in rows if r["created_at"] is not None]


def db_now_of(db: Database) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(sa.select(db.now())).scalar_one())


def test_init_upgrades_a_table_of_the_original_under_load(
    db_url: str, database: Database, table_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(columns_module, "SCHEMA_RECHECK", 0.2)
    create_original_table(database, table_name)
    live = insert_in_flight(database, table_name, 160)
    ours = QueueStore(database, table_name)  # not initialised: serves the table as the original would
    pollers = [original_poller(database, table_name), our_poller(ours)]
    for poller in pollers:
        poller.start()
    submitted: list[str] = []
    inits: list[list[str]] = []
    try:
        while sum(len(p.done) for p in pollers) < 20:  # upgrade in the middle of the work
            time.sleep(0.02)

        def init() -> None:
            db = Database(db_url)
            try:
                inits.append(QueueStore(db, table_name).init())
            finally:
                db.dispose()

        racers = [threading.Thread(target=init) for _ in range(2)]
        for racer in racers:
            racer.start()
        for i in range(40):  # submits go on during the upgrade
            ours.submit(NewTask(f"new.{i}", "new", {"i": i}, user=f"u{i % 3}"))
            submitted.append(f"new.{i}")
        for racer in racers:
            racer.join(timeout=60)
        after = [f"after.{i}" for i in range(10)]
        for task_id in after:
            ours.submit(NewTask(task_id, "new"))
        expected = set(live) | set(submitted) | set(after)
        deadline = time.monotonic() + 60
        while {i for p in pollers for i in p.done} < expected and time.monotonic() < deadline:
            time.sleep(0.05)  # the leased rows come back when their lease (2 s) expires
    finally:
        for poller in pollers:
            poller.stop.set()
        for poller in pollers:
            poller.join(timeout=30)

    assert len(inits) == 2, "an init failed"
    assert any("added column attempts" in done for done in inits), inits
    assert {i for p in pollers for i in p.done} == expected
    assert pollers[1].errors == [] and pollers[0].errors == []
    for task_id in expected:
        assert ours.get(task_id).status is TaskStatus.FINISHED
    with database.engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns(table_name)}
    assert set(EXTENSION_DEFAULTS) <= columns
    counts = ours.counts()
    assert (counts.waiting, counts.running, counts.finished) == (0, 0, 160 // 4 + len(expected))
    assert ours.extended()  # it noticed the other processes' init
    ours.submit(NewTask("probe", "new", max_attempts=1))
    [probe] = ours.acquire(1, 60)
    assert probe.task.attempts == 1 and probe.task.max_attempts == 1
