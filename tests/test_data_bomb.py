"""Data that inflates past ``max_data_bytes`` (a gzip "bomb" written by another writer: a Ruby
process, the SDK's direct backend) is inflated only that far and never delivered: a poll ends the
task dead saying why, a read shows it with ``data_withheld``. See docs/faults.md.
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from servers import service_process, write_config

from perfectqueue.service.store import Database, QueueStore
from perfectqueue.service.store.codec import compact_json, decode_data, inflate
from perfectqueue.service.store.model import NewTask, TaskStatus

LIMIT = 512 * 1024


def bomb(inflated: int) -> bytes:
    """Task data stored gzipped that inflates to about ``inflated`` bytes."""
    return gzip.compress(b'{"type":"t","pad":"' + b"a" * inflated + b'"}', mtime=0)


def test_inflating_stops_at_the_limit() -> None:
    blob = bomb(200 * 1024 * 1024)  # 200 MiB from about 200 KB
    started = time.process_time()
    assert inflate(blob, LIMIT) is None
    assert decode_data("x.1", blob, LIMIT)[:3] == ("x", None, "gzip")
    assert time.process_time() - started < 0.5  # inflating it whole takes seconds and 200 MiB


def test_data_at_the_limit_and_several_members_are_read() -> None:
    data = {"pad": "a" * (LIMIT - len('{"pad":""}'))}
    assert len(compact_json(data)) == LIMIT  # as large as a submit may send
    stored = gzip.compress(compact_json({**data, "type": "t" * 255}).encode(), mtime=0)
    assert decode_data("x", stored, LIMIT)[:3] == ("t" * 255, data, "gzip")
    two = gzip.compress(b'{"type":"t",', mtime=0) + gzip.compress(b'"a":1}', mtime=0)
    assert decode_data("x", two, LIMIT)[:3] == ("t", {"a": 1}, "gzip")
    assert decode_data("x", b"\x1f\x8bnot gzip", LIMIT)[:3] == ("x", {}, "gzip")  # as before: empty data


def insert_raw(db: Database, table: sa.Table, task_id: str, data: bytes) -> None:
    with db.engine.begin() as conn:
        conn.execute(sa.insert(table).values(id=task_id, timeout=1_400_000_000, data=data, created_at=1))


def test_a_poll_ends_a_bomb_dead_and_delivers_the_rest(database: Database, table_name: str) -> None:
    store = QueueStore(database, table_name, max_data_bytes=LIMIT)
    store.init()
    insert_raw(database, store.table, "bomb", bomb(64 * 1024 * 1024))
    store.submit(NewTask(id="fine", type="t", data={"a": 1}))
    acquired = store.acquire(10, 60)
    assert [a.task.id for a in acquired] == ["fine"] and acquired[0].task.data == {"a": 1}
    dead = store.get("bomb")
    assert dead.status is TaskStatus.DEAD and dead.data_withheld and dead.data == {}
    assert dead.last_error is not None and "max_data_bytes" in dead.last_error
    assert store.acquire(10, 60) == []
    [listed] = [task for task in store.list(limit=10).tasks if task.id == "bomb"]
    assert listed.data_withheld


def test_the_api_never_answers_an_inflated_bomb(tmp_path: Path) -> None:
    """A 51 KB row that inflates to 50 MiB: the task's page and a poll answer a few hundred bytes
    (they answered 52 MB, and a poll inflated it inside its lease transaction)."""
    url = f"sqlite:///{tmp_path}/q.sqlite3"
    config = write_config(tmp_path / "c.yml", url, "q")
    with service_process(config, tmp_path / "service.log") as (base, _proc):
        db = Database(url)
        try:
            insert_raw(db, QueueStore(db, "q").table, "bomb", bomb(50 * 1024 * 1024))
        finally:
            db.dispose()
        task = httpx.get(f"{base}/v1/queues/q/tasks/bomb", timeout=30)
        assert task.status_code == 200 and len(task.content) < 2000
        assert task.json()["data_withheld"] is True and task.json()["data"] == {}
        poll = httpx.post(f"{base}/v1/queues/q/poll", json={"max": 10}, timeout=30)
        assert poll.status_code == 200 and poll.json() == {"tasks": []}
        after = httpx.get(f"{base}/v1/queues/q/tasks/bomb", timeout=30).json()
        assert after["status"] == "dead" and "max_data_bytes" in after["last_error"]


@pytest.mark.parametrize("size", [10, 600 * 1024])
def test_plain_data_over_the_limit_is_withheld_too(tmp_path: Path, size: int) -> None:
    db = Database(f"sqlite:///{tmp_path}/q.sqlite3")
    try:
        store = QueueStore(db, "q", max_data_bytes=LIMIT)
        store.init()
        insert_raw(db, store.table, "plain", json.dumps({"type": "t", "pad": "a" * size}).encode())
        assert store.get("plain").data_withheld is (size > LIMIT)
    finally:
        db.dispose()
