"""Graceful shutdown of a real service process under SIGTERM (docs/operations.md).

A request is held in flight by a lock the test takes in the database (a write transaction on
SQLite, an uncommitted row with the same id on MariaDB), beside long-polls waiting on an empty
queue. After SIGTERM: readiness answers 503 at once, the long-polls return empty at once, the
held request still completes when the lock goes, and the process exits, well within the grace.
A request that never completes is cut off at the grace.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager as ContextManager
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from conftest import drop_table
from prometheus_client.parser import text_string_to_metric_families
from servers import service_process, write_config
from test_api import TestClient

from perfectqueue.service.announce import Announcer
from perfectqueue.service.app import create_app
from perfectqueue.service.config import settings_from
from perfectqueue.service.store import Database, QueueStore

POLLS = 5


@contextmanager
def holding_the_id(database: Database, table_name: str, task_id: str) -> Iterator[Callable[[], None]]:
    """An open transaction that has inserted ``task_id``: a submit of that id waits until the
    yielded function rolls it back."""
    table = QueueStore(database, table_name).table
    with database.engine.connect() as conn:
        transaction = conn.begin()  # SQLite: BEGIN IMMEDIATE, the write lock
        conn.execute(sa.insert(table).values(id=task_id, timeout=2_000_000_000, data=b"{}", created_at=1))
        try:
            yield transaction.rollback
        finally:
            if transaction.is_active:
                transaction.rollback()


def test_sigterm_fails_readiness_releases_polls_finishes_requests_and_exits(
    database: Database, db_url: str, table_name: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "pq.yml", db_url, table_name, shutdown_grace=15)
    with service_process(config, tmp_path / "service.log") as (base, proc):
        t = asyncio.run(stop_while_busy(base, proc, lambda: holding_the_id(database, table_name, "slow")))
        proc.wait(timeout=15)
        exited = time.monotonic()
    signalled = t["signalled"]
    print(
        f"\nSIGTERM: /readyz 503 after {t['not_ready'] - signalled:.2f} s, long-polls returned after "
        f"{t['polls_done'] - signalled:.2f} s, exit {exited - t['released']:.2f} s after the held request"
    )
    assert proc.returncode == 0
    assert t["not_ready"] - signalled < 2
    assert t["polls"] == [(200, [])] * POLLS
    assert t["polls_done"] - signalled < 5
    assert t["submit"] == 201, "the request in flight at the signal was answered"
    assert exited - t["released"] < 5, "the process left once its last request was answered"
    assert exited - signalled < 15


async def stop_while_busy(
    base: str, proc: subprocess.Popen[bytes], hold: Callable[[], ContextManager[Callable[[], None]]]
) -> dict[str, Any]:
    t: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=base, timeout=60) as client, AsyncExitStack() as stack:

        async def poll() -> tuple[int, Any]:
            response = await client.post("/v1/queues/q/poll", json={"max": 1, "wait": 20})
            return response.status_code, response.json().get("tasks")

        polls = [asyncio.create_task(poll()) for _ in range(POLLS)]
        await until(lambda: at_least(client, POLLS), 10, "the polls were read")
        await asyncio.sleep(0.5)  # their first acquisition (on SQLite a write) is over: they wait
        release = stack.enter_context(hold())
        submit = asyncio.create_task(client.post("/v1/queues/q/submit", json={"id": "slow", "type": "t"}))
        await until(lambda: at_least(client, POLLS + 1), 10, "the submit is waiting for the lock")

        t["signalled"] = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        async with httpx.AsyncClient(base_url=base, timeout=5) as probe:  # a new connection
            ready = await probe.get("/readyz")
        t["not_ready"] = time.monotonic()
        assert (ready.status_code, ready.json()) == (503, {"status": "stopping"})
        t["polls"] = await asyncio.wait_for(asyncio.gather(*polls), 10)
        t["polls_done"] = time.monotonic()

        await asyncio.sleep(1)
        assert not submit.done(), "the held request is still in flight"
        assert proc.poll() is None, "the process waits for it"
        assert (await client.get("/livez")).status_code == 200, "and answers meanwhile"
        release()
        t["released"] = time.monotonic()
        t["submit"] = (await asyncio.wait_for(submit, 10)).status_code
    return t


def test_a_request_that_never_ends_is_cut_off_at_the_grace(tmp_path: Path, table_name: str) -> None:
    url = f"sqlite:///{tmp_path / 'queue.sqlite3'}"
    config = write_config(tmp_path / "pq.yml", url, table_name, shutdown_grace=1)
    database = Database(url)
    with (
        service_process(config, tmp_path / "service.log") as (base, proc),
        holding_the_id(database, table_name, "slow"),
        httpx.Client(base_url=base, timeout=30) as client,
    ):

        def submit() -> Any:
            try:
                return client.post("/v1/queues/q/submit", json={"id": "slow", "type": "t"}).status_code
            except httpx.TransportError as exc:
                return exc

        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(submit)
            time.sleep(0.5)
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
            exited = time.monotonic()
            print(
                f"\nSIGTERM with a request held forever, grace 1 s: exited after {exited - signalled:.2f} s"
            )
            assert 0.5 < exited - signalled < 4
            assert proc.returncode == 0
            assert answer.result(timeout=5) != 201, "the held request was cut off"
    database.dispose()


async def until(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.05)


async def at_least(client: httpx.AsyncClient, count: int) -> bool:
    """Is the service answering ``count`` requests besides the scrape that asks?"""
    text = (await client.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        if family.name == "perfectqueue_http_requests_in_flight":
            return family.samples[0].value >= count + 1
    raise AssertionError("no in-flight gauge")


def test_work_a_queue_started_on_its_own_ends_before_the_databases_are_disposed(
    db_url: str, table_name: str
) -> None:
    """An announcement still on its way at shutdown (here one that holds a connection for 0.5 s)
    is waited for: no connection is in use when the pool is disposed, none is left to the
    garbage collector (which warns on PostgreSQL's driver)."""
    app = create_app(
        settings_from({"url": db_url, "queues": {"q": {"table": table_name}}, "auto_init": True})
    )
    runtime = app.state.runtime
    queue = runtime.queues["q"]
    db = queue.store.db
    in_use: list[int] = []
    dispose = runtime.dispose

    def disposing() -> None:
        in_use.append(db.engine.pool.checkedout())
        dispose()

    def slow_announcement() -> None:
        with db.engine.connect() as conn:
            conn.execute(sa.select(1))
            time.sleep(0.5)

    runtime.dispose = disposing
    with TestClient(app) as client:
        assert client.post("/v1/queues/q/submit", json={"id": "a", "type": "t"}).status_code == 201
        [task] = client.post("/v1/queues/q/poll", json={"max": 1}).json()["tasks"]
        queue.announcer = Announcer(lambda: runtime.run(slow_announcement), enabled=True)
        released = client.post("/v1/queues/q/release", json={"id": "a", "lease": task["lease"]})
        assert released.status_code == 204, released.text
        sending = queue.announcer.sending
        assert sending is not None and not sending.done()
    assert sending.done() and in_use == [0]
    if not db_url.startswith("sqlite"):
        cleanup = Database(db_url)
        drop_table(cleanup, table_name)
        cleanup.dispose()
