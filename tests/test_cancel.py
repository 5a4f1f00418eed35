"""Cancellation, on SQLite and MariaDB: the store's contract, the HTTP API, the SDK, and the
worker interrupting a cancelled handler (a thread here, forked children in test_worker_outcomes)."""

from __future__ import annotations

import asyncio
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from conftest import db_now, expire_lease
from sdk_support import next_time

import perfectqueue
from perfectqueue.errors import (
    AlreadyExistsError,
    AlreadyFinishedError,
    CancelRequestedError,
    NotDeadError,
    NotFoundError,
    PerfectQueueError,
)
from perfectqueue.service.app import create_app
from perfectqueue.service.config import settings_from
from perfectqueue.service.store import NewTask, QueueStore, TaskStatus
from perfectqueue.worker import Base, Dispatch, Signals, WorkerConfig
from perfectqueue.worker.runner import Runner
from perfectqueue.worker.task_monitor import TaskMonitor

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's test client warns at import
    from fastapi.testclient import TestClient

Q = "/v1/queues/q"
TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

# -- the store -------------------------------------------------------------------------------


def test_a_task_nobody_holds_is_cancelled_at_once(store: QueueStore) -> None:
    store.submit(NewTask("w", "x"))
    store.submit(NewTask("later", "x", run_at=db_now(store) + 3600))
    for task_id in ("w", "later"):
        cancelled = store.cancel(task_id)
        assert (cancelled.status, cancelled.created_at, cancelled.cancel_requested) == (
            TaskStatus.CANCELLED,
            None,
            False,
        )
    assert store.acquire(10, 60) == []
    with pytest.raises(AlreadyExistsError):
        store.submit(NewTask("w", "x"))  # the id stays reserved for the retention
    with pytest.raises(AlreadyFinishedError):
        store.cancel("w")
    with pytest.raises(NotFoundError):
        store.cancel("nobody")
    assert [t.id for t in store.list(status=TaskStatus.CANCELLED).tasks] == ["later", "w"]
    assert (store.counts().finished, store.counts().cancelled) == (0, 2)  # each counted once


def test_a_running_task_is_told_at_its_heartbeat_and_ends_cancelled(store: QueueStore) -> None:
    store.submit_many([NewTask(i, "x") for i in ("f", "r", "l")])
    held = {a.task.id: a for a in store.acquire(10, 5)}
    for task_id in held:
        asked = store.cancel(task_id)
        assert (asked.status, asked.cancel_requested) == (TaskStatus.RUNNING, True)
        assert store.cancel(task_id).cancel_requested  # asking again changes nothing
    before = store.get("f").timeout
    with pytest.raises(CancelRequestedError):
        store.heartbeat("f", held["f"].lease, 600, data={"step": 2})
    assert store.get("f").timeout > before and store.get("f").data == {"step": 2}  # still leased
    with pytest.raises(CancelRequestedError):
        store.finish("f", held["f"].lease)
    with pytest.raises(CancelRequestedError):
        store.retry("r", held["r"].lease, 0, error="CancelRequestedError: stopped")
    with pytest.raises(CancelRequestedError):
        store.release("l", held["l"].lease)
    for task_id in held:
        assert store.get(task_id).status is TaskStatus.CANCELLED
    assert store.get("r").last_error == "CancelRequestedError: stopped"
    with pytest.raises(CancelRequestedError):
        store.finish("f", held["f"].lease)  # asking again: the same clear answer
    with pytest.raises(CancelRequestedError):
        store.heartbeat("f", held["f"].lease, 60)
    assert store.acquire(10, 60) == []


@pytest.mark.parametrize("fair", [True, False], ids=["fair", "oldest first"])
def test_a_cancelled_task_whose_holder_died_is_never_delivered(store: QueueStore, fair: bool) -> None:
    store = QueueStore(store.db, store.table.name, fair=fair)
    store.submit_many([NewTask("gone", "x"), NewTask("ok", "x")])
    held = {a.task.id: a for a in store.acquire(10, 60)}
    store.cancel("gone")
    expire_lease(store, "gone")
    store.release("ok", held["ok"].lease)
    assert [a.task.id for a in store.acquire(10, 60)] == ["ok"]
    gone = store.get("gone")
    assert (gone.status, gone.attempts) == (TaskStatus.CANCELLED, 1)  # ended, not counted again
    results = store.finish_many([("gone", held["gone"].lease)])
    assert isinstance(results[0], CancelRequestedError)


