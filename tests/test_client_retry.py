"""The HTTP SDK when the service fails and recovers — for real: a service that starts late, and a
TCP proxy in front of a real service that drops requests or their responses on purpose."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import drop_table, require_server
from sdk_support import (
    DROP,
    DROP_RESPONSE,
    FORWARD,
    GATEWAY_TIMEOUT,
    Pipe,
    Proxy,
    Target,
    open_target,
    wait_for,
    write_queues_config,
)
from servers import free_port, running_service, service_process, write_config

import perfectqueue
from perfectqueue.errors import (
    AlreadyExistsError,
    AlreadyFinishedError,
    UnavailableError,
)
from perfectqueue.service.store import Database, NewTask, QueueStore

PATIENT = {"retries": 40}  # long enough for a service to start (the backoff is capped at 5 s)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """One real service (SQLite): what is tested here is the SDK's side of the wire."""
    with open_target("http-sqlite", tmp_path_factory.mktemp("service")) as found:
        yield found


@pytest.fixture
def config(target: Target) -> Iterator[dict[str, Any]]:
    found = target.fresh()
    yield {"url": found["url"], "queue": found["queue"], "table": found["table"]}
    target.recycle(found)


@pytest.fixture
def proxy(config: dict[str, Any]) -> Iterator[Proxy]:
    with Proxy(config["url"]) as running:
        yield running


@pytest.fixture
def via_proxy(proxy: Proxy, config: dict[str, Any]) -> Iterator[perfectqueue.Queue]:
    with perfectqueue.open({"url": proxy.url, "queue": config["queue"], "retries": 5}) as queue:
        yield queue


def stored(target: Target, config: dict[str, Any]) -> list[Any]:
    """Every row of the queue's table, read from the database itself."""
    return list(target.store(config).list(limit=1000).tasks)


# -- a service that is not up yet --------------------------------------------------------------


def _seeded_database(tmp_path: Path) -> tuple[str, Path]:
    url = f"sqlite:///{tmp_path / 'late.sqlite3'}"
    db = Database(url)
    store = QueueStore(db, "t_late")
    store.init()
    store.submit(NewTask("seeded", "t", {"n": 1}))
    db.dispose()
    return url, write_queues_config(tmp_path / "late.yml", url, {"q": "t_late"})


def _submit(config: dict[str, Any]) -> str:
    with perfectqueue.open(config) as queue:
        queue.submit("sync-submit", "t", {"n": 2})
    return "sync-submit"


def _poll(config: dict[str, Any]) -> str | None:
    with perfectqueue.open(config) as queue:
        task = queue.poll()
        return task and task.key


def _async_submit(config: dict[str, Any]) -> str:
    async def main() -> str:
        async with perfectqueue.open_async(config) as queue:
            await queue.submit("async-submit", "t", {"n": 3})
        return "async-submit"

    return asyncio.run(main())


def test_calls_made_before_the_service_is_up_succeed_once_it_is(tmp_path: Path) -> None:
    url, service_config = _seeded_database(tmp_path)
    port = free_port()
    client = {"url": f"http://127.0.0.1:{port}", "queue": "q", **PATIENT}
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(call, client) for call in (_submit, _poll, _async_submit)]
        assert not any(f.done() for f in futures)
        with service_process(service_config, port=port):
            assert [f.result(timeout=60) for f in futures] == ["sync-submit", "seeded", "async-submit"]
    db = Database(url)
    tasks = {t.id: t for t in QueueStore(db, "t_late").list().tasks}
    db.dispose()
    assert {key: t.status.value for key, t in tasks.items()} == {
        "async-submit": "waiting",
        "seeded": "running",
        "sync-submit": "waiting",
    }
    assert (tasks["sync-submit"].data, tasks["async-submit"].data) == ({"n": 2}, {"n": 3})


def test_without_retries_an_unreachable_service_is_unavailable_at_once() -> None:
    config = {"url": f"http://127.0.0.1:{free_port()}", "queue": "q", "retries": 0}
    started = time.monotonic()
    with perfectqueue.open(config) as queue, pytest.raises(UnavailableError):
        queue.submit("k", "t")

    async def main() -> None:
        async with perfectqueue.open_async(config) as queue:
            await queue.poll()

    with pytest.raises(UnavailableError):
        asyncio.run(main())
    assert time.monotonic() - started < 2


def test_retries_end_with_unavailable_when_the_service_never_comes() -> None:
    config = {"url": f"http://127.0.0.1:{free_port()}", "queue": "q", "retries": 3}
    with perfectqueue.open(config) as queue, pytest.raises(UnavailableError):
        queue.stats()


