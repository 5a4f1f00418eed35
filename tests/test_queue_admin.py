"""An operator's calls on a whole queue. Pausing: polls get nothing, on every replica, while
submits and the calls on leased tasks go on; resuming hands tasks out again (the store on both
backends, and the API). Bulk actions: requeue or cancel every task a filter selects."""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import drop_table
from postgres_instance import PostgreSQL, postgres  # noqa: F401 - the fixture

from perfectqueue.service.app import create_app
from perfectqueue.service.config import settings_from
from perfectqueue.service.store import Database, NewTask, QueueStore

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's test client warns at import
    from fastapi.testclient import TestClient

Q = "/v1/queues/q"


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.05)


def test_a_pause_reaches_every_process_and_stops_only_acquisitions(
    store: QueueStore, database: Database, table_name: str
) -> None:
    other = QueueStore(database, table_name)  # another replica, or a direct-backend process
    store.submit(NewTask("held", "t"))
    (held,) = store.acquire(1, 600)
    store.submit(NewTask("a", "t"))
    assert other.counts().paused_at is None  # it has read the flag: it trusts it for a second
    try:
        paused_at = store.pause()
        assert paused_at is not None and store.counts().paused_at == paused_at
        assert store.acquire(10, 60) == []
        store.submit(NewTask("b", "t"))  # submits are accepted
        store.heartbeat("held", held.lease, 600)  # and a leased task goes on
        store.finish("held", held.lease)
        wait_for(lambda: other.counts().paused_at == paused_at)
        assert other.acquire(10, 60) == []
        assert store.pause() == paused_at  # pausing again keeps the first time
    finally:
        store.resume()
    assert sorted(t.task.id for t in store.acquire(10, 60)) == ["a", "b"]
    wait_for(lambda: other.counts().paused_at is None)
    store.resume()  # resuming a queue that is not paused changes nothing


@pytest.fixture
def client(db_url: str, table_name: str) -> Iterator[TestClient]:
    app = create_app(
        settings_from({"url": db_url, "queues": {"q": {"table": table_name}}, "auto_init": True})
    )
    with TestClient(app) as client:
        yield client
        client.post(f"{Q}/resume")
    if not db_url.startswith("sqlite"):
        db = Database(db_url)
        drop_table(db, table_name)
        db.dispose()


def poll(client: TestClient, **fields: Any) -> list[dict[str, Any]]:
    response = client.post(f"{Q}/poll", json={"max": 10, **fields})
    assert response.status_code == 200, response.text
    tasks: list[dict[str, Any]] = response.json()["tasks"]
    return tasks


def test_pause_and_resume_through_the_api(client: TestClient) -> None:
    assert client.get(Q).json()["paused"] is False
    paused = client.post(f"{Q}/pause")
    assert paused.status_code == 200, paused.text
    assert (paused.json()["paused"], paused.json()["paused_at"][-1]) == (True, "Z")
    assert client.post(f"{Q}/submit", json={"id": "a", "type": "t"}).status_code == 201
    assert paused.json()["paused_at"] == client.get(Q).json()["paused_at"]
    assert poll(client) == []
    assert poll(client, wait=0.6) == []  # a long-poll too
    resumed = client.post(f"{Q}/resume")
    assert (resumed.status_code, resumed.json()["paused"], resumed.json()["paused_at"]) == (200, False, None)
    assert [t["id"] for t in poll(client)] == ["a"]
    assert client.post("/v1/queues/nope/pause").json()["code"] == "unknown_queue"


def bulk(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post(f"{Q}/bulk", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def status_of(client: TestClient, task_id: str) -> str:
    status: str = client.get(f"{Q}/tasks/{task_id}").json()["status"]
    return status


def test_bulk_requeue_of_a_types_dead_and_cancel_of_a_users_waiting(client: TestClient) -> None:
    for task_id, task_type in [("d1", "mail"), ("d2", "mail"), ("d3", "report")]:
        client.post(f"{Q}/submit", json={"id": task_id, "type": task_type, "max_attempts": 1})
    for task in poll(client):
        client.post(f"{Q}/retry", json={"id": task["id"], "lease": task["lease"]})  # its only attempt: dead
    for task_id, user in [("w1", "acme"), ("w2", "acme"), ("w3", "zed")]:
        assert client.post(f"{Q}/submit", json={"id": task_id, "type": "t", "user": user}).status_code == 201

    requeued = bulk(client, action="requeue", status="dead", type="mail")
    assert requeued == {"successful": [{"id": "d1"}, {"id": "d2"}], "failed": [], "next_cursor": None}
    assert [status_of(client, t) for t in ("d1", "d2", "d3")] == ["waiting", "waiting", "dead"]

    first = bulk(client, action="cancel", status="waiting", user="acme", limit=1)
    assert (first["successful"], first["next_cursor"]) == ([{"id": "w1"}], "w1")
    rest = bulk(client, action="cancel", status="waiting", user="acme", cursor=first["next_cursor"])
    assert (rest["successful"], rest["next_cursor"]) == ([{"id": "w2"}], None)
    assert [status_of(client, t) for t in ("w1", "w2", "w3")] == ["cancelled", "cancelled", "waiting"]

    refused = bulk(client, action="requeue", status="waiting", user="zed")  # as requeue alone answers
    assert [(f["id"], f["code"]) for f in refused["failed"]] == [("w3", "not_dead")]
    invalid = client.post(f"{Q}/bulk", json={"action": "delete", "status": "dead"})
    assert invalid.json()["code"] == "invalid"


def test_first_pauses_racing_an_init_on_postgresql_all_succeed(postgres: PostgreSQL) -> None:  # noqa: F811
    """On a database without the paused queues' side table, the first pauses of several stores and
    an ``init`` at once each succeed: a pause creates the side table as ``init`` does, under its
    lock (PostgreSQL's concurrent CREATE TABLE IF NOT EXISTS fails on a catalog's unique index)."""
    for attempt in range(4):
        dbs = [Database(postgres.url) for _ in range(6)]
        stores = [QueueStore(db, f"q{attempt}_{i}") for i, db in enumerate(dbs)]
        dbs[0].transaction(lambda conn: conn.execute(sa.text("DROP TABLE IF EXISTS perfectqueue_paused")))
        barrier = threading.Barrier(len(stores))
        failed: list[BaseException] = []

        def first_call(i: int, store: QueueStore) -> None:
            barrier.wait()
            try:
                store.init() if i == 0 else store.pause()
            except BaseException as exc:
                failed.append(exc)

        threads = [threading.Thread(target=first_call, args=pair) for pair in enumerate(stores)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        try:
            assert not failed, (attempt, failed[:2])
            paused = sa.text("SELECT COUNT(*) FROM perfectqueue_paused")
            assert dbs[0].transaction(lambda conn: conn.execute(paused).scalar()) == len(stores) - 1
        finally:
            for db in dbs:
                db.dispose()
