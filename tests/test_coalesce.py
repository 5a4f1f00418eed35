"""Merged calls (service/batching.py, through the queue runtime): concurrent finishes, submits and
immediate polls of one queue share one store call, and each caller still gets exactly its own
outcome.

On each backend, against real tables: the store below only records how it was called.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import anyio.to_thread
import httpx
import pytest
from conftest import drop_table, expire_lease, in_thread, queue_runtime

from perfectqueue.errors import (
    AlreadyExistsError,
    AlreadyFinishedError,
    InvalidError,
    NotFoundError,
    PerfectQueueError,
    PreemptedError,
    UnavailableError,
)
from perfectqueue.service.app import create_app
from perfectqueue.service.batching import Batcher
from perfectqueue.service.config import settings_from
from perfectqueue.service.store import AcquiredTask, Database, NewTask, QueueStore


class Recording(QueueStore):
    """The real store, recording the size of each batch call it gets."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, int]] = []

    def finish_many(self, items: Sequence[tuple[str, int]]) -> list[PerfectQueueError | None]:
        self.calls.append(("finish_many", len(items)))
        return super().finish_many(items)

    def submit_many(self, tasks: Sequence[NewTask]) -> list[PerfectQueueError | None]:
        self.calls.append(("submit_many", len(tasks)))
        return super().submit_many(tasks)

    def acquire(self, max_tasks: int, alive_time: int, max_bytes: int | None = None) -> list[AcquiredTask]:
        self.calls.append(("acquire", max_tasks))
        return super().acquire(max_tasks, alive_time, max_bytes)


def gather(*calls: Any) -> list[Any]:
    """Run the calls concurrently; each one's result or exception."""

    async def main() -> list[Any]:
        return await asyncio.gather(*(call() for call in calls), return_exceptions=True)

    return asyncio.run(main())


@pytest.fixture
def store(db_url: str, table_name: str) -> Iterator[Recording]:
    db = Database(db_url)
    queue = Recording(db, table_name, fair=False)
    queue.init()
    yield queue
    drop_table(db, table_name)
    db.dispose()


def submitted(store: QueueStore, *ids: str, user: str | None = None, max_running: int | None = None) -> None:
    for task_id in ids:
        store.submit(NewTask(id=task_id, type="t", user=user, max_running=max_running))


def test_concurrent_finishes_share_one_transaction_each_with_its_own_outcome(store: Recording) -> None:
    submitted(store, "a", "b", "c", "d", "e")
    held = {t.task.id: t.lease for t in store.acquire(5, 300)}
    store.finish("d", held["d"])
    expire_lease(store, "e")  # another worker takes "e" over: the first lease is fenced off
    (taken,) = store.acquire(1, 300)
    assert taken.task.id == "e"
    coalesced = queue_runtime(store)
    store.calls.clear()

    outcomes = gather(
        lambda: coalesced.finish("a", held["a"]),
        lambda: coalesced.finish("b", held["b"]),
        lambda: coalesced.finish("a", held["a"]),  # the same call twice: the second meets the first
        lambda: coalesced.finish("c", held["c"] + 1),
        lambda: coalesced.finish("d", held["d"]),
        lambda: coalesced.finish("e", held["e"]),
        lambda: coalesced.finish("nope", 1),
    )

    assert store.calls == [("finish_many", 7)]
    assert outcomes[:2] == [None, None]
    kinds = [type(o) for o in outcomes[2:]]
    assert kinds == [
        AlreadyFinishedError,
        PreemptedError,
        AlreadyFinishedError,
        PreemptedError,
        NotFoundError,
    ]
    statuses = [store.get(i).status.value for i in "abcde"]
    assert statuses == ["finished", "finished", "running", "finished", "running"]
    store.finish("c", held["c"])  # the refused ones changed nothing: their holders still finish them
    store.finish("e", taken.lease)


def test_a_lone_finish_is_a_single_statement_and_starts_at_once(store: Recording) -> None:
    submitted(store, "a")
    (a,) = store.acquire(1, 300)
    store.calls.clear()
    assert gather(lambda: queue_runtime(store).finish("a", a.lease)) == [None]
    assert store.calls == []  # store.finish, not finish_many
    assert store.get("a").status.value == "finished"


def test_concurrent_submits_share_one_insert_and_duplicates_are_refused(store: Recording) -> None:
    submitted(store, "old")
    coalesced = queue_runtime(store)
    store.calls.clear()

    outcomes = gather(
        lambda: coalesced.submit(NewTask(id="n1", type="t", data={"from": "first"})),
        lambda: coalesced.submit(NewTask(id="old", type="t")),
        lambda: coalesced.submit(NewTask(id="n1", type="t", data={"from": "second"})),
        lambda: coalesced.submit(NewTask(id="n2", type="t")),
    )

    assert store.calls == [("submit_many", 4)]  # the store answers the same id twice
    assert outcomes[0] is None and outcomes[3] is None
    assert isinstance(outcomes[1], AlreadyExistsError) and isinstance(outcomes[2], AlreadyExistsError)
    assert "already exists" in str(outcomes[2])
    assert store.get("n1").data == {"from": "first"}
    assert {t.id for t in store.list().tasks} == {"old", "n1", "n2"}