def test_a_cancel_racing_a_finish_has_exactly_one_winner(store: QueueStore) -> None:
    ids = [f"race{i}" for i in range(12)]
    store.submit_many([NewTask(i, "x") for i in ids])
    held = {a.task.id: a for a in store.acquire(100, 60)}
    outcomes: dict[str, dict[str, Any]] = {i: {} for i in ids}

    def contend(task_id: str, who: str) -> None:
        barrier.wait()
        try:
            if who == "cancel":
                outcomes[task_id][who] = store.cancel(task_id)
            else:
                store.finish(task_id, held[task_id].lease)
                outcomes[task_id][who] = "finished"
        except PerfectQueueError as exc:
            outcomes[task_id][who] = exc

    for task_id in ids:
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=contend, args=(task_id, who)) for who in ("cancel", "finish")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    for task_id, outcome in outcomes.items():
        status = store.get(task_id).status
        if outcome["finish"] == "finished":  # the finish won: the cancel was too late
            assert isinstance(outcome["cancel"], AlreadyFinishedError), outcome
            assert status is TaskStatus.FINISHED
        else:  # the cancel won: the finish is refused and the task ends cancelled
            assert isinstance(outcome["finish"], CancelRequestedError), outcome
            assert outcome["cancel"].cancel_requested and status is TaskStatus.CANCELLED


# -- the HTTP API ----------------------------------------------------------------------------


@contextmanager
def api(db_url: str, table: str, **queue: Any) -> Iterator[TestClient]:
    settings = settings_from({"url": db_url, "queues": {"q": {"table": table, **queue}}, "auto_init": True})
    with TestClient(create_app(settings)) as client:
        yield client


def test_the_api_cancels_requeues_and_carries_the_traceparent(db_url: str, table_name: str) -> None:
    with api(db_url, table_name, max_attempts=1) as client:
        post = client.post
        assert (
            post(f"{Q}/submit", json={"id": "a", "type": "x"}, headers={"traceparent": TRACE}).status_code
            == 201
        )
        assert (
            post(
                f"{Q}/submit", json={"id": "b", "type": "x", "traceparent": TRACE.replace("4bf9", "5bf9")}
            ).status_code
            == 201
        )
        for body, headers in (
            ({"id": "c", "type": "x", "traceparent": "00-zz"}, {}),
            ({"id": "c", "type": "x"}, {"traceparent": TRACE.upper()}),
        ):
            refused = post(f"{Q}/submit", json=body, headers=headers)
            assert (refused.status_code, refused.json()["code"]) == (422, "invalid")
        polled = {t["id"]: t for t in post(f"{Q}/poll", json={"max": 10}).json()["tasks"]}
        assert polled["a"]["traceparent"] == TRACE and polled["b"]["traceparent"].startswith("00-5bf9")
        assert polled["a"]["attempts"] == 1 and polled["a"]["cancel_requested"] is False

        cancelled = post(f"{Q}/cancel", json={"id": "a"})
        assert cancelled.status_code == 200 and cancelled.json()["cancel_requested"] is True
        beat = post(f"{Q}/heartbeat", json={"id": "a", "lease": polled["a"]["lease"]})
        assert (beat.status_code, beat.json()["code"]) == (409, "cancel_requested")
        finish = post(f"{Q}/finish", json={"id": "a", "lease": polled["a"]["lease"]})
        assert (finish.status_code, finish.json()["code"]) == (409, "cancel_requested")
        assert client.get(f"{Q}/tasks/a").json()["status"] == "cancelled"
        again = post(f"{Q}/cancel", json={"id": "a"})
        assert (again.status_code, again.json()["code"]) == (409, "already_finished")
        assert post(f"{Q}/cancel", json={"id": "zz"}).status_code == 404

        retried = post(
            f"{Q}/retry", json={"id": "b", "lease": polled["b"]["lease"], "error": "OSError: disk"}
        )
        assert retried.status_code == 204
        dead = client.get(f"{Q}/tasks/b").json()
        assert (dead["status"], dead["attempts"], dead["last_error"]) == ("dead", 1, "OSError: disk")
        assert [t["id"] for t in client.get(f"{Q}/tasks", params={"status": "dead"}).json()["tasks"]] == ["b"]
        assert client.get(Q).json()["dead"] == 1
        requeued = post(f"{Q}/requeue", json={"id": "b"})
        assert requeued.status_code == 200 and (requeued.json()["status"], requeued.json()["attempts"]) == (
            "waiting",
            0,
        )
        not_dead = post(f"{Q}/requeue", json={"id": "b"})
        assert (not_dead.status_code, not_dead.json()["code"]) == (409, "not_dead")


