"""Time limits (``task_time_limit``, a route's ``time_limit``), with real worker processes.

Each processor kind stops a hung handler: a forked child is ended and replaced, a thread is
interrupted (or, blocked in C code, given up and replaced), an asyncio handler is cancelled. The
task is retried with ``last_error`` "timed out after N s", its attempt counted, its lease no longer
extended; the next task is handled; a handler under its limit is untouched.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from servers import free_port
from test_worker_harness import (
    WORKER_MODULE,
    children_of,
    events,
    wait_for,
    worker_process,
    write_worker_config,
)
from test_worker_metrics import scrape

import perfectqueue
from perfectqueue.errors import ConfigError
from perfectqueue.worker import Base, Dispatch

pytestmark = pytest.mark.slow

LIMITED = (
    WORKER_MODULE
    + '''
import asyncio


class Hang(Base):
    """Sleeps an hour: a C call, which no exception raised into the thread interrupts."""

    def run(self):
        note(self.task, "start")
        time.sleep(3600)
        note(self.task, "end")


class Spin(Base):
    """A busy loop of Python code."""

    def run(self):
        note(self.task, "start")
        try:
            while True:
                pass
        finally:
            note(self.task, "interrupted")


class Doze(Base):
    async def run(self):
        note(self.task, "start")
        try:
            await asyncio.sleep(self.task.data.get("sleep", 3600))
        except asyncio.CancelledError:
            note(self.task, "interrupted")
            raise
        note(self.task, "end")


class Brief(Base):
    def run(self):
        note(self.task, "start")
        time.sleep(self.task.data.get("sleep", 0))
        note(self.task, "end")


class Limited(Dispatch):
    pass


Limited.route("hang", Hang)
Limited.route("spin", Spin, time_limit=1)
Limited.route("doze", Doze, time_limit=1)
Limited.route("brief", Brief)
Limited.route("free", Brief, time_limit=0)
'''
)
LIMIT = 1.5
"""The worker's task_time_limit in these tests (the hang and brief routes have no limit of their own)."""


def limited_worker(tmp_path: Path, service: str, **settings: Any) -> tuple[Path, Path]:
    """The worker module and configuration: task_time_limit 1.5 s, a retried task back in 600 s."""
    (tmp_path / "pqlimits.py").write_text(LIMITED)
    defaults = {"task_time_limit": LIMIT, "retry_wait": 600, "alive_time": 30, "task_heartbeat_interval": 0.2}
    config = write_worker_config(tmp_path / "worker.yaml", service, **{**defaults, **settings})
    return config, tmp_path / "worker.log"


def timed_out(queue: perfectqueue.Queue, key: str) -> perfectqueue.TaskMetadata | None:
    """The task's metadata once it was retried (attempt counted, error recorded), else None."""
    meta = queue[key].metadata()
    return meta if meta.last_error is not None else None


def assert_timed_out(meta: perfectqueue.TaskMetadata, limit: float) -> None:
    assert meta.last_error == f"TimeLimitExceeded: timed out after {limit:g} s"
    assert meta.attempts == 1
    assert meta.is_scheduled()  # retried (after retry_wait), no longer leased
    assert meta.lease_expires_at is None


def test_a_forked_child_over_its_limit_is_ended_and_replaced_and_its_task_retried(
    tmp_path: Path, service: str
) -> None:
    book = tmp_path / "ledger"
    port = free_port()
    config, log = limited_worker(tmp_path, service, alive_time=300, metrics_port=port)
    with worker_process(tmp_path, config, log, app="pqlimits:Limited") as proc, open_queue(service) as queue:
        queue.submit("h", "hang", {"ledger": str(book)})
        hung = int(wait_for(lambda: events(book, "start", "h"), what="the handler to start")[0][2])
        meta = wait_for(lambda: timed_out(queue, "h"), timeout=10, what="the time-out's retry")
        assert_timed_out(meta, LIMIT)  # within the limit, not the 300 s lease
        wait_for(lambda: hung not in children_of(proc.pid), timeout=10, what="the hung child to end")
        queue.submit("b", "brief", {"ledger": str(book)})
        done = wait_for(lambda: events(book, "end", "b"), timeout=20, what="the next task")[0]
        assert int(done[2]) != hung and int(done[2]) in children_of(proc.pid)  # the replacement
        wait_for(lambda: queue["b"].metadata().is_finished(), what="the next task to be finished")
        assert not events(book, "end", "h")
        timeouts = ("perfectqueue_worker_task_timeouts_total", ())
        wait_for(lambda: scrape(f"http://127.0.0.1:{port}/metrics").get(timeouts) == 1, what="the count")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    assert "event=timeout id=h type=hang time_limit=1.500" in log.read_text()