@pytest.mark.parametrize("backend", ["mysql", "postgres"])
def test_a_503_of_the_service_is_retried_after_its_retry_after(backend: str, tmp_path: Path) -> None:
    """The database goes away for real (the service's connections to the server run through a
    pipe that is cut): the service answers 503 with Retry-After: 1, and the SDK tries again no
    sooner."""
    url = require_server(backend)
    parts = urlsplit(url)
    table = "t_" + uuid.uuid4().hex[:16]
    with Pipe((parts.hostname or "127.0.0.1", parts.port or (3306 if backend == "mysql" else 5432))) as pipe:
        piped = parts._replace(netloc=f"{parts.username}@127.0.0.1:{pipe.port}").geturl()
        # no cleanup pass: the submit below is the only thing that may meet the cut
        service_config = write_config(tmp_path / "service.yml", piped, table, cleanup_interval=3600)
        log = tmp_path / "service.log"
        try:
            with (
                running_service(service_config, log) as base,
                perfectqueue.open({"url": base, "queue": "q", "retries": 20}) as queue,
                ThreadPoolExecutor(1) as pool,
            ):
                queue.submit("before", "t")
                pipe.cut()
                future = pool.submit(queue.submit, "during", "t")
                # the submit's own 503, logged (not a refusal of another connection: on PostgreSQL the
                # replica's listening connection reconnects through the same pipe)
                wait_for(lambda: "unavailable: database error" in log.read_text(errors="replace"))
                refused_at = time.monotonic()
                pipe.restore()
                future.result(timeout=60)
                assert time.monotonic() - refused_at >= 0.8  # the 503 said Retry-After: 1
                assert [t.key for t in queue] == ["before", "during"]
        finally:
            db = Database(url)
            drop_table(db, table)
            db.dispose()


# -- through a proxy that drops requests or responses ------------------------------------------


@pytest.mark.parametrize(
    "operation", ["submit", "poll", "heartbeat", "update_data", "finish", "force_finish"]
)
def test_repeatable_calls_succeed_after_dropped_tries(
    operation: str, via_proxy: perfectqueue.Queue, proxy: Proxy, target: Target, config: dict[str, Any]
) -> None:
    if operation != "submit":
        via_proxy.submit("k", "t", {"a": 1})
    task = via_proxy.poll() if operation in ("heartbeat", "update_data", "finish") else None
    proxy.plan += [DROP, DROP]
    if operation == "submit":
        via_proxy.submit("k", "t", {"a": 1})
    elif operation == "poll":
        task = via_proxy.poll()
        assert task is not None and task.key == "k"
    elif operation == "force_finish":
        via_proxy["k"].force_finish()
    elif operation == "update_data":
        assert task is not None
        task.update_data({"b": 2})
    else:
        assert task is not None
        getattr(task, operation)()
    path = "/" + operation.replace("_", "-") if operation != "update_data" else "/heartbeat"
    assert [seen.action for seen in proxy.requests_to(path)][-3:] == [DROP, DROP, FORWARD]
    [row] = stored(target, config)
    expected_status = {"submit": "waiting", "finish": "finished", "force_finish": "finished"}
    assert row.status.value == expected_status.get(operation, "running")
    assert row.data == ({"a": 1, "b": 2} if operation == "update_data" else {"a": 1})


@pytest.mark.parametrize("action", [DROP_RESPONSE, GATEWAY_TIMEOUT])
def test_a_submit_whose_answer_was_lost_is_stored_once(
    action: str, via_proxy: perfectqueue.Queue, proxy: Proxy, target: Target, config: dict[str, Any]
) -> None:
    proxy.plan.append(action)
    with contextlib.suppress(AlreadyExistsError):  # the idempotent answer to the retry
        via_proxy.submit("once", "t", {"v": 1})
    assert [seen.action for seen in proxy.requests_to("/submit")] == [action, FORWARD]
    [row] = stored(target, config)
    assert (row.id, row.type, row.data, row.status.value) == ("once", "t", {"v": 1}, "waiting")


def test_a_finish_whose_answer_was_lost_finishes_the_task(
    via_proxy: perfectqueue.Queue, proxy: Proxy, target: Target, config: dict[str, Any]
) -> None:
    via_proxy.submit("k", "t")
    task = via_proxy.poll()
    assert task is not None
    proxy.plan.append(DROP_RESPONSE)
    with contextlib.suppress(AlreadyFinishedError):  # the idempotent answer to the retry
        task.finish()
    assert [seen.action for seen in proxy.requests_to("/finish")] == [DROP_RESPONSE, FORWARD]
    assert [row.status.value for row in stored(target, config)] == ["finished"]


