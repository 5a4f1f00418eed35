"""The batch heartbeat, on SQLite and MariaDB: the store's per-item answers, the HTTP endpoint
through the SDK, and the worker's task monitor beating a running and prefetched tasks at once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import db_now, expire_lease
from sdk_support import wait_for

import perfectqueue
from perfectqueue.client._http import error_of
from perfectqueue.errors import CancelRequestedError, InvalidError, PerfectQueueError, PreemptedError
from perfectqueue.service.app import create_app
from perfectqueue.service.config import settings_from
from perfectqueue.service.store import NewTask, QueueStore, TaskStatus
from perfectqueue.worker import Signals
from perfectqueue.worker.task import WorkerTask
from perfectqueue.worker.task_monitor import TaskMonitor

# -- the store -------------------------------------------------------------------------------


def test_one_batch_answers_each_task_as_its_own_heartbeat_would(store: QueueStore) -> None:
    store.submit_many([NewTask(i, "x") for i in ("a", "c", "p", "f", "x")])
    first = {a.task.id: a.lease for a in store.acquire(10, 60)}
    lease = first["a"]
    store.cancel("c")  # running: cancel requested
    store.finish("f", lease)
    expire_lease(store, "x")
    store.cancel("x")  # nobody holds it any more: cancelled at once
    expire_lease(store, "p")
    store.submit(NewTask("n", "x"))
    second = {a.task.id: a.lease for a in store.acquire(10, 5)}
    assert set(second) == {"p", "n"}  # p taken over by a newer lease
    items = [
        ("a", lease),
        ("c", lease),
        ("p", lease),
        ("n", second["n"]),
        ("f", lease),
        ("x", lease),
        ("zz", lease),
        ("a", lease),
    ]

    results = store.heartbeat_many(items, 600)

    expected = [None, CancelRequestedError, PreemptedError, None, PreemptedError]
    expected += [CancelRequestedError, PreemptedError, None]
    assert [None if r is None else type(r) for r in results] == expected
    now = db_now(store)
    for task_id in ("a", "c", "n"):
        assert store.get(task_id).timeout >= now + 590, task_id
    assert store.get("c").cancel_requested and store.get("c").status is TaskStatus.RUNNING
    assert store.get("p").timeout <= now + 5  # the stale lease extended nothing
    statuses = {i: store.get(i).status for i in ("f", "x")}
    assert statuses == {"f": TaskStatus.FINISHED, "x": TaskStatus.CANCELLED}
    for (task_id, held), result in zip(items, results, strict=True):  # the same as one at a time
        assert _heartbeat_error(store, task_id, held) == (None if result is None else type(result))
    assert store.heartbeat_many([], 600) == []
    with pytest.raises(InvalidError):
        store.heartbeat_many(items, 0)


def _heartbeat_error(store: QueueStore, task_id: str, lease: int) -> type[PerfectQueueError] | None:
    try:
        store.heartbeat(task_id, lease, 600)
    except PerfectQueueError as exc:
        return type(exc)
    return None


# -- HTTP, through the SDK -------------------------------------------------------------------


def test_the_sdk_heartbeats_a_batch_over_http(store: QueueStore, db_url: str, table_name: str) -> None:
    app = create_app(settings_from({"url": db_url, "queues": {"q": {"table": table_name}}}))
    transport = httpx.ASGITransport(app=app)

    async def scenario() -> None:
        config = {"url": "http://in-process", "queue": "q", "transport": transport}
        async with perfectqueue.open_async(config) as queue:
            await queue.submit_many([{"key": k, "type": "x"} for k in ("held", "asked", "done")])
            tasks = {t.key: t for t in await queue.poll_multi(max=3, alive_time=60)}
            await queue["asked"].cancel()
            await tasks["done"].finish()
            result = await queue.heartbeat_many(tasks.values(), alive_time=600)
            assert result.successful == ["held"]
            failed = {f.key: type(f.error) for f in result.failed}
            assert failed == {"asked": CancelRequestedError, "done": PreemptedError}
            assert store.get("held").timeout >= db_now(store) + 590
            assert store.get("asked").timeout >= db_now(store) + 590  # extended all the same
            async with httpx.AsyncClient(transport=transport, base_url="http://in-process") as raw:
                body = {"tasks": [{"id": "asked", "lease": tasks["asked"].lease}]}
                answer = (await raw.post("/v1/queues/q/heartbeat-batch", json=body)).json()
                assert answer["successful"] == [] and answer["failed"][0]["code"] == "cancel_requested"
                body = {"tasks": [{"id": "held", "lease": tasks["held"].lease}] * 1001}
                too_many = await raw.post("/v1/queues/q/heartbeat-batch", json=body)
                assert (too_many.status_code, too_many.json()["code"]) == (422, "invalid")

    try:
        asyncio.run(scenario())
    finally:
        for db in app.state.runtime.databases.values():
            db.dispose()


# -- the worker's task monitor ---------------------------------------------------------------


@pytest.fixture
def queue(db_url: str, table_name: str, store: QueueStore) -> Iterator[perfectqueue.Queue]:
    with perfectqueue.open({"type": "rdb_compat", "url": db_url, "table": table_name}) as opened:
        yield opened


@pytest.mark.parametrize("refused", [False, True], ids=["batch", "refused"])
def test_the_task_monitor_beats_prefetched_tasks_in_one_batch(
    queue: perfectqueue.Queue, store: QueueStore, refused: bool
) -> None:
    """Refused: the batch answered as by a service of an earlier version (no such endpoint);
    the monitor then beats each task alone, with the same effects."""
    ops: list[str] = []
    execute = queue.backend.execute

    def recording(call: Any) -> Any:
        ops.append(call.op)
        if refused and call.op == "heartbeat_many":
            raise error_of("unknown_endpoint", "no such endpoint", 404)
        return execute(call)

    queue.backend.execute = recording  # type: ignore[method-assign]
    queue.submit_many([{"key": k, "type": "x"} for k in ("running", "cancelled", "preempted")])
    acquired = queue.poll_multi(max=3, alive_time=60)
    tasks = {a.key: WorkerTask(a, None, 600) for a in acquired}
    queue["cancelled"].cancel()
    expire_lease(store, "preempted")
    assert [a.task.id for a in store.acquire(1, 60)] == ["preempted"]  # another worker's now
    monitor = TaskMonitor(Signals(), 0.2, 5, lambda: None, lambda: None)
    monitor.started(tasks["running"])
    monitor.hold(list(tasks.values()))
    monitor.start()
    try:
        wait_for(lambda: tasks["cancelled"].outcome and tasks["preempted"].outcome, timeout=10)
    finally:
        monitor.stop()
    assert (tasks["cancelled"].outcome, tasks["preempted"].outcome) == ("cancelled", "preempted")
    assert tasks["running"].in_hand and not tasks["running"].cancelled.is_set()
    assert store.get("running").timeout >= db_now(store) + 590
    assert store.get("cancelled").status is TaskStatus.CANCELLED
    beats = [op for op in ops if op.startswith("heartbeat")]
    if refused:
        assert beats.count("heartbeat_many") == 1 and "heartbeat" in beats
    else:  # the three in one batch; "running" alone later (on a slow machine) is beaten alone
        assert beats[0] == "heartbeat_many", beats