def test_a_thread_over_its_limit_is_interrupted_and_a_blocked_one_replaced(
    tmp_path: Path, service: str
) -> None:
    book = tmp_path / "ledger"
    config, log = limited_worker(tmp_path, service, processor_type="thread")
    with worker_process(tmp_path, config, log, app="pqlimits:Limited"), open_queue(service) as queue:
        queue.submit("s", "spin", {"ledger": str(book)})  # Python code: interrupted
        assert_timed_out(wait_for(lambda: timed_out(queue, "s"), timeout=10, what="the retry"), 1)
        wait_for(lambda: events(book, "interrupted", "s"), timeout=5, what="the loop to be interrupted")
        queue.submit("h", "hang", {"ledger": str(book)})  # in C code: the thread is given up
        assert_timed_out(wait_for(lambda: timed_out(queue, "h"), timeout=10, what="the retry"), LIMIT)
        queue.submit("b", "brief", {"ledger": str(book)})
        wait_for(lambda: events(book, "end", "b"), timeout=20, what="the next task, in a new thread")
        wait_for(lambda: queue["b"].metadata().is_finished(), what="the next task to be finished")
        assert not events(book, "end", "h")
    text = log.read_text()
    assert "event=timeout id=s type=spin" in text and "event=timeout id=h type=hang" in text
    assert "event=timeout_ignored id=h" in text and "event=timeout_ignored id=s" not in text
    assert text.count("event=child_start") == 2  # the blocked thread's processor was replaced


def test_an_asyncio_handler_over_its_limit_is_cancelled_and_the_others_run_on(
    tmp_path: Path, service: str
) -> None:
    book = tmp_path / "ledger"
    config, log = limited_worker(tmp_path, service, processor_type="asyncio", concurrency=2)
    with worker_process(tmp_path, config, log, app="pqlimits:Limited"), open_queue(service) as queue:
        queue.submit("d", "doze", {"ledger": str(book)})
        child = int(wait_for(lambda: events(book, "start", "d"), what="the handler to start")[0][2])
        queue.submit("b", "brief", {"ledger": str(book), "sleep": 0.5})  # beside it, under its limit
        assert_timed_out(wait_for(lambda: timed_out(queue, "d"), timeout=10, what="the retry"), 1)
        wait_for(lambda: events(book, "interrupted", "d"), timeout=5, what="the handler to be cancelled")
        wait_for(lambda: queue["b"].metadata().is_finished(), what="the other task to be finished")
        queue.submit("n", "brief", {"ledger": str(book)})
        done = wait_for(lambda: events(book, "end", "n"), timeout=20, what="the next task")[0]
        assert int(done[2]) == child  # the same process: cancelling needs no replacement
    assert "event=timeout id=d type=doze" in log.read_text()


def test_handlers_under_their_limit_or_without_one_are_untouched(tmp_path: Path, service: str) -> None:
    book = tmp_path / "ledger"
    config, log = limited_worker(tmp_path, service, alive_time=2)
    with worker_process(tmp_path, config, log, app="pqlimits:Limited"), open_queue(service) as queue:
        queue.submit("under", "brief", {"ledger": str(book), "sleep": 0.8})
        queue.submit("free", "free", {"ledger": str(book), "sleep": 2 * LIMIT + 1})  # time_limit=0
        wait_for(lambda: queue["free"].metadata().is_finished(), timeout=20, what="the unlimited task")
        for key in ("under", "free"):
            meta = queue[key].metadata()
            assert meta.is_finished() and meta.last_error is None and meta.attempts == 1
            assert len(events(book, "start", key)) == 1  # heart-beaten past alive_time, never redelivered
    assert "event=timeout" not in log.read_text()


class Handler(Base):
    time_limit = 7


class Nested(Dispatch):
    time_limit = 9


Nested.route("inner", Handler)


class Routed(Dispatch):
    pass


Routed.route("own", Handler)
Routed.route("route", Handler, time_limit=3)
Routed.route("none", Handler, time_limit=0)
Routed.route("plain", Base)
Routed.route("nested", Nested)
Routed.route("missing", "NoSuchHandler")


@pytest.mark.parametrize(
    ("task_type", "default", "expected"),
    [
        ("route", 5, 3),  # the route's
        ("none", 5, None),  # the route says none
        ("own", 5, 7),  # the handler class's
        ("plain", 5, 5),  # the worker's
        ("plain", None, None),
        ("inner", 5, 5),  # no route of Routed: the worker's
        ("nested", 5, 9),  # a dispatch routed to: its own class limit
        ("missing", 5, 5),  # a handler that cannot be found: the worker's (run() retries it)
    ],
)
def test_the_time_limit_is_the_routes_else_the_handlers_else_the_workers(
    task_type: str, default: float | None, expected: float | None
) -> None:
    assert Routed.time_limit_for(task_type, default) == expected


@pytest.mark.parametrize("limit", [-1, True, "1", float("nan")])
def test_a_bad_route_time_limit_is_refused(limit: Any) -> None:
    with pytest.raises(ConfigError, match="time_limit"):
        Routed.route("bad", Handler, time_limit=limit)


def open_queue(base: str) -> perfectqueue.Queue:
    return perfectqueue.open({"url": base, "queue": "q"})