def test_a_heartbeat_whose_answer_was_lost_is_repeated(
    via_proxy: perfectqueue.Queue, proxy: Proxy, target: Target, config: dict[str, Any]
) -> None:
    via_proxy.submit("k", "t")
    task = via_proxy.poll(alive_time=30)
    assert task is not None
    proxy.plan.append(DROP_RESPONSE)
    task.heartbeat(alive_time=900)
    assert [seen.action for seen in proxy.requests_to("/heartbeat")] == [DROP_RESPONSE, FORWARD]
    [row] = stored(target, config)
    assert row.timeout >= int(time.time()) + 800


@pytest.mark.parametrize("operation", ["release", "retry"])
@pytest.mark.parametrize("action", [DROP_RESPONSE, GATEWAY_TIMEOUT, DROP])
def test_release_and_retry_are_not_repeated_when_the_outcome_is_unknown(
    operation: str,
    action: str,
    via_proxy: perfectqueue.Queue,
    proxy: Proxy,
    target: Target,
    config: dict[str, Any],
) -> None:
    via_proxy.submit("k", "t")
    task = via_proxy.poll(alive_time=600)
    assert task is not None
    proxy.plan.append(action)
    give_back = task.release if operation == "release" else lambda: task.retry(retry_wait=0)
    with pytest.raises(UnavailableError):
        give_back()
    assert [seen.action for seen in proxy.requests_to(f"/{operation}")] == [action]
    with perfectqueue.open(config) as direct:
        again = direct.poll()
        if action != DROP:  # the service did it, once
            assert again is not None and again.key == "k" and again.lease != task.lease
        else:  # it never reached the service: the lease still holds, and can be given back now
            assert again is None
            give_back()
            assert direct.poll() is not None


def test_a_release_that_never_left_is_sent_once_the_service_answers(config: dict[str, Any]) -> None:
    first = Proxy(config["url"])
    port = int(first.url.rsplit(":", 1)[1])
    with perfectqueue.open({"url": first.url, "queue": config["queue"], **PATIENT}) as queue:
        with first:
            queue.submit("k", "t")
            task = queue.poll(alive_time=600)
        assert task is not None
        # nothing listens on the port now: every try is refused, so it is safe to repeat
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(task.release)
            with Proxy(config["url"], port=port) as second:
                future.result(timeout=60)
                assert [seen.action for seen in second.requests_to("/release")] == [FORWARD]
    with perfectqueue.open(config) as direct:
        assert direct.poll() is not None  # released


# -- what every request carries ----------------------------------------------------------------


def test_requests_carry_the_user_agent_and_the_token(proxy: Proxy, config: dict[str, Any]) -> None:
    with perfectqueue.open({"url": proxy.url, "queue": config["queue"], "token": "s3cret"}) as queue:
        queue.submit("k", "t")
        queue.stats()

    async def main() -> None:
        async with perfectqueue.open_async({"url": proxy.url, "queue": config["queue"]}) as queue:
            await queue.poll()

    asyncio.run(main())
    assert len(proxy.seen) == 3
    for seen in proxy.seen:
        assert (seen.header("user-agent") or "").startswith(f"perfectqueue-python/{perfectqueue.__version__}")
    assert [seen.header("authorization") for seen in proxy.seen] == ["Bearer s3cret", "Bearer s3cret", None]


# -- timeouts ----------------------------------------------------------------------------------


def test_a_long_poll_outlasts_the_request_timeout(config: dict[str, Any]) -> None:
    settings = {"url": config["url"], "queue": config["queue"], "timeout": 1, "retries": 0}

    def sync_poll() -> list[Any]:
        with perfectqueue.open(settings) as queue:
            return list(queue.poll_multi(wait=2))

    async def async_poll() -> list[Any]:
        async with perfectqueue.open_async(settings) as queue:
            return list(await queue.poll_multi(wait=2))

    started = time.monotonic()
    with ThreadPoolExecutor(1) as pool:
        from_thread = pool.submit(sync_poll)
        assert asyncio.run(async_poll()) == []
        assert from_thread.result(timeout=30) == []
    assert time.monotonic() - started >= 1.8


def test_a_long_poll_through_a_slow_path_gets_the_task(
    via_proxy: perfectqueue.Queue, config: dict[str, Any]
) -> None:
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(via_proxy.poll_multi, max=1, wait=10)
        with perfectqueue.open(config) as direct:
            direct.submit("k", "t")
        tasks = future.result(timeout=30)
    assert [t.key for t in tasks] == ["k"]
