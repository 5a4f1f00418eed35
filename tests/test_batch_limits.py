"""Batches at the API's maximum, in their worst shapes, on SQLite and MariaDB: 1,000 tasks of
255-character ids, each under a lease of its own, through the store and through the app; and a
statement the database refuses for good answered as such, never as a retryable 503."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from conftest import db_now
from sqlalchemy.engine import Connection

import perfectqueue
from perfectqueue.errors import (
    AlreadyExistsError,
    InternalError,
    PerfectQueueError,
    PreemptedError,
    TooLargeError,
    UnavailableError,
)
from perfectqueue.service.app import create_app
from perfectqueue.service.config import settings_from
from perfectqueue.service.store import Database, NewTask, QueueStore, TaskStatus

MAX_BATCH = 1000
IDS = [f"{i:04d}-".ljust(255, "x") for i in range(MAX_BATCH)]


def own_leases(store: QueueStore, ids: list[str]) -> list[tuple[str, int]]:
    """Give each running task of ``ids`` a lease of its own (as 1,000 polls would, faster)."""
    items = [(task_id, 10**15 + 7919 * i) for i, task_id in enumerate(ids)]
    held_by = sa.update(store.table).where(store.table.c.id == sa.bindparam("b_id"))
    statement = held_by.values(owner=sa.bindparam("b_owner"))
    with store.db.engine.begin() as conn:
        conn.execute(statement, [{"b_id": task_id, "b_owner": lease} for task_id, lease in items])
    return items


def kinds(results: list[PerfectQueueError | None]) -> list[type[PerfectQueueError] | None]:
    return [None if r is None else type(r) for r in results]


# -- the store -------------------------------------------------------------------------------


def test_the_store_takes_batches_of_a_thousand_distinct_leases(store: QueueStore) -> None:
    assert store.submit_many([NewTask(i, "x") for i in IDS]) == [None] * MAX_BATCH
    assert kinds(store.submit_many([NewTask(i, "x") for i in IDS])) == [AlreadyExistsError] * MAX_BATCH
    assert sorted(a.task.id for a in store.acquire(MAX_BATCH, 60)) == IDS
    items = own_leases(store, IDS)
    stale = [*items[:-1], (IDS[-1], 1)]

    assert kinds(store.heartbeat_many(stale, 600)) == [None] * (MAX_BATCH - 1) + [PreemptedError]
    assert store.heartbeat_many(items, 600) == [None] * MAX_BATCH
    assert kinds(store.finish_many(stale)) == [None] * (MAX_BATCH - 1) + [PreemptedError]
    assert store.get(IDS[-1]).status is TaskStatus.RUNNING
    assert store.get(IDS[-1]).timeout >= db_now(store) + 590
    assert store.finish_many(items[-1:]) == [None]
    assert store.get(IDS[0]).status is TaskStatus.FINISHED


def test_one_finish_batch_of_a_thousand_distinct_leases(store: QueueStore) -> None:
    store.submit_many([NewTask(i, "x") for i in IDS])
    store.acquire(MAX_BATCH, 60)
    items = own_leases(store, IDS)

    assert store.finish_many(items) == [None] * MAX_BATCH  # all held: the one fenced UPDATE
    assert {store.get(i).status for i in (IDS[0], IDS[-1])} == {TaskStatus.FINISHED}


# -- through the app -------------------------------------------------------------------------


def test_the_api_takes_its_largest_batches(store: QueueStore, db_url: str, table_name: str) -> None:
    app = create_app(settings_from({"url": db_url, "queues": {"q": {"table": table_name}}}))

    async def scenario(client: httpx.AsyncClient) -> None:
        tasks = [{"id": i, "type": "x"} for i in IDS]
        submitted = await client.post("/v1/queues/q/submit-batch", json={"tasks": tasks})
        assert submitted.status_code == 200 and len(submitted.json()["successful"]) == MAX_BATCH
        polled: list[str] = []
        for _ in range(MAX_BATCH // 100):
            answer = await client.post("/v1/queues/q/poll", json={"max": 100, "alive_time": 60})
            polled += [t["id"] for t in answer.json()["tasks"]]
        assert sorted(polled) == IDS
        leases = [{"id": i, "lease": str(lease)} for i, lease in own_leases(store, IDS)]
        beat = await client.post("/v1/queues/q/heartbeat-batch", json={"tasks": leases, "alive_time": 600})
        assert answered_all(beat)
        assert answered_all(await client.post("/v1/queues/q/finish-batch", json={"tasks": leases}))

    _serve(app, scenario)
    assert store.get(IDS[-1]).status is TaskStatus.FINISHED


def answered_all(answer: httpx.Response) -> bool:
    body = answer.json()
    return answer.status_code == 200 and len(body["successful"]) == MAX_BATCH and body["failed"] == []


def _serve(app: Any, scenario: Any) -> None:
    async def run() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://in") as client:
            await scenario(client)

    try:
        asyncio.run(run())
    finally:
        for db in app.state.runtime.databases.values():
            db.dispose()


# -- refused for good is not unavailable -----------------------------------------------------


def test_a_statement_refused_for_good_is_not_unavailability(database: Database) -> None:
    def refused(work: Any) -> type[PerfectQueueError]:
        with pytest.raises(PerfectQueueError) as caught:
            database.transaction(work, readonly=True)
        return type(caught.value)

    assert refused(lambda conn: conn.exec_driver_sql("SELEC 1")) is InternalError
    assert InternalError.status == 500
    if database.is_sqlite:
        deep = sa.or_(*(sa.literal_column("1") == sa.literal(i) for i in range(1100)))
        assert refused(lambda conn: conn.execute(sa.select(deep))) is TooLargeError
        assert refused(_over_the_parameter_limit) is TooLargeError
    assert refused(lambda conn: conn.exec_driver_sql("SELECT * FROM t_no_such_table")) is UnavailableError
    assert not database.retried  # nothing was tried twice


def _over_the_parameter_limit(conn: Connection) -> None:
    """One host parameter more than this SQLite takes (32,766 by default since 3.32, more in
    some builds)."""
    driver = conn.connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)
    count = driver.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) + 1
    conn.exec_driver_sql(f"SELECT 1 WHERE 1 IN ({', '.join('?' * count)})", tuple(range(count)))


def test_a_batch_over_the_databases_limit_is_refused_not_retried(tmp_path: Any) -> None:
    """SQLite built with the old default of 999 host parameters (before 3.32): a batch of
    1,000 leases is over it. The answer is 413 without Retry-After, which the SDK does not retry."""
    url = f"sqlite:///{tmp_path / 'queue.sqlite3'}"
    app = create_app(settings_from({"url": url, "queues": {"q": {"table": "t_limits"}}}))
    (database,) = app.state.runtime.databases.values()
    store = QueueStore(database, "t_limits")
    store.init()
    store.submit_many([NewTask(i, "x") for i in IDS])
    store.acquire(MAX_BATCH, 60)
    items = own_leases(store, IDS)
    sa.event.listen(database.engine, "connect", _old_sqlite_limit)
    database.engine.dispose()

    async def scenario(client: httpx.AsyncClient) -> None:
        leases = [{"id": i, "lease": str(lease)} for i, lease in items]
        answer = await client.post("/v1/queues/q/heartbeat-batch", json={"tasks": leases})
        assert (answer.status_code, answer.json()["code"]) == (413, "too_large")
        assert "Retry-After" not in answer.headers
        transport = CountingTransport(app=app)
        config = {"url": "http://in", "queue": "q", "transport": transport}
        async with perfectqueue.open_async(config) as queue:
            with pytest.raises(TooLargeError):
                await queue.heartbeat_many([Held(i, str(lease)) for i, lease in items], alive_time=600)
        assert transport.requests == 1  # not retried
        assert store.heartbeat_many(items[:300], 600) == [None] * 300  # under the limit: served

    _serve(app, scenario)


@dataclass(frozen=True)
class Held:
    key: str
    lease: str


class CountingTransport(httpx.ASGITransport):
    requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return await super().handle_async_request(request)


def _old_sqlite_limit(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    dbapi_conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
