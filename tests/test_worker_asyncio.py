"""The asyncio processor (``processor_type: asyncio``): ``concurrency`` async handlers at once on
one event loop, cancels as asyncio cancellations, and async handlers in a plain processor too.
Driven in this process over the direct backend on each database; stops are recorded signals."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sdk_support import wait_for

import perfectqueue
from perfectqueue.service.store import QueueStore, TaskStatus
from perfectqueue.worker import Base, Dispatch, Signals, WorkerConfig
from perfectqueue.worker.aprocessor import AsyncProcessor
from perfectqueue.worker.processor import Processor

state: dict[str, Any] = {}


class Nap(Base):
    async def run(self) -> None:  # type: ignore[override]
        state["running"] += 1
        state["most"] = max(state["most"], state["running"])
        try:
            await asyncio.sleep(self.task.data.get("sleep", 0.3))
        except asyncio.CancelledError:
            state["cancelled"].append(self.task.key)
            raise
        finally:
            state["running"] -= 1
        if self.task.data.get("fail"):
            raise ValueError("no luck")


class App(Dispatch):
    pass


App.route("nap", Nap)


@pytest.fixture(autouse=True)
def fresh_state() -> None:
    state.update(running=0, most=0, cancelled=[])


@pytest.fixture
def backend(db_url: str, table_name: str, store: QueueStore) -> dict[str, Any]:
    return {"type": "rdb_compat", "url": db_url, "table": table_name}


@pytest.fixture
def queue(backend: dict[str, Any]) -> Iterator[perfectqueue.Queue]:
    with perfectqueue.open(backend) as opened:
        yield opened


def started(
    kind: type[Processor], backend: dict[str, Any], **settings: Any
) -> tuple[Signals, threading.Thread]:
    raw = {**backend, "poll_interval": 0.1, "task_heartbeat_interval": 0.2, **settings}
    signals = Signals()
    processor = kind(
        App,
        WorkerConfig.from_mapping(raw),
        perfectqueue.open,
        signals=signals,
        child_heartbeat=lambda: None,
        on_immediate_stop=lambda: None,
    )
    thread = threading.Thread(target=processor.run, daemon=True)
    thread.start()
    return signals, thread


def stopped(signals: Signals, thread: threading.Thread) -> None:
    signals.record(signal.SIGTERM)
    thread.join(timeout=20)
    assert not thread.is_alive()


def test_concurrency_handlers_run_at_once_and_every_task_is_finished(
    backend: dict[str, Any], queue: perfectqueue.Queue
) -> None:
    queue.submit_many([{"key": f"t{i:02}", "type": "nap", "data": {"sleep": 0.4}} for i in range(30)])
    began = time.monotonic()
    signals, thread = started(AsyncProcessor, backend, processor_type="asyncio", concurrency=10)
    try:
        wait_for(lambda: queue.stats().finished == 30, timeout=30)
    finally:
        stopped(signals, thread)
    assert state["most"] == 10  # never more than concurrency, and that many at once
    assert time.monotonic() - began < 30 * 0.4 / 2  # far from one at a time (12 s)


def test_a_cancel_cancels_the_running_handler_and_the_task_ends_cancelled(
    backend: dict[str, Any], queue: perfectqueue.Queue, store: QueueStore
) -> None:
    queue.submit("long", "nap", {"sleep": 30})
    queue.submit("short", "nap", {"sleep": 0.2})
    signals, thread = started(AsyncProcessor, backend, processor_type="asyncio", concurrency=5)
    try:
        wait_for(lambda: state["running"] == 2 or queue["short"].metadata().is_finished(), timeout=10)
        queue["long"].cancel()
        wait_for(lambda: store.get("long").status is TaskStatus.CANCELLED, timeout=10)
        wait_for(lambda: queue["short"].metadata().is_finished(), timeout=10)
    finally:
        stopped(signals, thread)
    assert state["cancelled"] == ["long"]


def test_an_async_handler_runs_in_a_plain_processor_and_its_error_retries_the_task(
    backend: dict[str, Any], queue: perfectqueue.Queue, store: QueueStore
) -> None:
    queue.submit("ok", "nap", {"sleep": 0.01})
    queue.submit("bad", "nap", {"sleep": 0.01, "fail": True})
    signals, thread = started(Processor, backend, task_prefetch=1, retry_wait=600)
    try:
        wait_for(lambda: queue["ok"].metadata().is_finished(), timeout=10)
        wait_for(lambda: (store.get("bad").last_error or "").startswith("ValueError: no luck"), timeout=10)
    finally:
        stopped(signals, thread)
    assert state["most"] == 1


def test_a_prefetch_beyond_what_a_poll_may_ask_for_polls_the_most_it_may(service: str) -> None:
    """Through the service, which refuses a poll for more than 100 tasks."""
    backend = {"url": service, "queue": "q"}
    with perfectqueue.open(backend) as queue:
        queue.submit_many([{"key": f"t{i:03}", "type": "nap", "data": {"sleep": 0}} for i in range(120)])
        signals, thread = started(Processor, backend, task_prefetch=150)
        try:
            wait_for(lambda: queue.stats().finished == 120, timeout=30)
        finally:
            stopped(signals, thread)