def test_concurrent_polls_share_one_acquisition_split_in_arrival_order(store: Recording) -> None:
    submitted(store, *(f"t{i}" for i in range(8)))
    polls = queue_runtime(store).polls
    store.calls.clear()

    shares = gather(*[functools.partial(polls.now, want, 300) for want in (2, 3, 4)])

    assert store.calls == [("acquire", 9)]
    assert [len(s) for s in shares] == [2, 3, 3]  # 8 waiting: the last caller gets what is left
    assert len({t.task.id for share in shares for t in share}) == 8  # no task twice
    for share in shares:  # each caller holds its own tasks: its lease finishes them
        assert store.finish_many([(t.task.id, t.lease) for t in share]) == [None] * len(share)
    assert polls.immediate == {}

    submitted(store, "x", "y")
    store.calls.clear()
    shares = gather(lambda: polls.now(1, 300), lambda: polls.now(1, 60))
    assert store.calls == [("acquire", 1), ("acquire", 1)]  # another alive_time: its own acquisition
    assert [s[0].task.timeout - s[0].task.created_at >= 300 for s in shares] == [True, False]


def test_a_merged_acquisition_never_exceeds_max_running(db_url: str, table_name: str) -> None:
    db = Database(db_url)
    try:
        store = QueueStore(db, table_name)  # fair: the per-user cap applies
        store.init()
        submitted(store, *(f"u{i}" for i in range(6)), user="u", max_running=2)
        polls = queue_runtime(store).polls
        shares = gather(*[lambda: polls.now(1, 300)] * 5)
        assert sorted(len(s) for s in shares) == [0, 0, 0, 1, 1]
        assert store.counts().running == 2
    finally:
        drop_table(db, table_name)
        db.dispose()


def test_a_database_out_of_reach_fails_every_caller_and_changes_nothing(store: Recording) -> None:
    submitted(store, "a", "b")
    held = [(t.task.id, t.lease) for t in store.acquire(2, 300)]
    broken = Recording(Database(store.db.url), store.table.name + "_gone", fair=False)
    coalesced = queue_runtime(broken)
    try:
        outcomes = gather(*[functools.partial(coalesced.finish, i, lease) for i, lease in held * 2])
    finally:
        broken.db.dispose()
    assert all(isinstance(o, UnavailableError) for o in outcomes)
    assert len({id(o) for o in outcomes}) == 4  # each caller its own error
    assert store.counts().running == 2


def test_a_merged_call_failing_as_a_whole_is_retried_one_item_at_a_time() -> None:
    calls: list[list[int]] = []

    async def flush(items: list[int]) -> list[int | PerfectQueueError]:
        calls.append(items)
        if 0 in items:
            raise InvalidError("zero is refused")
        return [10 * i for i in items]

    batcher: Batcher[int, int] = Batcher(flush)
    outcomes = gather(*[functools.partial(batcher.call, i) for i in (1, 0, 2)])
    assert outcomes[0] == 10 and outcomes[2] == 20 and isinstance(outcomes[1], InvalidError)
    assert calls == [[1, 0, 2], [1], [0], [2]]


def test_a_poller_gone_during_its_acquisition_gives_its_tasks_back(store: Recording) -> None:
    submitted(store, "a", "b")
    started, release = threading.Event(), threading.Event()

    async def slow_run(fn: Callable[..., Any], *args: Any) -> Any:
        def gated() -> Any:
            started.set()
            release.wait(10)
            return fn(*args)

        return await anyio.to_thread.run_sync(gated) if fn == store.acquire else await in_thread(fn, *args)

    polls = queue_runtime(store, slow_run).polls

    async def main() -> tuple[list[AcquiredTask], bool]:
        stays = asyncio.create_task(polls.now(1, 300))
        leaves = asyncio.create_task(polls.now(1, 300))
        await asyncio.sleep(0)
        await anyio.to_thread.run_sync(started.wait, 10)
        leaves.cancel()
        release.set()
        kept = await stays
        while polls.immediate[300].flusher is not None:  # the give-back runs after the split
            await asyncio.sleep(0.01)
        return kept, leaves.cancelled()

    kept, cancelled = asyncio.run(main())
    assert cancelled and len(kept) == 1
    assert store.counts().running == 1  # the other task is waiting again, not leased to nobody
    assert [t.task.id for t in store.acquire(5, 300)] != [kept[0].task.id]


def test_through_http_concurrent_finishes_and_submits_answer_each_request(
    db_url: str, table_name: str
) -> None:
    settings = settings_from({"url": db_url, "queues": {"q": {"table": table_name}}, "auto_init": True})
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)

    async def main() -> tuple[list[int], list[int]]:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://pq") as http,
        ):
            q = "/v1/queues/q"
            subs = await asyncio.gather(
                *(http.post(f"{q}/submit", json={"id": f"h{i % 5}", "type": "t"}) for i in range(8))
            )
            tasks = (await http.post(f"{q}/poll", json={"max": 10})).json()["tasks"]
            bodies = [{"id": t["id"], "lease": t["lease"]} for t in tasks]
            bodies += [{"id": tasks[0]["id"], "lease": str(int(tasks[0]["lease"]) + 1)}]
            fins = await asyncio.gather(*(http.post(f"{q}/finish", json=b) for b in bodies))
            return [r.status_code for r in subs], [r.status_code for r in fins]

    try:
        subs, fins = asyncio.run(main())
    finally:
        db = Database(db_url)
        drop_table(db, table_name)
        db.dispose()
    assert sorted(subs) == [201] * 5 + [409] * 3
    assert fins == [204] * 5 + [409]
