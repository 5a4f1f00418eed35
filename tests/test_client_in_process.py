"""The async SDK against the service app in process (httpx.ASGITransport), on both backends."""

from __future__ import annotations

import asyncio

import httpx
import pytest

import perfectqueue
from perfectqueue.errors import AlreadyExistsError, NotFoundError, PreemptedError, UnknownQueueError
from perfectqueue.service.app import create_app
from perfectqueue.service.config import settings_from
from perfectqueue.service.store import Database, QueueStore


def test_the_async_sdk_over_the_app_in_process(database: Database, db_url: str, table_name: str) -> None:
    QueueStore(database, table_name).init()  # no lifespan runs in process: create the table
    app = create_app(settings_from({"url": db_url, "queues": {"q": {"table": table_name}}}))

    async def scenario() -> None:
        config = {"url": "http://in-process", "queue": "q", "transport": httpx.ASGITransport(app=app)}
        async with perfectqueue.open_async(config) as queue:
            await queue.submit("k1", "mail", {"to": "ann"}, user="acme")
            with pytest.raises(AlreadyExistsError):
                await queue.submit("k1", "mail")
            task = await queue.poll(alive_time=60)
            assert task is not None and (task.key, task.type, task.user, task.data) == (
                "k1",
                "mail",
                "acme",
                {"to": "ann"},
            )
            await task.update_data({"step": 2})
            await task.finish()
            assert (await queue["k1"].metadata()).status == "finished"
            with pytest.raises(PreemptedError):
                await task.heartbeat()
            with pytest.raises(NotFoundError):
                await queue["nope"].metadata()
            assert [m.key async for m in queue] == ["k1"]
        async with perfectqueue.open_async({**config, "queue": "other"}) as unknown:
            with pytest.raises(UnknownQueueError):
                await unknown.stats()

    try:
        asyncio.run(scenario())
    finally:
        for db in app.state.runtime.databases.values():
            db.dispose()


def test_stats_say_which_counts_stopped_at_the_limit(
    database: Database, db_url: str, table_name: str
) -> None:
    QueueStore(database, table_name).init()
    values = {"url": db_url, "queues": {"q": {"table": table_name}}, "metrics_count_limit": 2}
    app = create_app(settings_from(values))

    async def scenario() -> None:
        config = {"url": "http://in-process", "queue": "q", "transport": httpx.ASGITransport(app=app)}
        async with perfectqueue.open_async(config) as queue:
            for key in ("a", "b", "c"):
                await queue.submit(key, "t")
            task = await queue.poll(alive_time=60)
            assert task is not None
            await task.finish()
            stats = await queue.stats()
            assert (stats.waiting, stats.finished, stats.capped) == (2, 1, ("waiting",))
            assert (stats.shown("waiting"), stats.shown("finished")) == ("2+", "1")

    try:
        asyncio.run(scenario())
    finally:
        for db in app.state.runtime.databases.values():
            db.dispose()