# -- the SDK and a worker thread -------------------------------------------------------------

interrupted: list[str] = []
started = threading.Event()


class Long(Base):
    """Works in small steps until cancelled; says what it saw."""

    def run(self) -> None:
        started.set()
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                time.sleep(0.02)
        except CancelRequestedError:
            interrupted.append(f"{self.task.key} {self.task.cancel_requested}")
            raise


class Failing(Base):
    def run(self) -> None:
        raise OSError("disk full")


class App(Dispatch):
    pass


App.route("long", Long)
App.route("failing", Failing)


@pytest.fixture
def queue(db_url: str, table_name: str, store: QueueStore) -> Iterator[perfectqueue.Queue]:
    config = {"type": "rdb_compat", "url": db_url, "table": table_name, "retry_wait": 50, "max_attempts": 3}
    config["retry_backoff"] = "constant"
    with perfectqueue.open(config) as opened:
        yield opened


def test_a_worker_thread_interrupts_a_cancelled_handler(queue: perfectqueue.Queue) -> None:
    interrupted.clear()
    started.clear()
    queue.submit("long-1", "long", traceparent=TRACE)
    acquired = queue.poll(alive_time=30)
    assert acquired is not None and (acquired.attempts, acquired.traceparent) == (1, TRACE)
    monitor = TaskMonitor(Signals(), 0.2, 5, lambda: None, lambda: None)
    monitor.start()
    result: list[Any] = []
    runner = threading.Thread(
        target=lambda: result.append(Runner(App, monitor, WorkerConfig()).run(acquired))
    )
    try:
        runner.start()
        assert started.wait(10)
        asked = queue["long-1"].cancel()
        assert asked.status == "running" and asked.cancel_requested
        runner.join(timeout=20)
    finally:
        monitor.stop()
    assert not runner.is_alive()
    assert interrupted == ["long-1 True"]
    assert result[0].outcome == "cancelled"
    assert queue["long-1"].metadata().status == "cancelled"


def test_a_failing_handler_is_retried_with_its_error_after_the_queues_backoff(
    queue: perfectqueue.Queue,
) -> None:
    queue.submit("fail-1", "failing")
    acquired = queue.poll()
    assert acquired is not None
    monitor = TaskMonitor(Signals(), 5, 5, lambda: None, lambda: None)
    task = Runner(App, monitor, WorkerConfig()).run(acquired)
    assert task.outcome == "retried"
    meta = queue["fail-1"].metadata()
    assert (meta.status, meta.attempts) == ("running", 1)
    assert meta.last_error is not None and meta.last_error.startswith("OSError: disk full\nTraceback")
    assert 'raise OSError("disk full")' in meta.last_error  # the frame that raised it
    assert 45 <= next_time(meta) - int(time.time()) <= 51  # the queue's retry_wait, not the worker's


def test_the_async_sdk_cancels_over_http(store: QueueStore, db_url: str, table_name: str) -> None:
    app = create_app(settings_from({"url": db_url, "queues": {"q": {"table": table_name}}}))

    async def scenario() -> None:
        config = {"url": "http://in-process", "queue": "q", "transport": httpx.ASGITransport(app=app)}
        async with perfectqueue.open_async(config) as queue:
            await queue.submit("s", "x", traceparent=TRACE, max_attempts=4)
            task = await queue.poll()
            assert task is not None and (task.attempts, task.traceparent) == (1, TRACE)
            asked = await queue["s"].cancel()
            assert asked.cancel_requested and asked.max_attempts == 4
            with pytest.raises(CancelRequestedError):
                await task.heartbeat()
            with pytest.raises(CancelRequestedError):
                await task.retry(error="stopped")
            meta = await queue["s"].metadata()
            assert meta.is_cancelled() and meta.last_error == "stopped"
            with pytest.raises(AlreadyFinishedError):
                await queue["s"].requeue()
            await queue.submit("w", "x")
            with pytest.raises(NotDeadError):
                await queue["w"].requeue()
            assert (await queue.stats()).dead == 0

    try:
        asyncio.run(scenario())
    finally:
        for db in app.state.runtime.databases.values():
            db.dispose()
