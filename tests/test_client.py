"""The synchronous SDK, every method, against the real service (a ``perfectqueue serve`` process)
and the direct ``rdb_compat`` backend, each over SQLite and MariaDB."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sdk_support import Target, clean_environ, config, next_time, target, wait_for

import perfectqueue
from perfectqueue.client import BatchResult, RetrySpec, SubmitSpec
from perfectqueue.errors import (
    AlreadyExistsError,
    AlreadyFinishedError,
    CancelRequestedError,
    ConfigError,
    IdempotentError,
    InvalidError,
    NotDeadError,
    NotFoundError,
    PerfectQueueError,
    PreemptedError,
    UnavailableError,
    UnknownQueueError,
)

__all__ = ["config", "target"]  # the fixtures


@pytest.fixture
def queue(config: dict[str, Any]) -> Iterator[perfectqueue.Queue]:
    with perfectqueue.open(config) as opened:
        yield opened


ON_THE_SERVICE = pytest.mark.parametrize("target", ["http-sqlite", "http-mysql"], indirect=True)
DIRECT = pytest.mark.parametrize("target", ["rdb_compat-sqlite", "rdb_compat-mysql"], indirect=True)


# -- submit ------------------------------------------------------------------------------------


def test_submit_stores_the_task_as_given(queue: perfectqueue.Queue) -> None:
    task = queue.submit("k1", "mail", {"to": "a@example.com", "n": [1, 2]}, user="acme", max_running=3)
    assert isinstance(task, perfectqueue.Task) and task.key == "k1"
    meta = task.metadata()
    assert (meta.key, meta.type, meta.data) == ("k1", "mail", {"to": "a@example.com", "n": [1, 2]})
    assert (meta.status, meta.user, meta.max_running) == ("waiting", "acme", 3)
    assert meta.is_waiting() and not meta.is_finished()
    assert queue["k1"].exists()
    assert not queue["never-submitted"].exists()


def test_submit_twice_is_already_exists_and_keeps_the_first(queue: perfectqueue.Queue) -> None:
    queue.submit("dup", "first", {"v": 1})
    with pytest.raises(AlreadyExistsError) as raised:
        queue.submit("dup", "second", {"v": 2})
    assert isinstance(raised.value, IdempotentError)
    meta = queue["dup"].metadata()
    assert (meta.type, meta.data) == ("first", {"v": 1})
    assert [t.key for t in queue] == ["dup"]


def test_submit_with_run_at_in_the_future_is_not_delivered(queue: perfectqueue.Queue) -> None:
    queue.submit("later", "t", run_at=int(time.time()) + 3600)
    assert queue.poll() is None
    assert next_time(queue["later"].metadata()) >= int(time.time()) + 3500


def test_submit_many_reports_each_task(queue: perfectqueue.Queue) -> None:
    queue.submit("old", "t")
    result = queue.submit_many(
        [
            SubmitSpec("a", "t", {"x": 1}, user="u1"),
            {"key": "b", "type": "t"},
            {"id": "old", "type": "t"},
            {"key": "c", "type": "t", "data": {"y": 2}},
        ]
    )
    assert isinstance(result, BatchResult)
    assert sorted(result.successful) == ["a", "b", "c"]
    assert [f.key for f in result.failed] == ["old"]
    assert isinstance(result.failed[0].error, AlreadyExistsError)
    assert queue["a"].metadata().user == "u1"
    assert queue["c"].metadata().data == {"y": 2}


# -- poll and the acquired task ----------------------------------------------------------------


def test_poll_leases_a_task_with_its_fields(queue: perfectqueue.Queue) -> None:
    assert queue.poll() is None
    assert queue.poll_multi() == []
    queue.submit("k", "resize", {"w": 10}, user="acme")
    task = queue.poll()
    assert isinstance(task, perfectqueue.AcquiredTask)
    assert (task.key, task.type, task.data, task.user) == ("k", "resize", {"w": 10}, "acme")
    assert isinstance(task.lease, str) and task.lease
    assert task.metadata().status == "running"
    assert queue.poll() is None  # leased: nobody else gets it


def test_poll_multi_honours_max_and_alive_time(queue: perfectqueue.Queue) -> None:
    queue.submit_many([{"key": f"k{i}", "type": "t"} for i in range(5)])
    first = queue.poll_multi(max=3, alive_time=60)
    assert len(first) == 3
    meta = first[0].metadata()
    assert meta.created_at is not None
    assert 50 <= next_time(meta) - int(time.time()) <= 70
    rest = queue.poll_multi(max=10)
    assert sorted(t.key for t in first + rest) == [f"k{i}" for i in range(5)]
    assert {t.lease for t in first}.isdisjoint({t.lease for t in rest})  # a lease per acquisition
    assert queue.poll_multi(max=10) == []


def test_poll_multi_wait_returns_when_a_task_arrives(
    queue: perfectqueue.Queue, config: dict[str, Any]
) -> None:
    got: list[list[perfectqueue.AcquiredTask]] = []
    poller = threading.Thread(target=lambda: got.append(queue.poll_multi(max=1, wait=8)))
    started = time.monotonic()
    poller.start()
    time.sleep(0.3)  # let the poll start waiting (it succeeds either way)
    with perfectqueue.open(config) as other:
        other.submit("arrived", "t")
    poller.join(timeout=30)
    assert [t.key for t in got[0]] == ["arrived"]
    assert time.monotonic() - started < 6


def test_poll_multi_wait_on_an_empty_queue_waits_then_returns_nothing(queue: perfectqueue.Queue) -> None:
    started = time.monotonic()
    assert queue.poll_multi(wait=0.6) == []
    assert time.monotonic() - started >= 0.5


def test_finish_then_finish_again_is_already_finished(queue: perfectqueue.Queue) -> None:
    queue.submit("k", "t")
    task = queue.poll()
    assert task is not None
    task.finish()
    assert task.metadata().is_finished()
    with pytest.raises(AlreadyFinishedError) as raised:
        task.finish()
    assert isinstance(raised.value, IdempotentError)
    assert queue.poll() is None
    with pytest.raises(AlreadyExistsError):
        queue.submit("k", "t")  # retained: the key cannot be used again


def test_retry_with_zero_wait_is_delivered_again(queue: perfectqueue.Queue) -> None:
    queue.submit("k", "t", {"a": 1})
    first = queue.poll()
    assert first is not None
    first.retry(retry_wait=0)
    again = queue.poll()
    assert again is not None and again.key == "k" and again.data == {"a": 1}
    assert again.lease != first.lease
    with pytest.raises(PreemptedError):
        first.finish()
    again.finish()


def test_retry_with_the_default_wait_is_not_delivered_at_once(queue: perfectqueue.Queue) -> None:
    queue.submit("k", "t")
    task = queue.poll()
    assert task is not None
    task.retry()
    assert queue.poll() is None
    assert next_time(queue["k"].metadata()) >= int(time.time()) + 200  # the default retry_wait, 300 s


def test_release_is_delivered_again_at_once(queue: perfectqueue.Queue) -> None:
    queue.submit("k", "t")
    first = queue.poll(alive_time=600)
    assert first is not None
    first.release()
    again = queue.poll()
    assert again is not None and again.key == "k" and again.lease != first.lease
    with pytest.raises(PreemptedError):
        first.release()


def test_retry_many_retries_each_task_as_its_own_retry_would(queue: perfectqueue.Queue) -> None:
    for key in ("now", "dead", "later", "gone"):
        queue.submit(key, "t", {"k": key})
    held = {task.key: task for task in queue.poll_multi(max=4, alive_time=600)}
    assert set(held) == {"now", "dead", "later", "gone"}
    held["gone"].release()
    result = queue.retry_many(
        [
            RetrySpec(held["now"], retry_wait=0, error="ValueError: try again"),
            RetrySpec(held["dead"], error="UnknownType: no route", dead=True),
            held["later"],  # as task.retry(): the queue's backoff
            held["gone"],  # released before: its lease is gone
            RetrySpec(held["now"], retry_wait=0),  # a second retry of one lease
        ]
    )
    assert result.successful == ["now", "dead", "later"]
    assert [(f.key, type(f.error)) for f in result.failed] == [
        ("gone", PreemptedError),
        ("now", PreemptedError),
    ]
    now, dead, later = (queue[key].metadata() for key in ("now", "dead", "later"))
    assert (now.status, now.last_error) == ("waiting", "ValueError: try again")
    assert (dead.status, dead.last_error) == ("dead", "UnknownType: no route")
    assert later.is_scheduled() and next_time(later) > int(time.time())
    again = {task.key for task in queue.poll_multi(max=10)}
    assert again == {"now", "gone"}  # "later" waits out its backoff; "dead" has ended


def test_release_many_gives_each_task_back_at_once(queue: perfectqueue.Queue) -> None:
    for key in ("a", "b", "c"):
        queue.submit(key, "t")
    held = {task.key: task for task in queue.poll_multi(max=3, alive_time=600)}
    queue["c"].cancel()  # running: its holder's next call ends it cancelled
    result = queue.release_many([held["a"], held["b"], held["c"], held["a"]])
    assert result.successful == ["a", "b"]
    assert [(f.key, type(f.error)) for f in result.failed] == [
        ("c", CancelRequestedError),
        ("a", PreemptedError),
    ]
    assert queue["c"].metadata().status == "cancelled"
    for key in ("a", "b"):
        meta = queue[key].metadata()
        assert (meta.status, meta.attempts) == ("waiting", 0)  # the attempt given back
    assert {task.key for task in queue.poll_multi(max=10)} == {"a", "b"}


def test_heartbeat_extends_the_lease(queue: perfectqueue.Queue) -> None:
    queue.submit("k", "t")
    task = queue.poll(alive_time=30)
    assert task is not None
    before = next_time(task.metadata())
    task.heartbeat(alive_time=900)
    after = next_time(task.metadata())
    assert after >= before + 800
    task.heartbeat()  # the queue's alive_time, 300 s
    assert 200 <= next_time(task.metadata()) - int(time.time()) <= 400


def test_update_data_merges_and_keeps_the_type(queue: perfectqueue.Queue) -> None:
    queue.submit("k", "convert", {"a": 1, "b": 2})
    task = queue.poll()
    assert task is not None
    task.update_data({"b": 20, "c": 3})
    assert task.data == {"a": 1, "b": 20, "c": 3}
    meta = task.metadata()
    assert (meta.type, meta.data, meta.status) == ("convert", {"a": 1, "b": 20, "c": 3}, "running")
    task.release()
    again = queue.poll()
    assert again is not None and again.type == "convert" and again.data == {"a": 1, "b": 20, "c": 3}


def test_lease_operations_after_a_takeover_are_preempted(queue: perfectqueue.Queue) -> None:
    queue.submit("k", "t", {"v": 1})
    stale = queue.poll(alive_time=1)
    assert stale is not None
    current = wait_for(lambda: queue.poll(alive_time=600), timeout=20)
    assert current.key == "k" and current.lease != stale.lease
    for operation in (
        stale.heartbeat,
        stale.finish,
        lambda: stale.retry(retry_wait=0),
        stale.release,
        lambda: stale.update_data({"v": 2}),
    ):
        with pytest.raises(PreemptedError):
            operation()
    assert queue["k"].metadata().data == {"v": 1}
    current.finish()
    with pytest.raises(AlreadyFinishedError):
        current.finish()


# -- operator actions, reading -----------------------------------------------------------------


def test_force_finish(queue: perfectqueue.Queue) -> None:
    queue.submit("waiting", "t")
    queue.submit("running", "t")
    queue["waiting"].force_finish()
    assert queue["waiting"].metadata().is_finished()
    held = queue.poll()
    assert held is not None and held.key == "running"
    queue["running"].force_finish()
    assert queue["running"].metadata().is_finished()
    with pytest.raises(AlreadyFinishedError):
        held.finish()
    with pytest.raises(AlreadyFinishedError):
        queue["waiting"].force_finish()
    with pytest.raises(NotFoundError):
        queue["missing"].force_finish()
    with pytest.raises(NotFoundError) as raised:
        queue["missing"].metadata()
    assert isinstance(raised.value, IdempotentError)
    assert queue.poll() is None


def make_dead(queue: perfectqueue.Queue, *keys_and_types: tuple[str, str]) -> None:
    """Submit each task with one attempt and fail it: dead."""
    for key, task_type in keys_and_types:
        queue.submit(key, task_type, max_attempts=1)
        task = queue.poll()
        assert task is not None and task.key == key
        task.retry(error="boom")


def test_bulk_requeues_and_cancels_what_the_filters_select(queue: perfectqueue.Queue) -> None:
    make_dead(queue, ("m1", "mail"), ("m2", "mail"), ("r1", "report"))
    queue.submit("w1", "mail")
    requeued = queue.bulk("requeue", status="dead", type="mail")
    assert (sorted(requeued.successful), requeued.failed, requeued.cursor) == (["m1", "m2"], [], None)
    assert [queue[k].metadata().status for k in ("m1", "m2", "r1")] == ["waiting", "waiting", "dead"]
    assert queue["m1"].metadata().attempts == 0
    first = queue.bulk("cancel", status="waiting", prefix="m", limit=1)  # one request at most 1
    assert first.successful == ["m1"] and first.cursor is not None
    rest = queue.bulk("cancel", status="waiting", prefix="m", cursor=first.cursor)
    assert (rest.successful, rest.cursor) == (["m2"], None)
    assert [queue[k].metadata().status for k in ("m1", "m2", "w1")] == ["cancelled", "cancelled", "waiting"]
    refused = queue.bulk("requeue", status="waiting")  # each as its own call: not dead
    assert refused.successful == [] and [f.key for f in refused.failed] == ["w1"]
    assert isinstance(refused.failed[0].error, NotDeadError)
    assert queue["w1"].metadata().is_waiting()


def test_iteration_visits_every_task_once_over_many_pages(queue: perfectqueue.Queue) -> None:
    keys = [f"task-{i:04d}" for i in range(230)]
    result = queue.submit_many(
        {"key": k, "type": "even" if i % 2 == 0 else "odd"} for i, k in enumerate(keys)
    )
    assert not result.failed
    listed = [t.key for t in queue]
    assert sorted(listed) == keys and len(listed) == len(set(listed))
    iterator = iter(queue)
    assert next(iterator).key == keys[0]
    queue.submit("zzz-later", "odd")  # lazy: a later page is fetched only when it is reached
    assert [t.key for t in iterator] == [*keys[1:], "zzz-later"]
    odd = [t.key for t in queue.tasks(type="odd", page_size=7)]
    assert odd == [*keys[1::2], "zzz-later"]


def test_iteration_filters_by_status_and_user(queue: perfectqueue.Queue) -> None:
    queue.submit_many(
        [{"key": "a", "type": "t", "user": "u1"}, {"key": "b", "type": "t"}, {"key": "c", "type": "t"}]
    )
    running = queue.poll_multi(max=2)
    assert len(running) == 2
    running[0].finish()
    by_status = {s: sorted(t.key for t in queue.tasks(status=s)) for s in ("waiting", "running", "finished")}
    assert sum(len(v) for v in by_status.values()) == 3
    assert by_status["finished"] == [running[0].key] and by_status["running"] == [running[1].key]
    assert [t.key for t in queue.tasks(user="u1")] == ["a"]


def test_stats_counts_waiting_running_and_finished(queue: perfectqueue.Queue, config: dict[str, Any]) -> None:
    queue.submit_many([{"key": f"k{i}", "type": "t"} for i in range(4)])
    tasks = queue.poll_multi(max=2)
    tasks[0].finish()
    stats = queue.stats()
    assert (stats.waiting, stats.running, stats.finished) == (2, 1, 1)
    assert stats.name == config.get("queue", config["table"])


SPECIAL_KEYS = [".", "..", "a/b", "a/../b", "./x", "q?x=1&y#frag", "100%", "%2F", " lead and trail "]
SPECIAL_KEYS += ["ünïcödé-タスク", "back\\slash"]


def test_keys_that_need_care_in_urls_and_sql_work_everywhere(queue: perfectqueue.Queue) -> None:
    for key in SPECIAL_KEYS:
        queue.submit(key, "t", {"k": key})
    for key in SPECIAL_KEYS:
        meta = queue[key].metadata()
        assert (meta.key, meta.data) == (key, {"k": key})
    polled = queue.poll_multi(max=len(SPECIAL_KEYS))
    assert sorted(t.key for t in polled) == sorted(SPECIAL_KEYS)
    for task in polled:
        task.heartbeat()
        task.finish()
    assert sorted(t.key for t in queue.tasks(status="finished")) == sorted(SPECIAL_KEYS)
    queue.submit("..x", "t")
    queue["..x"].force_finish()


@DIRECT
def test_rdb_compat_takes_the_seed_settings(target: Target, config: dict[str, Any]) -> None:
    with perfectqueue.open({**config, "alive_time": 40, "retry_wait": 0}) as queue:
        queue.submit("k", "t")
        task = queue.poll()
        assert task is not None
        assert 30 <= next_time(task.metadata()) - int(time.time()) <= 50
        task.retry()  # retry_wait 0: at once
        again = queue.poll()
        assert again is not None and again.key == "k"


# -- error mapping -----------------------------------------------------------------------------


def test_invalid_requests_are_invalid_and_change_nothing(queue: perfectqueue.Queue) -> None:
    with pytest.raises(InvalidError):
        queue.submit("k", "t", {"type": "reserved"})
    with pytest.raises(InvalidError):
        queue.submit("", "t")
    with pytest.raises(InvalidError):
        queue.poll_multi(max=0)
    for not_json in ({"n": float("nan")}, {"when": datetime.now(UTC)}, {"s": "\ud800"}):
        with pytest.raises(InvalidError):
            queue.submit("k", "t", not_json)
    assert list(queue) == []
    queue.submit("k", "t", {"v": 1})
    task = queue.poll()
    assert task is not None
    with pytest.raises(InvalidError):
        task.update_data({"v": float("inf")})
    assert task.data == queue["k"].metadata().data == {"v": 1}


@ON_THE_SERVICE
def test_unknown_queue_is_unknown_queue(target: Target) -> None:
    with perfectqueue.open({"url": target.base, "queue": "not-declared"}) as queue:
        for operation in (queue.stats, queue.poll, lambda: queue.submit("k", "t"), lambda: list(queue)):
            with pytest.raises(UnknownQueueError):
                operation()


@DIRECT
def test_rdb_compat_on_a_missing_table_is_a_queue_error(target: Target) -> None:
    missing = {"type": "rdb_compat", "url": target.db_url, "table": "t_no_such_table"}
    with perfectqueue.open(missing) as queue, pytest.raises(UnavailableError):
        queue.submit("k", "t")


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "bogus", "url": "http://127.0.0.1:1"},
        {"type": "rdb_compat", "url": "sqlite:///x.sqlite3"},
        {"type": "rdb_compat", "table": "t"},
        {"url": "mysql://root@127.0.0.1/test", "queue": "q"},
        {"type": "http", "url": "ftp://example.com"},
        {"url": "http://127.0.0.1:1", "retries": -1},
        {"url": "http://127.0.0.1:1", "timeout": 0},
    ],
)
def test_bad_configuration_is_a_config_error(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        perfectqueue.open(bad)
    with pytest.raises(ConfigError):
        perfectqueue.open_async(bad)
    assert issubclass(ConfigError, PerfectQueueError)


# -- the http SDK needs httpx alone ------------------------------------------------------------

IMPORT_CHECK = textwrap.dedent(
    """
    import sys
    import perfectqueue
    with perfectqueue.open({"url": sys.argv[1], "queue": sys.argv[2]}) as q:
        q.submit("import-check", "t", {"n": 1})
        task = q.poll()
        assert task is not None and task.key == "import-check", task
        task.finish()
    heavy = ["fastapi", "starlette", "sqlalchemy", "pymysql", "uvicorn", "pydantic", "yaml",
             "perfectqueue.service"]
    print(",".join(name for name in heavy if name in sys.modules) or "none")
    """
)


@pytest.mark.parametrize("target", ["http-sqlite"], indirect=True)
def test_the_http_sdk_never_imports_the_service_or_a_database_driver(config: dict[str, Any]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_CHECK, config["url"], config["queue"]],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_environ(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "none"
